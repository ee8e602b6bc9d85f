"""Replicating publisher events into a region: verify, decide, fetch, store, derive metadata.

``ReleaseReplicator.apply_batch`` takes events already verified against the
trust root in force, groups them by package, and per package asks the pure
``apply_event`` what each does, fetches the zips a full mirror must hold, and
writes the package's state and p2 documents once for the whole batch (so a
bootstrap writes each package a handful of times, not once per release). The
order makes every step idempotent: artifact (content addressed) first, then the
versioned state, then the p2 documents, fenced against a stale worker
(``connectors.state_store``). A redelivered event changes nothing.

A zip no source delivers does not hold up the partition: the version is
published (its dist answers with a redirect to the origin or a replica), and
the fetch is parked in ``pending/`` and retried with backoff by
``retry_pending``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson

from connectors.metrics import FETCH_BYTES, FETCH_SECONDS
from connectors.object_store import ObjectStore, is_json
from connectors.origin import UNREACHABLE_RETRY_AFTER, Fetched, FetchLimits, fetch_from_sources
from connectors.state_store import PackageStates
from schemas import layout
from schemas.errors import (
    ArtifactMismatchEverywhereError,
    ArtifactUnreachableError,
    InternalFailureError,
    RejectedError,
    TransientError,
    WrongPackageError,
)
from schemas.events import (
    DEFAULT_MAX_ARTIFACT_SIZE,
    Artifact,
    PackageEvent,
    ReleasePublished,
    ReplicaAvailable,
)
from schemas.package_state import PackageState, VersionRecord, apply_event, render_documents
from schemas.trust import TrustRoot, verify_signed
from streams.artifacts import HotStats, ReplicaRegistry, Source, choose_evictions
from streams.faults import (
    AFTER_METADATA_WRITE,
    AFTER_STORE_WRITE,
    AFTER_VIEW_RECORD,
    FaultPoints,
)
from streams.policy import JurisdictionPolicy, Purpose, ReplicationPolicy
from streams.region_view import BucketView, MetadataView

log = logging.getLogger(__name__)

#: Packages of one batch processed at once (fetches and store writes overlap).
PACKAGE_CONCURRENCY = 8
#: Package states kept in memory between batches (cleared on every rebalance).
STATE_CACHE_SIZE = 2048
#: An unexpected failure of one package is retried this many times, then its events are
#: set aside in the rejected topic so one poison record cannot stall a partition.
MAX_UNEXPECTED_FAILURES = 5
MAX_BACKOFF_SECONDS = 60.0
#: Backoff of a parked fetch: first retry after this, doubling up to PENDING_MAX_DELAY.
PENDING_FIRST_DELAY = timedelta(seconds=15)
PENDING_MAX_DELAY = timedelta(hours=1)

Announce = Callable[[ReplicaAvailable], Awaitable[None]]


@dataclass(frozen=True)
class Verified:
    """A record that verified: the event, the sha256 of its signed payload, its log position."""

    event: PackageEvent
    digest: str
    position: str
    #: Key ids of the delegated keys whose signatures verified.
    signed_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Applied:
    """What one event did to the region."""

    package: str
    kind: str
    sequence: int
    fetched: bool
    changed: bool
    parked: bool = False


@dataclass(frozen=True)
class Refused:
    """An event that can never be applied, with why (goes to the rejected topic)."""

    package: str
    error: RejectedError

    @property
    def reason(self) -> str:
        return self.error.reason

    @property
    def detail(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class Skipped:
    """An event for a package outside the region's policy: verified, not applied."""

    package: str


@dataclass(frozen=True)
class Abandoned:
    """An event of a partition this worker no longer owns (a rebalance happened meanwhile):
    nothing written, not to be acknowledged; the partition's new owner applies it."""

    package: str


Outcome = Applied | Refused | Skipped | Abandoned


@dataclass(frozen=True)
class PendingReport:
    retried: int
    recovered: int
    still_pending: int


