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

The replicator's parts: ``streams.outcomes`` (its input, outcomes and the pure verdicts on a
release's zip), ``streams.artifact_copy`` (a zip streamed, checked, into the bucket),
``streams.artifact_fetch`` (its sources and checks),
``streams.artifact_quota`` (eviction under a quota), ``streams.parked`` (parked fetches).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from connectors.object_store import ObjectStore
from connectors.origin import FetchLimits
from connectors.state_store import PackageStates
from schemas import layout
from schemas.errors import InternalFailureError, RejectedError, TransientError
from schemas.event_verification import verify_signed
from schemas.events import DEFAULT_MAX_ARTIFACT_SIZE, Artifact, ReplicaAvailable
from schemas.package_state import (
    PackageState,
    Transition,
    VersionRecord,
    apply_event,
    render_documents,
)
from schemas.trust import TrustRoot
from streams.artifact_copy import ArtifactCopier
from streams.artifact_quota import ArtifactQuota
from streams.artifacts import HotStats, ReplicaRegistry
from streams.faults import (
    AFTER_METADATA_WRITE,
    AFTER_VIEW_RECORD,
    FaultPoints,
)
from streams.outcomes import (
    Abandoned,
    Applied,
    Outcome,
    Refuse,
    Refused,
    Skipped,
    Verified,
    on_fetch_failure,
    zip_to_fetch,
)
from streams.parked import PENDING_FIRST_DELAY, ParkedFetches, PendingReport
from streams.policy import ReplicationPolicy
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

Announce = Callable[[ReplicaAvailable], Awaitable[None]]


