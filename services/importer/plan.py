"""Planning an import, pure: a package's p2 entries sorted into release candidates and skips.

``plan_package`` says, entry by entry, what may be published (``Candidate``) and why the rest
is not (``Skipped``, by ``SkipReason``); it reads no network and never raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from connectors.kafka_reading import PublishedBuild
from schemas import composer as composer_documents
from schemas.errors import InvalidVersionError, MalformedEventError, UnsafeNameError
from schemas.events import HEX_SHA1, check_version_text
from schemas.names import check_package_name
from schemas.version_entries import with_dist_url
from schemas.versions import drupal_to_composer, is_dev, normalize_version, version_sort_key

__all__ = [
    "Candidate",
    "PackagePlan",
    "SkipReason",
    "Skipped",
    "check_package",
    "plan_package",
]


class SkipReason(StrEnum):
    """Why a release (or, for the ``package`` ones, a whole package) was not published."""

    ALREADY_PUBLISHED = "already published"
    INVALID_VERSION = "invalid version"
    UNSAFE_NAME = "unsafe name"
    NO_DIST = "no dist zip"
    OTHER_PACKAGE = "metadata of another package"
    DUPLICATE_VERSION = "duplicate version"
    MALFORMED_ENTRY = "malformed entry"
    CHECKSUMS_MISMATCH = "sha1 mismatch in checksums file"
    SHA1_MISMATCH = "sha1 mismatch at origin"
    WRONG_ZIP = "zip of another project"
    TOO_LARGE = "zip too large"
    OVERSIZED_EVENT = "event over the contract's size"
    ORIGIN_UNREACHABLE = "origin unreachable"
    PACKAGE_NOT_FOUND = "package not in repository"
    METADATA_UNREACHABLE = "metadata unreachable"
    MALFORMED_METADATA = "malformed metadata"

    @property
    def per_package(self) -> bool:
        """Whether it counts packages (the whole package was skipped) rather than releases."""
        return self in _PACKAGE_REASONS


_PACKAGE_REASONS = frozenset(
    {
        SkipReason.PACKAGE_NOT_FOUND,
        SkipReason.METADATA_UNREACHABLE,
        SkipReason.MALFORMED_METADATA,
    }
)


@dataclass(frozen=True)
class Skipped:
    """A release (``version``) or a whole package (``version`` None) that was not published."""

    package: str
    version: str | None
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class Candidate:
    """A version entry that may be published once its zip's sha256 and size are known.

    ``composer`` is the whole expanded entry without ``dist.url`` (each node
    sets its own); ``sha1`` is the entry's ``dist.shasum``, ``None`` if it
    had none; ``version_normalized`` is Composer's normalization of ``version``,
    worked out once for the plan's duplicate check and order.
    """

    package: str
    version: str
    drupal_version: str
    origin_url: str
    sha1: str | None
    composer: dict[str, Any]
    published_at: datetime | None
    version_normalized: str
    #: A dev version the topic has with another build: the sha256 of that build.
    rebuild_of: str | None = None

    def skipped(self, reason: SkipReason, detail: str) -> Skipped:
        """This candidate's release, not published for ``reason``."""
        return Skipped(self.package, self.version, reason, detail)


@dataclass(frozen=True)
class PackagePlan:
    """What can be published of one package, oldest version first, and what is skipped."""

    package: str
    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...]


def check_package(package: str) -> Skipped | None:
    """``None`` if ``package`` is a name events and nodes' p2 paths accept, else why not."""
    try:
        check_package_name(package)
    except MalformedEventError as exc:
        return Skipped(package, None, SkipReason.UNSAFE_NAME, str(exc))
    return None