class ReleaseReplicator:
    """Applies verified publisher events to one region's bucket."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        session: aiohttp.ClientSession,
        root: Callable[[], TrustRoot],
        public_url: str,
        work_dir: Path,
        region: str = "local",
        policy: ReplicationPolicy = ReplicationPolicy(),
        limits: FetchLimits = FetchLimits(),
        max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        replicas: ReplicaRegistry | None = None,
        hot: HotStats | None = None,
        announce: Announce | None = None,
        pending_first_delay: timedelta = PENDING_FIRST_DELAY,
        owns: Callable[[str], bool] = lambda position: True,
        faults: FaultPoints | None = None,
        view: MetadataView | None = None,
    ) -> None:
        self._store = store
        self._session = session
        self._root = root
        self._public_url = public_url.rstrip("/")
        self._work_dir = work_dir
        self._region = region
        self.policy = policy
        self._limits = limits
        self._max_artifact_size = max_artifact_size
        self._clock = clock
        self._replicas = replicas or ReplicaRegistry(region)
        self._hot = hot or HotStats(region)
        self._announce = announce
        self._pending_first_delay = pending_first_delay
        self._owns = owns
        self._faults = faults or FaultPoints(None)
        #: Objects written since start: ``states`` and p2 ``documents`` (coalescing shows here).
        self.written: Counter[str] = Counter()
        #: Where states are read and derived metadata written: the region's view (the worker's
        #: local store and the view topic), or the bucket (the earlier design, tests only).
        self.view: MetadataView = view or BucketView(PackageStates(store, self.render), self.render)
        self._cache: OrderedDict[str, PackageState] = OrderedDict()
        self._sizes: dict[str, int] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def render(self, state: PackageState) -> Mapping[str, bytes]:
        """The p2 documents of ``state`` on this region's public URL."""
        return render_documents(state, self._public_url)

    def forget_cached_states(self) -> None:
        """Drop the states kept between batches: after a rebalance another worker may
        have written newer ones."""
        self._cache.clear()

    def verify(self, value: bytes, position: str, *, root: TrustRoot | None = None) -> Verified:
        """Verify a record against ``root`` (default: the trust root in force, ours; a peer
        network's records are verified against its own); raises ``RejectedError``."""
        verified = verify_signed(
            value,
            root if root is not None else self._root(),
            now=self._clock(),
            max_artifact_size=self._max_artifact_size,
        )
        return Verified(verified.event, verified.payload_sha256, position, verified.signed_by)

    async def apply(self, value: bytes, position: str) -> Applied:
        """Verify and apply one record; effects are durable on return.

        Raises ``RejectedError`` (never applicable) or ``TransientError`` (retry).
        """
        verified = self.verify(value, position)
        (outcome,) = await self.apply_batch([verified])
        if isinstance(outcome, Refused):
            raise outcome.error
        if isinstance(outcome, Skipped | Abandoned):
            return Applied(outcome.package, type(verified.event).__name__, -1, False, False)
        return outcome

    async def apply_batch(self, batch: Sequence[Verified]) -> list[Outcome]:
        """Apply verified events; one outcome per event, in order. Durable on return."""
        outcomes, acknowledged = await self.start_batch(batch)
        await acknowledged
        return outcomes

    async def start_batch(
        self, batch: Sequence[Verified]
    ) -> tuple[list[Outcome], asyncio.Future[None]]:
        """Apply verified events; one outcome per event, in order, and a future that
        resolves once the batch is durable: every view record it wrote acknowledged.

        Events of one package are applied in log order; packages run
        concurrently. A store failure is retried with backoff until the store
        answers (the partition waits: nothing may be acknowledged before it). The next
        batch may start before this one is acknowledged: the view builds on its newest
        records, acknowledged or not.
        """
        outcomes: list[Outcome | None] = [None] * len(batch)
        by_package: dict[str, list[int]] = {}
        for index, item in enumerate(batch):
            if not self.policy.serves(item.event.package):
                outcomes[index] = Skipped(item.event.package)
                continue
            by_package.setdefault(item.event.package, []).append(index)
        limit = asyncio.Semaphore(PACKAGE_CONCURRENCY)
        # Acknowledgements of the view records this batch writes.
        unacked: list[Awaitable[None]] = []

        async def run(package: str, indexes: list[int]) -> None:
            async with limit:
                items = [batch[i] for i in indexes]
                results = await self._apply_package(package, items, unacked)
            for index, result in zip(indexes, results, strict=True):
                outcomes[index] = result

        try:
            await asyncio.gather(*(run(p, ix) for p, ix in by_package.items()))
        except BaseException:
            await asyncio.gather(*unacked)  # what was written lands before the error rises
            raise
        return [o for o in outcomes if o is not None], asyncio.ensure_future(
            self._acknowledged(unacked)
        )

    async def _acknowledged(self, unacked: list[Awaitable[None]]) -> None:
        await asyncio.gather(*unacked)
        if unacked:
            self._faults.reached(AFTER_VIEW_RECORD)

    async def _apply_package(
        self, package: str, items: list[Verified], unacked: list[Awaitable[None]]
    ) -> list[Outcome]:
        attempt = 0
        unexpected = 0
        while True:
            attempt += 1
            try:
                return await self._apply_package_once(package, items, unacked)
            except TransientError as exc:
                self._cache.pop(package, None)
                delay = min(exc.retry_after * 2 ** min(attempt - 1, 6), MAX_BACKOFF_SECONDS)
                log.warning("%s: %s; retrying in %.1f s (attempt %d)", package, exc, delay, attempt)
                await asyncio.sleep(delay)
            except Exception as exc:
                self._cache.pop(package, None)
                unexpected += 1
                log.exception(
                    "%s: unexpected failure %d/%d", package, unexpected, MAX_UNEXPECTED_FAILURES
                )
                if unexpected >= MAX_UNEXPECTED_FAILURES:
                    error = InternalFailureError(f"{type(exc).__name__}: {exc}; report this bug")
                    return [Refused(package, error) for _ in items]
                await asyncio.sleep(min(2.0**unexpected, MAX_BACKOFF_SECONDS))

    async def _load(self, package: str) -> tuple[PackageState, bool]:
        """The package's state, and whether it exists in the store (or only here, empty)."""
        cached = self._cache.get(package)
        if cached is not None:
            self._cache.move_to_end(package)
            return cached, True
        loaded = await self.view.load(package)
        if loaded is None:
            return PackageState(package), False
        return loaded, True

    def _still_owned(self, items: list[Verified]) -> bool:
        # One look per partition: a package's records in a batch share one.
        by_partition = {item.position.rpartition(":")[0]: item.position for item in items}
        return all(self._owns(position) for position in by_partition.values())

    async def _apply_package_once(
        self, package: str, items: list[Verified], unacked: list[Awaitable[None]]
    ) -> list[Outcome]:
        if not self._still_owned(items):
            return [Abandoned(package) for _ in items]
        old, existed = await self._load(package)
        current = old
        redelivered = False
        outcomes: list[Outcome] = []
        deletes: list[str] = []
        for item in items:
            event = item.event
            kind = type(event).__name__
            try:
                transition = apply_event(
                    current,
                    event,
                    digest=item.digest,
                    position=item.position,
                    signed_by=item.signed_by,
                )
            except RejectedError as exc:
                outcomes.append(Refused(package, exc))
                continue
            if transition is None:
                redelivered = True
                outcomes.append(Applied(package, kind, event.sequence, False, False))
                continue
            fetched = parked = False
            if (
                transition.fetch is not None
                and isinstance(event, ReleasePublished)
                and self.policy.mirrors_artifacts
            ):
                try:
                    fetched = await self._ensure_artifact(package, event.version, transition.fetch)
                except ArtifactUnreachableError as exc:
                    await self._park(package, event.version, transition.fetch, str(exc))
                    parked = True
                except RejectedError as exc:
                    outcomes.append(Refused(package, exc))
                    continue
            if transition.delete is not None:
                deletes.append(transition.delete)
            current = transition.state
            outcomes.append(Applied(package, kind, event.sequence, fetched, True, parked))
        changed = current is not old
        if (changed or redelivered) and not self._still_owned(items):
            # Revoked while fetching: the new owner writes this package (zips fetched
            # meanwhile are content addressed and harmless).
            self._cache.pop(package, None)
            return [Abandoned(package) for _ in items]
        if changed or redelivered:
            written = await self.view.write(
                current, previous=old if existed else None, redelivered=redelivered
            )
            self._faults.reached(AFTER_METADATA_WRITE)
            unacked.append(written.acked)
            self.written["states"] += int(written.state_written)
            self.written["documents"] += written.documents_written
            if written.superseded:
                self._cache.pop(package, None)
            else:
                self._remember(current)
        for sha256 in deletes:
            # After the state: a crash before this leaves an orphan zip, never a
            # version whose zip is gone.
            await asyncio.to_thread(self._store.delete, layout.artifact_key(sha256))
            await asyncio.to_thread(self._store.delete, layout.provenance_key(sha256))
            for key in layout.pending_keys(sha256):
                await asyncio.to_thread(self._store.delete, key)
            if self._sizes is not None:
                self._sizes.pop(sha256, None)
        return outcomes

    def _remember(self, state: PackageState) -> None:
        self._cache[state.package] = state
        self._cache.move_to_end(state.package)
        while len(self._cache) > STATE_CACHE_SIZE:
            self._cache.popitem(last=False)

    # Artifacts ---------------------------------------------------------------

    def _sources(self, artifact: Artifact) -> tuple[list[Source], list[Source]]:
        """Where to fetch ``artifact`` from, in order, and the sources the region's
        jurisdiction policy withholds. AspireCloud's order: the canonical origin first,
        then regions that announced a copy, then other sources (peer networks' origins)."""
        policy = self.policy.jurisdictions
        every = [
            Source(artifact.origin_url, "origin", policy.origin),
            *self._replicas.fetch_sources(artifact.sha256),
        ]
        allowed = [source for source in every if policy.allows(Purpose.FETCH, source.jurisdiction)]
        withheld = [
            source for source in every if not policy.allows(Purpose.FETCH, source.jurisdiction)
        ]
        return allowed, withheld

    async def _fetch(self, artifact: Artifact) -> tuple[Fetched, Source]:
        """Fetch ``artifact`` from the first allowed source that delivers it.

        A sovereign region never fetches from a source outside its jurisdictions: when
        none of the allowed ones delivers, the release is parked (``ArtifactUnreachableError``)
        with the withheld sources named, never refused, and never fetched from outside.
        Returns the fetched file and the source it came from. Raises what
        ``fetch_from_sources`` raises.
        """
        sources, withheld = self._sources(artifact)
        because = _withheld_reason(self.policy.jurisdictions, withheld) if withheld else ""
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
            fetched = await fetch_from_sources(
                self._session,
                [s.url for s in sources],
                artifact,
                work_dir=self._work_dir,
                limits=self._limits,
            )
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
        return fetched, next(s for s in sources if s.url == fetched.source)

    async def _ensure_artifact(self, package: str, version: str, artifact: Artifact) -> bool:
        """Make sure the region holds the zip; True when it was fetched now.

        Raises ``ArtifactUnreachableError`` (no source delivered; park it),
        ``ArtifactMismatchError`` (every source had other bytes) or
        ``WrongPackageError``.
        """
        key = layout.artifact_key(artifact.sha256)
        existing = await asyncio.to_thread(self._store.stat, key)
        fetched = False
        if existing is None or existing.size != artifact.size:
            fetched = await self._fetch_and_store(package, artifact)
        if fetched or existing is not None:
            await self._announce_replica(package, version, artifact)
        return fetched

    async def _fetch_and_store(self, package: str, artifact: Artifact) -> bool:
        started = time.perf_counter()
        result, source_of_bytes = await self._fetch(artifact)
        source = "origin" if result.source == artifact.origin_url else "replica"
        FETCH_SECONDS.labels(self._region, source).observe(time.perf_counter() - started)
        FETCH_BYTES.labels(self._region, source).inc(artifact.size)
        try:
            check_top_directory(result.path, package)
            if not await self._make_room(artifact):
                return False
            await asyncio.to_thread(
                self._store.put_file,
                layout.artifact_key(artifact.sha256),
                result.path,
                content_type="application/zip",
            )
            # The proof of where the bytes came from (the status page shows it): written
            # after the zip, so a crash between leaves a zip without it, never the reverse.
            await asyncio.to_thread(
                self._store.put_bytes,
                layout.provenance_key(artifact.sha256),
                provenance(source_of_bytes, artifact.sha256, self._region, self._clock()),
                content_type="application/json",
            )
            self._faults.reached(AFTER_STORE_WRITE)
        finally:
            result.path.unlink(missing_ok=True)
        if self._sizes is not None:
            self._sizes[artifact.sha256] = artifact.size
        if result.source != artifact.origin_url:
            log.info(
                "%s %s fetched from replica %s (%s, jurisdiction %s)",
                package,
                artifact.sha256[:12],
                result.source,
                source_of_bytes.holder,
                source_of_bytes.jurisdiction or "not declared",
            )
        return True

    async def _announce_replica(self, package: str, version: str, artifact: Artifact) -> None:
        if self._announce is None or not self._public_url:
            return
        await self._announce(
            ReplicaAvailable(
                node_id=self._region,
                region=self._region,
                package=package,
                version=version,
                sha256=artifact.sha256,
                size=artifact.size,
                url=self._public_url + layout.dist_path(package, version, artifact.sha256),
                verified_at=self._clock(),
                jurisdiction=self.policy.jurisdictions.own,
            )
        )

    async def _make_room(self, artifact: Artifact) -> bool:
        """Evict cold zips so this one fits under the quota; False when it cannot fit."""
        quota = self.policy.quota_bytes
        if quota is None:
            return True
        if self._sizes is None:
            listed = await asyncio.to_thread(self._store.list_objects, layout.ARTIFACT_PREFIX)
            self._sizes = {
                sha: stored.size
                for key, stored in listed
                if (sha := layout.artifact_sha256(key)) is not None
            }
        chosen = choose_evictions(
            self._sizes,
            self._hot.snapshot(),
            quota=quota,
            incoming=artifact.size,
            protected={artifact.sha256},
            now=self._clock(),
        )
        if chosen is None:
            log.warning(
                "quota %d bytes: no room for %s (%d bytes) without evicting recently downloaded "
                "zips; not kept, served by redirect",
                quota,
                artifact.sha256[:12],
                artifact.size,
            )
            return False
        for sha256 in chosen:
            await asyncio.to_thread(self._store.delete, layout.artifact_key(sha256))
            await asyncio.to_thread(self._store.delete, layout.provenance_key(sha256))
            self._sizes.pop(sha256, None)
            log.info("quota: evicted cold artifact %s", sha256[:12])
        return True

    def store_bytes(self) -> int | None:
        """Bytes of zips the region holds, as this worker last counted (None: not counted)."""
        return None if self._sizes is None else sum(self._sizes.values())

    # Parked fetches ----------------------------------------------------------

    async def _park(self, package: str, version: str, artifact: Artifact, error: str) -> None:
        now = self._clock()
        log.warning("%s %s: zip unreachable, parked for retry: %s", package, version, error)
        document = pending_document(
            package, version, artifact, 0, now + self._pending_first_delay, error
        )
        await asyncio.to_thread(
            self._store.put_bytes,
            layout.pending_key(artifact.sha256),
            document,
            content_type="application/json",
        )

    def request_refetch(self, package: str, version: str, record: VersionRecord) -> None:
        """A client asked for a zip this full mirror does not hold (pending or evicted):
        fetch it again soon. Called from the HTTP handlers, in the event loop."""
        if not self.policy.mirrors_artifacts or not self.policy.serves(package):
            return
        artifact = Artifact(
            sha256=record.sha256, sha1=record.sha1, size=record.size, origin_url=record.origin_url
        )
        task = asyncio.get_running_loop().create_task(
            self._request_refetch(package, version, artifact)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _request_refetch(self, package: str, version: str, artifact: Artifact) -> None:
        key = layout.pending_key(artifact.sha256)
        try:
            for parked in layout.pending_keys(artifact.sha256):
                if await asyncio.to_thread(self._store.stat, parked) is not None:
                    return
            document = pending_document(
                package, version, artifact, 0, self._clock(), "requested while not held"
            )
            await asyncio.to_thread(
                self._store.put_bytes, key, document, content_type="application/json"
            )
        except TransientError as exc:
            log.warning("refetch of %s not scheduled: %s", artifact.sha256[:12], exc)

    async def pending_count(self) -> int:
        keys = await asyncio.to_thread(self._store.list_keys, layout.PENDING_PREFIX)
        return len(keys)

    async def retry_pending(self) -> PendingReport:
        """Try the parked fetches that are due; each success is stored and announced."""
        keys = await asyncio.to_thread(self._store.list_keys, layout.PENDING_PREFIX)
        retried = recovered = 0
        now = self._clock()
        for key in keys:
            body = await asyncio.to_thread(self._store.get, key, complete=is_json)
            if body is None:
                continue
            doc = orjson.loads(body.data)
            if datetime.fromisoformat(doc["next_attempt_at"]) > now:
                continue
            package, version = doc["package"], doc["version"]
            artifact = Artifact(
                sha256=doc["sha256"],
                sha1=doc["sha1"],
                size=doc["size"],
                origin_url=doc["origin_url"],
            )
            state = await self.view.load(package)
            record = state.versions.get(version) if state is not None else None
            if record is None or record.sha256 != artifact.sha256:
                # Expunged (or never applied here): nothing to fetch any more.
                await asyncio.to_thread(self._store.delete, key)
                continue
            retried += 1
            try:
                await self._ensure_artifact(package, version, artifact)
            except (ArtifactUnreachableError, RejectedError) as exc:
                attempts = doc["attempts"] + 1
                delay = min(self._pending_first_delay * 2**attempts, PENDING_MAX_DELAY)
                log.warning(
                    "%s %s: zip still unreachable after %d retries, next in %s: %s",
                    package,
                    version,
                    attempts,
                    delay,
                    exc,
                )
                document = pending_document(
                    package, version, artifact, attempts, now + delay, str(exc)
                )
                await asyncio.to_thread(
                    self._store.put_bytes, key, document, content_type="application/json"
                )
                continue
            await asyncio.to_thread(self._store.delete, key)
            recovered += 1
            log.info("%s %s: parked zip fetched and stored", package, version)
        return PendingReport(retried, recovered, len(keys) - recovered)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()


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


def _withheld_reason(policy: JurisdictionPolicy, withheld: Sequence[Source]) -> str:
    """Why a sovereign region did not fetch from ``withheld``, for a parked fetch's record."""
    named = ", ".join(
        f"{source.holder} ({source.jurisdiction or 'jurisdiction not declared'})"
        for source in withheld
    )
    return (
        f"the region fetches from {policy.describe(Purpose.FETCH)} only, so it does not "
        f"fetch from {named}; parked until a source there has it"
    )


def pending_document(
    package: str, version: str, artifact: Artifact, attempts: int, due: datetime, error: str
) -> bytes:
    """A parked fetch: what to fetch, how often it failed, when to try again, the last error."""
    return orjson.dumps(
        {
            "package": package,
            "version": version,
            "sha256": artifact.sha256,
            "sha1": artifact.sha1,
            "size": artifact.size,
            "origin_url": artifact.origin_url,
            "attempts": attempts,
            "next_attempt_at": due.isoformat(),
            "last_error": error,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def check_top_directory(path: Path, package: str) -> None:
    """A release zip holds one top directory named after the project (``token/`` for drupal/token).

    Raises ``WrongPackageError`` when it holds another project's files (wrong
    software under a right name) or is not a zip.
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
