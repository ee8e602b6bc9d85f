"""Importing a Composer repository into the stream: one signed release event per version, resumable.

The pure part (``plan_package``, ``release_event``, ``load_checksums``) turns
p2 documents into release events and says why an entry is skipped;
``import_repository`` wires it to the source (``connectors.composer_repo``)
and the releases topic. The topic is the ledger: what it already holds is
never published again, so an import that crashed is simply run again.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from connectors.composer_repo import (
    ArtifactDigest,
    ComposerRepository,
    RepositoryIndex,
    SourceLimits,
)
from connectors.kafka import (
    Delivered,
    EventProducer,
    PublishedBuild,
    Topics,
    ensure_topics,
    published_builds,
)
from schemas import composer as composer_documents
from schemas.errors import (
    ArtifactTooLargeError,
    ConfigurationError,
    InvalidVersionError,
    MalformedEventError,
    OriginUnavailableError,
    OversizedEventError,
    RejectedError,
    UnsafeNameError,
)
from schemas.events import (
    HEX_SHA1,
    HEX_SHA256,
    Artifact,
    ReleasePublished,
    check_consistency,
    check_version_text,
    utc_now,
)
from schemas.names import check_package_name
from schemas.signing import SigningKey, seal
from schemas.versions import drupal_to_composer, is_dev, normalize_version, version_sort_key
from services.publishing.publisher import next_sequence

__all__ = [
    "Candidate",
    "ImportObserver",
    "ImportReport",
    "ImportSettings",
    "PackagePlan",
    "ReleaseProducer",
    "RichImportProgress",
    "SkipReason",
    "Skipped",
    "check_digest",
    "check_package",
    "checksum_key",
    "import_repository",
    "load_checksums",
    "plan_package",
    "release_event",
    "summary_table",
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


@dataclass(frozen=True)
class PackagePlan:
    """What can be published of one package, oldest version first, and what is skipped."""

    package: str
    candidates: tuple[Candidate, ...]
    skipped: tuple[Skipped, ...]


# ---------------------------------------------------------------------------
# The pure part: p2 entries to release events
# ---------------------------------------------------------------------------


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
                    skipped.append(_skip(outcome, SkipReason.DUPLICATE_VERSION, "listed twice"))
                    continue
                normalized = outcome.version_normalized
                same = seen.get(normalized) or published_normalized.get(normalized)
                if same is not None and not (outcome.rebuild_of and same == outcome.version):
                    skipped.append(
                        _skip(
                            outcome,
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
            entry = composer_documents.with_dist_url(candidate.composer, candidate.origin_url)
            composer_documents.check_servable_entry(package, entry)
        except (MalformedEventError, InvalidVersionError) as exc:
            refused.append(_skip(candidate, SkipReason.MALFORMED_ENTRY, str(exc)))
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

    dist = entry.get("dist")
    if not isinstance(dist, Mapping):
        return Skipped(package, shown, SkipReason.NO_DIST, "entry has no dist (source only)")
    url = dist.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return Skipped(package, shown, SkipReason.NO_DIST, f"dist.url {url!r} is not http(s)")
    if dist.get("type") != "zip":
        return Skipped(
            package, shown, SkipReason.NO_DIST, f"dist.type is {dist.get('type')!r}, not zip"
        )

    drupal_version = _drupal_version(entry, dist)
    if drupal_version is None:
        return Skipped(
            package,
            shown,
            SkipReason.INVALID_VERSION,
            "neither extra.drupal.version nor dist.reference names a Drupal.org version",
        )
    try:
        check_version_text(drupal_version, "Drupal version")
    except UnsafeNameError as exc:
        return Skipped(package, shown, SkipReason.UNSAFE_NAME, str(exc))
    try:
        expected = drupal_to_composer(drupal_version)
        normalized = normalize_version(shown)
    except InvalidVersionError as exc:
        return Skipped(package, shown, SkipReason.INVALID_VERSION, str(exc))
    if expected != shown:
        return Skipped(
            package,
            shown,
            SkipReason.INVALID_VERSION,
            f"Drupal version {drupal_version} maps to {expected}, the entry says {shown}",
        )
    if entry.get("version_normalized", normalized) != normalized:
        return Skipped(
            package,
            shown,
            SkipReason.INVALID_VERSION,
            f"version_normalized {entry['version_normalized']!r} is not Composer's {normalized!r}",
        )

    shasum = dist.get("shasum")
    if shasum in (None, ""):
        sha1 = None
    elif isinstance(shasum, str) and HEX_SHA1.fullmatch(shasum):
        sha1 = shasum
    else:
        return Skipped(
            package,
            shown,
            SkipReason.MALFORMED_ENTRY,
            f"dist.shasum {shasum!r} is not 40 lower-case hex digits",
        )

    unset = sorted(key for key, value in entry.items() if value == composer_documents.UNSET)
    if unset:
        # composer/2.0 reads this string as "key removed": a node could not minify the entry.
        return Skipped(
            package,
            shown,
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
        version=shown,
        drupal_version=drupal_version,
        origin_url=url,
        sha1=sha1,
        composer=composer,
        published_at=_release_time(entry),
        version_normalized=normalized,
        rebuild_of=rebuild_of,
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


def _skip(candidate: Candidate, reason: SkipReason, detail: str) -> Skipped:
    return Skipped(candidate.package, candidate.version, reason, detail)


def check_digest(
    candidate: Candidate, digest: ArtifactDigest, reason: SkipReason
) -> Skipped | None:
    """``None`` if the zip's sha1 is the p2 ``dist.shasum`` (or the entry had none)."""
    if candidate.sha1 is None or digest.sha1 == candidate.sha1:
        return None
    return _skip(
        candidate,
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
        return _skip(candidate, SkipReason.MALFORMED_ENTRY, str(exc))
    return event


# ---------------------------------------------------------------------------
# Checksums file
# ---------------------------------------------------------------------------


def checksum_key(url: str) -> str:
    """How a dist URL is looked up in a checksums file: its path, without the leading ``/``."""
    return urlsplit(url).path.lstrip("/")


def load_checksums(data: bytes, *, source: str = "checksums file") -> dict[str, ArtifactDigest]:
    """Read a checksums file: ``{"<dist URL path>": {"sha256": ..., "sha1": ..., "size": ...}}``.

    Keys may be paths (with or without the leading ``/``) or whole URLs; the
    result is keyed by ``checksum_key``. Raises ``ConfigurationError`` naming
    the first entry that is wrong.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigurationError(
            f"{source} is not a JSON object mapping dist URL paths to sha256, sha1 and size"
        )
    checksums: dict[str, ArtifactDigest] = {}
    for key, value in document.items():
        if not (
            isinstance(value, dict)
            and isinstance(value.get("sha256"), str)
            and HEX_SHA256.fullmatch(value["sha256"])
            and isinstance(value.get("sha1"), str)
            and HEX_SHA1.fullmatch(value["sha1"])
            and type(value.get("size")) is int
            and value["size"] >= 0
        ):
            raise ConfigurationError(
                f"{source}: entry {key!r} is not {{'sha256': 64 hex, 'sha1': 40 hex, "
                f"'size': bytes}} (got {str(value)[:120]})"
            )
        checksums[checksum_key(key)] = ArtifactDigest(value["sha256"], value["sha1"], value["size"])
    return checksums


# ---------------------------------------------------------------------------
# The import
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSettings:
    """What to import from where into which topic, signed with which keys."""

    repository_url: str
    broker_url: str = field(repr=False)  # may carry SASL credentials
    keys: tuple[SigningKey, ...]
    topics: Topics = Topics()
    partitions: int = 4
    #: Package names to import; ``None``: the repository's ``available-packages``.
    packages: tuple[str, ...] | None = None
    #: sha256, sha1 and size per dist URL path (or URL); a zip not listed is downloaded.
    checksums: Mapping[str, ArtifactDigest] | None = None
    limits: SourceLimits = field(default_factory=SourceLimits)
    batch_size: int = 500
    #: Where zips are downloaded to be hashed (one at a time per request slot).
    work_dir: Path | None = None
    #: Raises ``ConfigurationError`` when the keys may not sign a package's events (the
    #: trust root given with ``--root`` does not delegate its namespace to them): checked
    #: before any event of the package is built.
    check_signers: Callable[[str], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigurationError("an import needs at least one signing key (--key FILE)")
        if self.batch_size < 1:
            raise ConfigurationError(f"batch size must be at least 1, not {self.batch_size}")
        if self.checksums is not None:
            # Looked up by checksum_key: "/files/x.zip", "files/x.zip" and a URL all match.
            keyed = {checksum_key(path): digest for path, digest in self.checksums.items()}
            object.__setattr__(self, "checksums", keyed)


@dataclass
class ImportReport:
    """What an import did: releases published, releases (or packages) skipped by reason."""

    repository: str
    packages: int = 0
    published: int = 0
    skipped: Counter[SkipReason] = field(default_factory=Counter)
    examples: dict[SkipReason, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    downloads: int = 0
    elapsed: float = 0.0

    def skip(self, skipped: Skipped) -> None:
        self.skipped[skipped.reason] += 1
        if skipped.reason not in self.examples:
            where = skipped.package + (f" {skipped.version}" if skipped.version else "")
            self.examples[skipped.reason] = f"{where}: {skipped.detail}"


class ImportObserver(Protocol):
    """Told how an import goes, e.g. to draw a progress bar."""

    def packages_found(self, total: int) -> None: ...

    def package_done(self, package: str, *, releases: int, skipped: int) -> None: ...

    def published(self, count: int) -> None: ...


class _Silent:
    def packages_found(self, total: int) -> None:
        pass

    def package_done(self, package: str, *, releases: int, skipped: int) -> None:
        pass

    def published(self, count: int) -> None:
        pass


class ReleaseProducer(Protocol):
    """Where signed releases go: ``connectors.kafka.EventProducer``."""

    def produce_many(
        self, topic: str, records: Iterable[tuple[bytes, bytes]]
    ) -> list[Delivered]: ...


async def import_repository(
    settings: ImportSettings,
    *,
    observer: ImportObserver | None = None,
    producer: ReleaseProducer | None = None,
) -> ImportReport:
    """Publish one signed release event per version of every package of a Composer repository.

    Reads the releases topic to its end first and publishes nothing it holds.
    Per package, versions go oldest first with increasing sequences, in
    batches of ``settings.batch_size`` records. A release that cannot be
    published is counted by reason in the report and the import goes on.
    Raises ``ConfigurationError`` when the repository does not list its
    packages and none are given, ``OriginUnavailableError`` /
    ``MalformedEventError`` when its ``packages.json`` cannot be read, and
    ``BrokerUnavailableError`` when the broker fails (run it again: it
    resumes).
    """
    observer = observer or _Silent()
    started = time.monotonic()
    report = ImportReport(repository=settings.repository_url)
    await asyncio.to_thread(
        ensure_topics, settings.broker_url, settings.topics.partitions(settings.partitions)
    )
    ledger = await asyncio.to_thread(
        published_builds, settings.broker_url, settings.topics.releases
    )
    published: dict[str, dict[str, PublishedBuild]] = {}
    for (package, version), build in ledger.items():
        published.setdefault(package, {})[version] = build

    own_producer = None
    if producer is None:
        own_producer = producer = EventProducer(settings.broker_url)
    repository = ComposerRepository(settings.repository_url, limits=settings.limits)
    try:
        with tempfile.TemporaryDirectory(prefix="fairstream-import-", dir=settings.work_dir) as tmp:
            async with repository:
                index = await repository.index()
                packages = _package_list(settings.packages, index)
                report.packages = len(packages)
                observer.packages_found(len(packages))
                run = _ImportRun(
                    settings, repository, index, published, Path(tmp), report, observer, producer
                )
                await run.all(packages)
    finally:
        if own_producer is not None:
            await asyncio.to_thread(own_producer.close)
        report.requests = repository.counts.requests
        report.retries = repository.counts.retries
        report.downloads = repository.counts.downloads
        report.elapsed = time.monotonic() - started
    return report


def _package_list(given: Sequence[str] | None, index: RepositoryIndex) -> list[str]:
    names = given if given is not None else index.available_packages
    if names is None:
        patterns = ", ".join(index.available_package_patterns) or "none"
        raise ConfigurationError(
            f"{index.url} does not list its packages (available-package-patterns: {patterns}); "
            "give the names to import (--packages FILE, one per line)"
        )
    return list(dict.fromkeys(names))


class _ImportRun:
    """One import: package workers feed one producer task through a bounded queue."""

    def __init__(
        self,
        settings: ImportSettings,
        repository: ComposerRepository,
        index: RepositoryIndex,
        published: Mapping[str, Mapping[str, PublishedBuild]],
        work_dir: Path,
        report: ImportReport,
        observer: ImportObserver,
        producer: ReleaseProducer,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.index = index
        self.published = published
        self.work_dir = work_dir
        self.report = report
        self.observer = observer
        self.producer = producer
        # Bounded: when the broker is slower than the source, workers wait (backpressure).
        self.outbox: asyncio.Queue[list[ReleasePublished] | None] = asyncio.Queue(
            maxsize=2 * settings.limits.concurrency
        )

    async def all(self, packages: Sequence[str]) -> None:
        pending = iter(packages)
        publisher = asyncio.create_task(self._publish_loop())
        workers = [
            asyncio.create_task(self._work(pending))
            for _ in range(self.settings.limits.concurrency)
        ]
        workers_done = asyncio.gather(*workers)
        try:
            either: list[asyncio.Future[Any]] = [workers_done, publisher]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if publisher.done():
                publisher.result()  # it only ends early by failing: raise that
            await workers_done
            await self.outbox.put(None)
            await publisher
        finally:
            for task in (*workers, publisher):
                task.cancel()
            await asyncio.gather(*workers, publisher, return_exceptions=True)

    async def _work(self, pending: Iterator[str]) -> None:
        for package in pending:
            events, skipped = await self._package(package)
            for item in skipped:
                self.report.skip(item)
            self.observer.package_done(package, releases=len(events), skipped=len(skipped))
            if events:
                await self.outbox.put(events)

    async def _package(self, package: str) -> tuple[list[ReleasePublished], list[Skipped]]:
        refused = check_package(package)
        if refused is not None:
            return [], [refused]
        if self.settings.check_signers is not None:
            self.settings.check_signers(package)
        try:
            documents = await self.repository.package_versions(self.index, package)
        except OriginUnavailableError as exc:
            return [], [Skipped(package, None, SkipReason.METADATA_UNREACHABLE, str(exc))]
        except MalformedEventError as exc:
            return [], [Skipped(package, None, SkipReason.MALFORMED_METADATA, str(exc))]
        if documents is None:
            return [], [
                Skipped(package, None, SkipReason.PACKAGE_NOT_FOUND, "its p2 document is a 404")
            ]
        builds = self.published.get(package, {})
        plan = plan_package(package, documents, published=builds.keys(), builds=builds)
        skipped = list(plan.skipped)
        # Looked up in place: a task per release only for the zips that must be downloaded.
        listed = [self._listed_digest(candidate) for candidate in plan.candidates]
        downloads = iter(
            await asyncio.gather(
                *(
                    self._downloaded_digest(candidate)
                    for candidate, digest in zip(plan.candidates, listed, strict=True)
                    if digest is None
                )
            )
        )
        digests = [digest if digest is not None else next(downloads) for digest in listed]
        events: list[ReleasePublished] = []
        # Oldest first, each with a sequence above the one before: the order nodes apply them.
        for candidate, digest in zip(plan.candidates, digests, strict=True):
            if isinstance(digest, Skipped):
                skipped.append(digest)
                continue
            event = release_event(candidate, digest, sequence=next_sequence())
            if isinstance(event, Skipped):
                skipped.append(event)
            else:
                events.append(event)
        return events, skipped

    def _listed_digest(self, candidate: Candidate) -> ArtifactDigest | Skipped | None:
        """sha256, sha1 and size of the candidate's zip from the checksums file; None if unlisted."""
        checksums = self.settings.checksums
        if checksums is None:
            return None
        listed = checksums.get(checksum_key(candidate.origin_url))
        if listed is None:
            return None
        return check_digest(candidate, listed, SkipReason.CHECKSUMS_MISMATCH) or listed

    async def _downloaded_digest(self, candidate: Candidate) -> ArtifactDigest | Skipped:
        """sha256, sha1 and size of the candidate's zip, downloaded and checked."""
        path = self.work_dir / f"{uuid.uuid4().hex}.zip"
        try:
            digest = await self.repository.download(candidate.origin_url, path)
            mismatch = check_digest(candidate, digest, SkipReason.SHA1_MISMATCH)
            if mismatch is not None:
                return mismatch
            problem = await asyncio.to_thread(_zip_problem, path, candidate.package)
            if problem is not None:
                return _skip(candidate, SkipReason.WRONG_ZIP, f"{candidate.origin_url}: {problem}")
            return digest
        except OriginUnavailableError as exc:
            return _skip(candidate, SkipReason.ORIGIN_UNREACHABLE, str(exc))
        except ArtifactTooLargeError as exc:
            return _skip(candidate, SkipReason.TOO_LARGE, str(exc))
        finally:
            path.unlink(missing_ok=True)

    async def _publish_loop(self) -> None:
        finished = False
        while not finished:
            item = await self.outbox.get()
            if item is None:
                return
            batch = list(item)
            while len(batch) < self.settings.batch_size and not self.outbox.empty():
                item = self.outbox.get_nowait()
                if item is None:
                    finished = True
                    break
                batch.extend(item)
            refused = await asyncio.to_thread(self._produce, batch)
            for skipped in refused:
                self.report.skip(skipped)
            self.report.published += len(batch) - len(refused)
            self.observer.published(len(batch) - len(refused))

    def _produce(self, batch: Sequence[ReleasePublished]) -> list[Skipped]:
        """Sign and produce a batch, in order, keyed by package (runs in a thread); returns
        the events not produced because every node would refuse them (``oversized``)."""
        keys = self.settings.keys
        records: list[tuple[bytes, bytes]] = []
        refused: list[Skipped] = []
        for event in batch:
            try:
                records.append((event.package.encode(), seal(event.to_bytes(), keys)))
            except OversizedEventError as exc:
                refused.append(
                    Skipped(event.package, event.version, SkipReason.OVERSIZED_EVENT, str(exc))
                )
        self.producer.produce_many(self.settings.topics.releases, records)
        return refused


def _zip_problem(path: Path, package: str) -> str | None:
    """Why a node would refuse this zip for ``package``: not one ``<project>/`` top directory."""
    project = package.split("/", 1)[1]
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a zip file ({exc})"
    tops = {name.split("/", 1)[0] for name in names if name.strip("/")}
    if tops != {project} or not any(name.startswith(f"{project}/") for name in names):
        return f"holds {sorted(tops)[:3]}, not one {project}/ directory"
    return None


# ---------------------------------------------------------------------------
# Showing it
# ---------------------------------------------------------------------------


class RichImportProgress:
    """A rich progress bar over packages, with the releases published and skipped so far."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "packages · {task.fields[published]} published · {task.fields[queued]} queued · "
                "{task.fields[skipped]} skipped"
            ),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._progress.add_task("import", total=None, published=0, queued=0, skipped=0)
        self._published = self._queued = self._skipped = 0

    def __enter__(self) -> RichImportProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def packages_found(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def package_done(self, package: str, *, releases: int, skipped: int) -> None:
        self._queued += releases
        self._skipped += skipped
        self._progress.update(self._task, advance=1, queued=self._queued, skipped=self._skipped)

    def published(self, count: int) -> None:
        self._published += count
        self._queued -= count
        self._progress.update(self._task, published=self._published, queued=self._queued)


def summary_table(report: ImportReport) -> Table:
    """The end-of-import summary: what was published and, per reason, what was skipped."""
    rate = report.published / report.elapsed if report.elapsed else 0.0
    table = Table(
        "outcome",
        "count",
        "example",
        title=Text(
            f"import of {report.repository}: {report.packages} packages in "
            f"{report.elapsed:.1f} s ({rate:.0f} releases/s; {report.requests} requests, "
            f"{report.retries} retried, {report.downloads} zips downloaded)"
        ),
    )
    table.columns[2].overflow = "fold"
    table.add_row("published", str(report.published), "")
    for reason, count in sorted(report.skipped.items(), key=lambda item: (-item[1], item[0])):
        unit = "packages" if reason.per_package else "releases"
        table.add_row(
            f"skipped: {reason.value}", f"{count} {unit}", Text(report.examples.get(reason, ""))
        )
    return table