class ReleaseReplicator:
    """Applies verified publisher events to one region's bucket."""

    # Long because it is where the node wires replication: all keyword-only, most defaulted.
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
        self._root = root
        self._public_url = public_url.rstrip("/")
        self._region = region
        self.policy = policy
        self._max_artifact_size = max_artifact_size
        self._clock = clock
        self._replicas = replicas or ReplicaRegistry(region)
        self._announce = announce
        self._owns = owns
        self._faults = faults or FaultPoints(None)
        #: Objects written since start: ``states`` and p2 ``documents`` (coalescing shows here).
        self.written: Counter[str] = Counter()
        #: Where states are read and derived metadata written: the region's view (the worker's
        #: local store and the view topic), or the bucket (the earlier design, tests only).
        self.view: MetadataView = view or BucketView(PackageStates(store, self.render), self.render)
        self._cache: OrderedDict[str, PackageState] = OrderedDict()
        self._quota = ArtifactQuota(store, hot or HotStats(region), clock)
        self._parked = ParkedFetches(store, clock=clock, first_delay=pending_first_delay)
        self._background: set[asyncio.Task[None]] = set()
        self._copier = ArtifactCopier(
            store=store,
            session=session,
            replicas=self._replicas,
            quota=self._quota,
            work_dir=work_dir,
            region=region,
            limits=limits,
            clock=clock,
            faults=self._faults,
        )

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
            outcome, transition = await self._apply_event(package, current, item)
            outcomes.append(outcome)
            if transition is not None:
                if transition.delete is not None:
                    deletes.append(transition.delete)
                current = transition.state
            elif isinstance(outcome, Applied):
                redelivered = True  # this very delivery was applied already
        changed = current is not old
        if changed or redelivered:
            if not self._still_owned(items):
                # Revoked while fetching: the new owner writes this package (zips fetched
                # meanwhile are content addressed and harmless).
                self._cache.pop(package, None)
                return [Abandoned(package) for _ in items]
            previous = old if existed else None
            await self._write(package, current, previous, redelivered, unacked)
        for sha256 in deletes:
            # After the state: a crash before this leaves an orphan zip, never a
            # version whose zip is gone.
            await self._delete_artifact(sha256)
        return outcomes

    async def _apply_event(
        self, package: str, state: PackageState, item: Verified
    ) -> tuple[Outcome, Transition | None]:
        """What ``item`` does to ``state`` (on a full mirror, its zip fetched first, or the
        fetch parked): its outcome, and the transition to take. None when it is refused, or
        when this very delivery was applied already (an ``Applied`` that changed nothing)."""
        event = item.event
        kind = type(event).__name__
        try:
            transition = apply_event(
                state,
                event,
                digest=item.digest,
                position=item.position,
                signed_by=item.signed_by,
            )
        except RejectedError as exc:
            return Refused(package, exc), None
        if transition is None:
            return Applied(package, kind, event.sequence, False, False), None
        fetched = parked = False
        wanted = zip_to_fetch(event, transition, mirrors_artifacts=self.policy.mirrors_artifacts)
        if wanted is not None:
            try:
                fetched = await self._ensure_artifact(
                    package, wanted.version, wanted.artifact, item.position
                )
            except Exception as exc:
                verdict = on_fetch_failure(exc)
                if verdict is None:
                    raise  # transient or unexpected: _apply_package retries the package
                if isinstance(verdict, Refuse):
                    return Refused(package, verdict.error), None
                await self._parked.park(package, wanted.version, wanted.artifact, verdict.error)
                parked = True
        return Applied(package, kind, event.sequence, fetched, True, parked), transition

    async def _write(
        self,
        package: str,
        state: PackageState,
        previous: PackageState | None,
        redelivered: bool,
        unacked: list[Awaitable[None]],
    ) -> None:
        """Write ``state`` and its p2 documents through the view; its acknowledgement joins
        ``unacked``."""
        written = await self.view.write(state, previous=previous, redelivered=redelivered)
        self._faults.reached(AFTER_METADATA_WRITE)
        unacked.append(written.acked)
        self.written["states"] += int(written.state_written)
        self.written["documents"] += written.documents_written
        if written.superseded:
            self._cache.pop(package, None)
        else:
            self._remember(state)

    async def _delete_artifact(self, sha256: str) -> None:
        """Delete a zip, the record of where it came from, and its parked fetch."""
        await asyncio.to_thread(self._store.delete, layout.artifact_key(sha256))
        await asyncio.to_thread(self._store.delete, layout.provenance_key(sha256))
        for key in layout.pending_keys(sha256):
            await asyncio.to_thread(self._store.delete, key)
        self._quota.deleted(sha256)

    def _remember(self, state: PackageState) -> None:
        self._cache[state.package] = state
        self._cache.move_to_end(state.package)
        while len(self._cache) > STATE_CACHE_SIZE:
            self._cache.popitem(last=False)

    # Artifacts ---------------------------------------------------------------

    async def _ensure_artifact(
        self, package: str, version: str, artifact: Artifact, position: str
    ) -> bool:
        """Make sure the region holds the zip of the release at ``position`` in the log (a
        peer's release has its origin at the peer); True when it was fetched now.

        Raises ``ArtifactUnreachableError`` (no source delivered; park it),
        ``ArtifactMismatchError`` (every source had other bytes) or
        ``WrongPackageError``.
        """
        key = layout.artifact_key(artifact.sha256)
        existing = await asyncio.to_thread(self._store.stat, key)
        fetched = False
        if existing is None or existing.size != artifact.size:
            fetched = await self._copier.copy(package, artifact, position, self.policy)
        if fetched or existing is not None:
            await self._announce_replica(package, version, artifact)
        return fetched

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

    def store_bytes(self) -> int | None:
        """Bytes of zips the region holds, as this worker last counted (None: not counted)."""
        return self._quota.total()

    # Parked fetches ----------------------------------------------------------

    def request_refetch(self, package: str, version: str, record: VersionRecord) -> None:
        """A client asked for a zip this full mirror does not hold (pending or evicted):
        fetch it again soon. Called from the HTTP handlers, in the event loop."""
        if not self.policy.mirrors_artifacts or not self.policy.serves(package):
            return
        artifact = Artifact(
            sha256=record.sha256, sha1=record.sha1, size=record.size, origin_url=record.origin_url
        )
        task = asyncio.get_running_loop().create_task(
            self._parked.request(package, version, artifact)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def pending_count(self) -> int:
        return await self._parked.count()

    async def retry_pending(self) -> PendingReport:
        """Try the parked fetches that are due; each success is stored and announced."""
        return await self._parked.retry_due(self.view.load, self._ensure_artifact)

    async def close(self) -> None:
        self._copier.close()
        for task in list(self._background):
            task.cancel()
