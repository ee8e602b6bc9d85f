"""Fetching one release's zip: its sources in order under the region's jurisdiction policy,
the fetch, the check of what came, and the record of where it came from."""

from __future__ import annotations

import zipfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TypeVar

import orjson

from connectors.origin import UNREACHABLE_RETRY_AFTER, first_delivering
from schemas.errors import (
    ArtifactMismatchEverywhereError,
    ArtifactUnreachableError,
    WrongPackageError,
)
from schemas.events import Artifact
from streams.artifacts import ReplicaRegistry, Source
from streams.policy import JurisdictionPolicy, Purpose, peer_of_position

_T = TypeVar("_T")


def artifact_sources(
    artifact: Artifact, policy: JurisdictionPolicy, replicas: ReplicaRegistry, position: str = ""
) -> tuple[list[Source], list[Source]]:
    """Where to fetch ``artifact`` from, in order, and the sources the region's
    jurisdiction policy withholds. AspireCloud's order: the canonical origin first,
    then regions that announced a copy, then other sources (peer networks' origins).

    ``position`` is where the release sits in the log: one read from a peer network
    (``peer/NAME/…``) has its signed origin at that peer, ``peer:NAME``, in the
    jurisdiction declared for it (``JurisdictionPolicy.origin_of``)."""
    peer = peer_of_position(position)
    every = [
        Source(
            artifact.origin_url,
            "origin" if peer is None else f"peer:{peer}",
            policy.origin_of(position),
        ),
        *replicas.fetch_sources(artifact.sha256),
    ]
    allowed = [source for source in every if policy.allows(Purpose.FETCH, source.jurisdiction)]
    withheld = [source for source in every if not policy.allows(Purpose.FETCH, source.jurisdiction)]
    return allowed, withheld


async def fetch_from_allowed(
    artifact: Artifact,
    policy: JurisdictionPolicy,
    replicas: ReplicaRegistry,
    attempt: Callable[[str], Awaitable[_T]],
    *,
    position: str = "",
) -> tuple[_T, Source]:
    """``attempt`` (fetch into a file, or stream into the store) the first allowed source
    that delivers ``artifact``.

    A sovereign region never fetches from a source outside its jurisdictions: when
    none of the allowed ones delivers, the release is parked (``ArtifactUnreachableError``)
    with the withheld sources named, never refused, and never fetched from outside.
    ``position`` is the release's in the log (see ``artifact_sources``).
    Returns what the delivering attempt returned and its source. Raises what
    ``connectors.origin.first_delivering`` raises.
    """
    sources, withheld = artifact_sources(artifact, policy, replicas, position)
    because = withheld_reason(policy, withheld) if withheld else ""
    if not sources and withheld:
        raise ArtifactUnreachableError(
            f"no source in an allowed jurisdiction holds the artifact sha256 "
            f"{artifact.sha256} ({artifact.size} bytes, signed origin "
            f"{artifact.origin_url}): {because}",
            url=artifact.origin_url,
            attempts=(),
            retry_after=UNREACHABLE_RETRY_AFTER,
        )
    try:
        fetched, url = await first_delivering([s.url for s in sources], artifact, attempt)
    except ArtifactMismatchEverywhereError as exc:
        if not withheld:
            raise
        # Other bytes from every allowed source: a withheld one may hold the signed
        # ones, so this is not "nobody has the release"; it waits, as unreachable.
        raise ArtifactUnreachableError(
            f"{exc}; {because}",
            url=artifact.origin_url,
            attempts=exc.attempts,
            retry_after=UNREACHABLE_RETRY_AFTER,
        ) from exc
    except ArtifactUnreachableError as exc:
        if not withheld:
            raise
        raise ArtifactUnreachableError(
            f"{exc}; {because}", url=exc.url, attempts=exc.attempts, retry_after=exc.retry_after
        ) from exc
    return fetched, next(s for s in sources if s.url == url)


def withheld_reason(policy: JurisdictionPolicy, withheld: Sequence[Source]) -> str:
    """Why a sovereign region did not fetch from ``withheld``, for a parked fetch's record."""
    named = ", ".join(
        f"{source.holder} ({source.jurisdiction or 'jurisdiction not declared'})"
        for source in withheld
    )
    return (
        f"the region fetches from {policy.describe(Purpose.FETCH)} only, so it does not "
        f"fetch from {named}; parked until a source there has it"
    )


def check_top_directory(path: Path | IO[bytes], package: str) -> None:
    """A release zip holds one top directory named after the project (``token/`` for drupal/token).

    ``path`` is the zip's file, or a file-like of it (``StreamTail``: only the names are
    read, from the central directory at the end). Raises ``WrongPackageError`` when it
    holds another project's files (wrong software under a right name) or is not a zip.
    """
    project = package.split("/", 1)[1]
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise WrongPackageError(f"the artifact of {package} is not a zip file: {exc}") from exc
    tops = {name.split("/", 1)[0] for name in names if name.strip("/")}
    if tops != {project} or not any(name.startswith(f"{project}/") for name in names):
        raise WrongPackageError(
            f"the artifact of {package} holds {sorted(tops)[:3]}, not one {project}/ "
            "directory: it is another project's release"
        )


def provenance(source: Source, sha256: str, region: str, at: datetime) -> bytes:
    """Where a region's copy of ``sha256`` came from: who held it (``origin``, a region, a
    peer's label), their declared jurisdiction, the URL, when. A sovereign region's proof."""
    return orjson.dumps(
        {
            "sha256": sha256,
            "region": region,
            "from": source.holder,
            "jurisdiction": source.jurisdiction,
            "url": source.url,
            "fetched_at": at.isoformat(),
        },
        option=orjson.OPT_SORT_KEYS,
    )