def plan_package(
    package: str,
    documents: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]],
    *,
    published: Set[str] = frozenset(),
    builds: Mapping[str, PublishedBuild] | None = None,
) -> PackagePlan:
    """Sort a package's p2 entries (expanded, per package name) into candidates and skips.

    ``documents`` are what ``connectors.composer_repo.parse_p2`` returns for
    ``p2/<package>.json`` and ``~dev.json``; ``published`` holds the versions
    of ``package`` the releases topic already has, ``builds`` the build the topic names
    for each (a dev version whose zip upstream has another ``dist.shasum`` is a candidate
    again: a new build naming the published one in ``rebuild_of``). Candidates come oldest
    first (Composer's order), so that their sequences increase with the
    version. An entry is skipped when it names another package, is already
    published, has no Drupal.org version that maps to its ``version``, has no
    zip dist with an http(s) URL, repeats a version, has a malformed
    ``dist.shasum`` or would make a node's p2 document unservable. Never raises.
    """
    refused = check_package(package)
    if refused is not None:
        return PackagePlan(package, (), (refused,))
    published_normalized = {_normalized_or_none(version): version for version in published}
    candidates: dict[str, Candidate] = {}
    seen: dict[str, str] = {}  # version_normalized -> version, among this plan's candidates
    skipped: list[Skipped] = []
    for document in documents:
        for name, entries in document.items():
            for entry in entries:
                outcome = _candidate(package, name, entry, published, builds or {})
                if isinstance(outcome, Skipped):
                    skipped.append(outcome)
                    continue
                if outcome.version in candidates:
                    skipped.append(outcome.skipped(SkipReason.DUPLICATE_VERSION, "listed twice"))
                    continue
                normalized = outcome.version_normalized
                same = seen.get(normalized) or published_normalized.get(normalized)
                if same is not None and not (outcome.rebuild_of and same == outcome.version):
                    skipped.append(
                        outcome.skipped(
                            SkipReason.DUPLICATE_VERSION,
                            f"the same version to Composer as {same} ({normalized})",
                        )
                    )
                    continue
                seen[normalized] = outcome.version
                candidates[outcome.version] = outcome
    servable, unservable = _servable(package, list(candidates.values()))
    ordered = sorted(servable, key=lambda c: version_sort_key(c.version_normalized))
    return PackagePlan(package, tuple(ordered), (*skipped, *unservable))


def _servable(package: str, candidates: list[Candidate]) -> tuple[list[Candidate], list[Skipped]]:
    """Split off the entries a node could not render: one would break the package's whole p2.

    Each entry is checked as every node's ``render_p2`` will check it, with its dist URL set
    (``check_servable_entry``), without rendering a document. The candidates have distinct
    normalized versions and no value ``"__unset"`` (plan_package and _candidate skip the
    others), so the package's documents render exactly when each of its entries does.
    """
    servable: list[Candidate] = []
    refused: list[Skipped] = []
    for candidate in candidates:
        try:
            entry = with_dist_url(candidate.composer, candidate.origin_url)
            composer_documents.check_servable_entry(package, entry)
        except (MalformedEventError, InvalidVersionError) as exc:
            refused.append(candidate.skipped(SkipReason.MALFORMED_ENTRY, str(exc)))
        else:
            servable.append(candidate)
    return servable, refused


def _candidate(
    package: str,
    listed_as: str,
    entry: Mapping[str, Any],
    published: Set[str],
    builds: Mapping[str, PublishedBuild],
) -> Candidate | Skipped:
    """One entry's candidate, or why it is skipped; the checks run from cheap to thorough."""
    version = entry.get("version")
    shown = version if isinstance(version, str) else None
    name = entry.get("name", listed_as)
    if listed_as != package or name != package:
        other = name if name != package else listed_as
        return Skipped(
            package,
            shown,
            SkipReason.OTHER_PACKAGE,
            f"p2 document of {package} holds an entry of {other!r}",
        )
    if shown is None:
        return Skipped(package, None, SkipReason.INVALID_VERSION, "entry has no string 'version'")
    rebuild_of = None
    if shown in published:
        rebuild_of = _rebuilt(shown, entry, builds.get(shown))
        if rebuild_of is None:
            return Skipped(package, shown, SkipReason.ALREADY_PUBLISHED, "on the releases topic")
    try:
        check_version_text(shown)
    except UnsafeNameError as exc:
        return Skipped(package, shown, SkipReason.UNSAFE_NAME, str(exc))
    return _release_candidate(package, shown, entry, rebuild_of)


def _release_candidate(
    package: str, version: str, entry: Mapping[str, Any], rebuild_of: str | None
) -> Candidate | Skipped:
    """The candidate of an entry whose name and ``version`` passed (``_candidate``), or why it
    is skipped: its dist, its versions, its ``dist.shasum`` and its values checked in turn."""
    zip_dist = _zip_dist(package, version, entry)
    if isinstance(zip_dist, Skipped):
        return zip_dist
    dist, url = zip_dist
    versions = _versions(package, version, entry, dist)
    if isinstance(versions, Skipped):
        return versions
    drupal_version, normalized = versions
    sha1 = _dist_sha1(package, version, dist)
    if isinstance(sha1, Skipped):
        return sha1

    unset = sorted(key for key, value in entry.items() if value == composer_documents.UNSET)
    if unset:
        # composer/2.0 reads this string as "key removed": a node could not minify the entry.
        return Skipped(
            package,
            version,
            SkipReason.MALFORMED_ENTRY,
            f"{', '.join(unset)} hold(s) the string {composer_documents.UNSET!r}",
        )
    # A shallow copy: nested values stay shared with the other entries of the document
    # (expand shares them too) and nothing mutates them; deepcopy would double the CPU cost.
    composer = dict(entry)
    composer["name"] = package
    composer["dist"] = {key: value for key, value in dist.items() if key != "url"}
    return Candidate(
        package=package,
        version=version,
        drupal_version=drupal_version,
        origin_url=url,
        sha1=sha1,
        composer=composer,
        published_at=_release_time(entry),
        version_normalized=normalized,
        rebuild_of=rebuild_of,
    )


