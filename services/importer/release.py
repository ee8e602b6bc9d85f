"""A candidate and its zip's digest into a release event, checked as every node will check it."""

from __future__ import annotations

from datetime import datetime

from connectors.composer_repo import ArtifactDigest
from schemas.errors import RejectedError
from schemas.events import Artifact, ReleasePublished, check_consistency, utc_now
from services.importer.plan import Candidate, Skipped, SkipReason

__all__ = ["check_digest", "release_event"]


def check_digest(
    candidate: Candidate, digest: ArtifactDigest, reason: SkipReason
) -> Skipped | None:
    """``None`` if the zip's sha1 is the p2 ``dist.shasum`` (or the entry had none)."""
    if candidate.sha1 is None or digest.sha1 == candidate.sha1:
        return None
    return candidate.skipped(
        reason,
        f"{candidate.origin_url}: sha1 {digest.sha1}, the p2 dist.shasum is {candidate.sha1}",
    )


def release_event(
    candidate: Candidate,
    digest: ArtifactDigest,
    *,
    sequence: int,
    published_at: datetime | None = None,
) -> ReleasePublished | Skipped:
    """The release event of a candidate whose zip has ``digest``.

    ``published_at`` defaults to the release's own time (``extra.drupal.datestamp``),
    else now. An entry without ``dist.shasum`` gets the zip's sha1 there. The
    event is checked as a node will (``check_consistency``); a refusal is
    returned as a ``Skipped``. Never raises.
    """
    composer = candidate.composer
    if composer["dist"].get("shasum") != digest.sha1:
        composer = {**composer, "dist": {**composer["dist"], "shasum": digest.sha1}}
    if candidate.rebuild_of is not None:
        # A new build keeps the source's entry but for its reference, which names the build:
        # with the reference unchanged, `composer update` would keep the old build installed.
        composer = {**composer, "dist": {**composer["dist"], "reference": digest.sha1}}
    try:
        event = ReleasePublished(
            package=candidate.package,
            drupal_version=candidate.drupal_version,
            version=candidate.version,
            published_at=published_at or candidate.published_at or utc_now(),
            artifact=Artifact(
                sha256=digest.sha256,
                sha1=digest.sha1,
                size=digest.size,
                origin_url=candidate.origin_url,
            ),
            composer=composer,
            sequence=sequence,
            rebuild_of=candidate.rebuild_of,
        )
        check_consistency(event)
    except RejectedError as exc:
        return candidate.skipped(SkipReason.MALFORMED_ENTRY, str(exc))
    return event