def _zip_dist(
    package: str, version: str, entry: Mapping[str, Any]
) -> tuple[Mapping[str, Any], str] | Skipped:
    """The entry's dist and its URL if it is a zip at an http(s) URL, else why it is skipped."""
    dist = entry.get("dist")
    if not isinstance(dist, Mapping):
        return Skipped(package, version, SkipReason.NO_DIST, "entry has no dist (source only)")
    url = dist.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return Skipped(package, version, SkipReason.NO_DIST, f"dist.url {url!r} is not http(s)")
    if dist.get("type") != "zip":
        return Skipped(
            package, version, SkipReason.NO_DIST, f"dist.type is {dist.get('type')!r}, not zip"
        )
    return dist, url


def _versions(
    package: str, version: str, entry: Mapping[str, Any], dist: Mapping[str, Any]
) -> tuple[str, str] | Skipped:
    """The entry's Drupal.org version and Composer's normalization of ``version``, when the
    one maps to the other, else why it is skipped."""
    drupal_version = _drupal_version(entry, dist)
    if drupal_version is None:
        return Skipped(
            package,
            version,
            SkipReason.INVALID_VERSION,
            "neither extra.drupal.version nor dist.reference names a Drupal.org version",
        )
    try:
        check_version_text(drupal_version, "Drupal version")
    except UnsafeNameError as exc:
        return Skipped(package, version, SkipReason.UNSAFE_NAME, str(exc))
    try:
        expected = drupal_to_composer(drupal_version)
        normalized = normalize_version(version)
    except InvalidVersionError as exc:
        return Skipped(package, version, SkipReason.INVALID_VERSION, str(exc))
    if expected != version:
        return Skipped(
            package,
            version,
            SkipReason.INVALID_VERSION,
            f"Drupal version {drupal_version} maps to {expected}, the entry says {version}",
        )
    if entry.get("version_normalized", normalized) != normalized:
        return Skipped(
            package,
            version,
            SkipReason.INVALID_VERSION,
            f"version_normalized {entry['version_normalized']!r} is not Composer's {normalized!r}",
        )
    return drupal_version, normalized


def _dist_sha1(package: str, version: str, dist: Mapping[str, Any]) -> str | Skipped | None:
    """The dist's ``shasum`` (None when it has none), or why a malformed one is skipped."""
    shasum = dist.get("shasum")
    if shasum in (None, ""):
        return None
    if isinstance(shasum, str) and HEX_SHA1.fullmatch(shasum):
        return shasum
    return Skipped(
        package,
        version,
        SkipReason.MALFORMED_ENTRY,
        f"dist.shasum {shasum!r} is not 40 lower-case hex digits",
    )


def _rebuilt(version: str, entry: Mapping[str, Any], build: PublishedBuild | None) -> str | None:
    """The sha256 of the published build of a dev ``version`` whose zip upstream was rebuilt
    (its ``dist.shasum`` is another), else None: nothing to publish again."""
    if build is None or not is_dev(version):
        return None
    dist = entry.get("dist")
    shasum = dist.get("shasum") if isinstance(dist, Mapping) else None
    if not isinstance(shasum, str) or not HEX_SHA1.fullmatch(shasum) or shasum == build.sha1:
        return None
    return build.sha256


def _drupal_version(entry: Mapping[str, Any], dist: Mapping[str, Any]) -> str | None:
    extra = entry.get("extra")
    drupal = extra.get("drupal") if isinstance(extra, Mapping) else None
    version = drupal.get("version") if isinstance(drupal, Mapping) else None
    if isinstance(version, str) and version:
        return version
    reference = dist.get("reference")
    return reference if isinstance(reference, str) and reference else None


def _release_time(entry: Mapping[str, Any]) -> datetime | None:
    """When Drupal.org released it: ``extra.drupal.datestamp``, else Composer's ``time``."""
    extra = entry.get("extra")
    drupal = extra.get("drupal") if isinstance(extra, Mapping) else None
    stamp = drupal.get("datestamp") if isinstance(drupal, Mapping) else None
    try:
        if isinstance(stamp, str | int) and str(stamp).isdigit():
            return datetime.fromtimestamp(int(stamp), UTC)
        text = entry.get("time")
        if isinstance(text, str):
            moment = datetime.fromisoformat(text)
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _normalized_or_none(version: str) -> str | None:
    try:
        return normalize_version(version)
    except InvalidVersionError:
        return None
