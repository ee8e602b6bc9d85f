"""The intake: a worker reads its region's releases in batches, in the region's group.

The intake reads the region's releases in batches with its own confluent-kafka
consumer in the region's group (``GroupConsumer``, polled in a thread of its
own; ADR 6: Faust's consumer cost more than the rest of the work together).
Each record is verified (a large batch in threads), the batch goes to
``ReleaseReplicator.start_batch`` (which writes each package once per batch), a
refused record goes to the rejected topic with its reason, and the batch's
offsets are committed once its view records are acknowledged: meanwhile the
next batch is polled and verified (ADR 7, revised). The group's callbacks run
inside the poll, so a partition is never revoked while a batch of it is being
applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from connectors.kafka_group_consumer import ConsumedRecord, GroupConsumer
from connectors.metrics import EVENTS
from schemas.errors import BrokerUnavailableError, RejectedError, TransientError
from schemas.event_verification import RefreshTrust, WaitForRoot, on_rejection
from streams.faults import BEFORE_OFFSET_COMMIT, FaultPoints
from streams.health import Vitals
from streams.node_settings import NodeSettings
from streams.outcomes import Abandoned, Applied, Outcome, Refused, Skipped, Verified
from streams.rejections import RecordRejection
from streams.replication import ReleaseReplicator

# The node's logger name, as when this lived in streams/node.py: operators, tests and
# benchmarks wait for its lines by it ("INFO streams.node: assigned partitions").
log = logging.getLogger("streams.node")
T = TypeVar("T")

#: How long the broker may hold the intake's fetch that finds nothing new: a broker that
#: does not answer a waiting fetch as soon as a record arrives (the embedded Tansu,
#: measured) delays a release by up to that long. 100 ms costs an idle worker ten small
#: requests a second.
FETCH_WAIT_SECONDS = 0.1
#: How long a clean stop waits for the batch under way before the consumer leaves.
INTAKE_STOP_SECONDS = 30.0
#: Threads verifying a large batch while the previous one lands. Ed25519 (PyNaCl) runs
#: without the GIL, so the signatures of one batch are checked on another core while the
#: event loop holds the previous batch's view (measured: about 70 of the 330 µs a release
#: costs the worker; the decoding around it still takes turns on the GIL).
VERIFY_THREADS = 2
#: Batches smaller than this are verified in the event loop: a thread hop would cost more
#: than it saves, and a live region's batches are small.
VERIFY_IN_THREADS_FROM = 64
MAX_BACKOFF_SECONDS = 60.0
#: Batches up to this size log each record; larger ones log a summary line.
PER_RECORD_LOG_MAX = 50
#: A refusal for a key the root does not delegate (or too few signatures) reads the trust
#: topic again before it is final, unless another refusal read it this recently: a read
#: costs about 100 ms, so a flood of such records, or a replay of the log after a rotation,
#: would cost that much each (measured: a directory reading 1,800 releases signed before a
#: rotation spent 110 ms on each, and was not ready in a minute). The price: a release
#: signed with a key delegated by a rotation published within that second of such a refusal
#: is refused (recorded with its reason; publish it again).
TRUST_REREAD_AFTER_SECONDS = 1.0
#: While the root in force is expired, how long to wait before looking for a newer one.
FROZEN_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class _Flight:
    """A batch applied whose view records may not all be acknowledged yet."""

    records: list[ConsumedRecord]
    verified: list[tuple[ConsumedRecord, Verified]]
    outcomes: list[Outcome]
    acknowledged: Awaitable[None]
    started: float


class ReleaseIntake:
    """One worker's intake (see the module docstring): ``run`` reads until ``stop``.

    It is given what it asks of its node: the settings, the fault points, the vitals it
    keeps for /health and /ready, the clock, how to read the region's view to its end
    (before applying after an assignment), how to refresh the trust root and how to
    record a refused record. ``held`` is the partitions the group gave it, which the
    node's ownership check reads.
    """

    def __init__(
        self,
        settings: NodeSettings,
        *,
        faults: FaultPoints,
        vitals: Vitals,
        clock: Callable[[], datetime],
        catch_up_view: Callable[[], Awaitable[None]],
        refresh_trust: Callable[[], Awaitable[None]],
        reject: RecordRejection,
    ) -> None:
        self._settings = settings
        self._faults = faults
        self._vitals = vitals
        self._clock = clock
        self._catch_up_view = catch_up_view
        self._refresh_trust = refresh_trust
        self._reject = reject
        self._verifiers = ThreadPoolExecutor(
            max_workers=VERIFY_THREADS, thread_name_prefix="verify"
        )
        #: When a refused record last made the worker read the trust topic (``time.monotonic``).
        self._trust_reread_at = -math.inf
        # Set at every assignment: before applying anything, read the view to its end.
        self._view_stale = True
        #: The partitions of the releases topic this worker holds (set in the intake's thread).
        self._held: frozenset[int] = frozenset()
        self._revoked_lock = threading.Lock()
        self._revoked_partitions: set[int] = set()
        self._started = False
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        #: The consumer that asked to join at start-up, until the intake takes it.
        self._joined: GroupConsumer | None = None

    @property
    def held(self) -> frozenset[int]:
        """The partitions of the releases topic this worker holds now."""
        return self._held

    def join_early(self) -> None:
        """Ask to join the region's group now: the broker's join wait (about 3 s on Tansu)
        then overlaps the rest of the start-up (the registration, the app's start) instead
        of following it (issue 15). The intake takes this consumer; without it (the broker
        did not answer) the intake makes its own."""
        consumer = self._group_consumer()
        try:
            consumer.join()
        except BrokerUnavailableError as exc:
            log.warning("%s; the intake joins once it starts", exc)
            consumer.close()
            return
        self._joined = consumer

    async def run(self, replicator: ReleaseReplicator) -> None:
        """The region's releases, batch after batch, until the worker stops (``stop``),
        applied through ``replicator``; see the module docstring. Whatever goes wrong, the
        worker reads on from its last commit."""
        self._started = True
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake")
        failures = 0
        try:
            while not self._stopping.is_set():
                consumer, self._joined = self._joined, None
                if consumer is None:
                    consumer = await self._in_thread(executor, self._group_consumer)
                try:
                    await self._consume(executor, consumer, replicator)
                    return
                except Exception as exc:  # nothing it raises may stop the worker
                    failures += 1
                    delay = min(0.5 * 2.0 ** min(failures, 10), MAX_BACKOFF_SECONDS)
                    log.warning(
                        "reading %s: %s: %s; reading again from the last commit in %.1f s",
                        self._settings.topics.releases,
                        type(exc).__name__,
                        exc,
                        delay,
                        exc_info=not isinstance(exc, TransientError),
                    )
                    await self._pause(delay)
                finally:
                    # A new consumer starts from the committed offsets: what was handled and
                    # not committed is read again (harmless: effects are idempotent).
                    await asyncio.shield(self._in_thread(executor, consumer.close))
                    self._held = frozenset()
        finally:
            executor.shutdown(wait=False)
            self._verifiers.shutdown(wait=False)
            self._done.set()

    def _group_consumer(self) -> GroupConsumer:
        settings = self._settings
        return GroupConsumer(
            settings.broker_url,
            settings.topics.releases,
            settings.group_id,
            session_timeout=settings.session_timeout,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            fetch_wait=FETCH_WAIT_SECONDS,
        )

    async def _consume(
        self, executor: ThreadPoolExecutor, consumer: GroupConsumer, replicator: ReleaseReplicator
    ) -> None:
        """Poll, verify, land the previous batch, commit, apply, until the worker stops.

        The poll runs in ``executor``'s thread and so do the group's callbacks, inside it:
        a partition is never revoked while a batch of it is being applied (only a member
        the group already gave up on, a stopped process, can find its commit refused: its
        records are read again). Batches overlap by one step: a batch's view records are
        acknowledged while the next batch is polled and verified, and its offsets are
        committed only once they are; a clean stop lands the batch in flight first."""
        settings = self._settings
        uncommitted: dict[int, int] = {}
        flight: _Flight | None = None

        async def land() -> None:
            nonlocal flight
            if flight is not None:
                landing, flight = flight, None
                await self._land(landing, uncommitted, replicator)

        async def settle() -> None:  # before a wait: nothing left in flight or uncommitted
            await land()
            if uncommitted:
                await self._commit(executor, consumer, uncommitted)

        while not self._stopping.is_set():
            try:
                records = await self._in_thread(
                    executor, consumer.poll, settings.batch_size, settings.batch_within
                )
            except BrokerUnavailableError as exc:
                # librdkafka reconnects by itself: keep the consumer, wait, poll again.
                log.warning("%s; polling again in 1 s", exc)
                await settle()
                await self._pause(1.0)
                continue
            for partition in self._take_revocations(replicator):
                uncommitted.pop(partition, None)
            # The batch is verified (in threads when large) while the previous one lands.
            threaded = self._verify_in_threads(replicator, records)
            await settle()
            verdicts: list[Verified | None] = (
                [verdict for chunk in await threaded for verdict in chunk]
                if threaded is not None
                else [None] * len(records)
            )
            verified = await self._verify_batch(
                replicator, records, verdicts, before_waiting=settle
            )
            if records:
                flight = await self._apply_batch(replicator, records, verified)
        await settle()

    async def _commit(
        self, executor: ThreadPoolExecutor, consumer: GroupConsumer, uncommitted: dict[int, int]
    ) -> None:
        offsets = dict(uncommitted)
        try:
            await self._in_thread(executor, consumer.commit, offsets)
        except BrokerUnavailableError as exc:
            # Kept: committed with the next batch; a restart meanwhile reads them
            # again, which changes nothing.
            log.warning("offsets not committed yet: %s", exc)
            return
        for partition, offset in offsets.items():
            if uncommitted.get(partition) == offset:
                del uncommitted[partition]

    @staticmethod
    async def _in_thread(
        executor: ThreadPoolExecutor, function: Callable[..., T], *args: object
    ) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _assigned(self, partitions: list[int]) -> None:
        """The group gave this worker ``partitions`` (in the intake's thread, inside a poll).

        Packages of newly assigned partitions were last written by other workers: their
        view records must be read before anything is applied on top of them."""
        self._held = frozenset(partitions)
        self._view_stale = True
        self._vitals.assigned_at = self._clock()
        log.info("assigned partitions %s of %s", partitions, self._settings.topics.releases)

    def _revoked(self, partitions: list[int]) -> None:
        """The group took ``partitions`` away (in the intake's thread, inside a poll)."""
        self._held = self._held.difference(partitions)
        with self._revoked_lock:
            self._revoked_partitions.update(partitions)
        log.info("revoked partitions %s of %s", partitions, self._settings.topics.releases)

    def _take_revocations(self, replicator: ReleaseReplicator) -> set[int]:
        with self._revoked_lock:
            revoked, self._revoked_partitions = self._revoked_partitions, set()
        if revoked:
            # Another worker may now write newer states of these packages.
            replicator.forget_cached_states()
        return revoked

    async def stop(self) -> None:
        """Stop reading after the batch under way (then the consumer leaves the group, and
        its partitions go to the other workers at once)."""
        self._stopping.set()
        if not self._started:
            return  # never started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), INTAKE_STOP_SECONDS)

    async def close(self) -> None:
        """Close the consumer that joined at start-up, if the intake never took it."""
        if self._joined is not None:  # the intake never started
            await asyncio.to_thread(self._joined.close)
            self._joined = None

    def _verify_in_threads(
        self, replicator: ReleaseReplicator, records: list[ConsumedRecord]
    ) -> asyncio.Future[list[list[Verified | None]]] | None:
        """Start verifying a large batch in ``VERIFY_THREADS`` threads: per chunk, each
        record's verdict, or None where it failed (``_verify_batch`` decides what to do about
        it). None for a small batch: it is verified in the event loop."""
        if len(records) < VERIFY_IN_THREADS_FROM:
            return None

        def verify(chunk: list[ConsumedRecord]) -> list[Verified | None]:
            verdicts: list[Verified | None] = []
            for record in chunk:
                try:
                    verdicts.append(replicator.verify(record.value, record.position))
                except Exception:  # decided again, in order, in the event loop
                    verdicts.append(None)
            return verdicts

        loop = asyncio.get_running_loop()
        size = -(-len(records) // VERIFY_THREADS)
        chunks = [records[i : i + size] for i in range(0, len(records), size)]
        return asyncio.gather(
            *(loop.run_in_executor(self._verifiers, verify, chunk) for chunk in chunks)
        )

    async def _verify_batch(
        self,
        replicator: ReleaseReplicator,
        records: list[ConsumedRecord],
        verdicts: list[Verified | None],
        *,
        before_waiting: Callable[[], Awaitable[None]],
    ) -> list[tuple[ConsumedRecord, Verified]]:
        """The records that verify, each with its verdict; the others are recorded as
        rejected. ``verdicts`` are those found in threads: from the first record without
        one, the rest is verified here in order, as a refusal may refresh the trust root
        the records after it are judged by. ``before_waiting`` runs before verification
        waits for a trust root."""
        verified: list[tuple[ConsumedRecord, Verified]] = []
        in_order = False
        for record, verdict in zip(records, verdicts, strict=True):
            in_order = in_order or verdict is None
            item = await self._verify(replicator, record, before_waiting) if in_order else verdict
            if item is not None:
                verified.append((record, item))
        return verified

    async def _apply_batch(
        self,
        replicator: ReleaseReplicator,
        records: list[ConsumedRecord],
        verified: list[tuple[ConsumedRecord, Verified]],
    ) -> _Flight:
        """Apply a verified batch; it lands (``_land``) once its view records are
        acknowledged."""
        self._vitals.batch_since = self._clock()
        if self._view_stale:
            # After an assignment, read the region's view topic to its end first: a
            # package applied on a stale view would lose what its last owner wrote.
            self._view_stale = False
            await self._catch_up_view()
        started = time.monotonic()
        outcomes, acknowledged = await replicator.start_batch([item for _, item in verified])
        return _Flight(records, verified, outcomes, acknowledged, started)

    async def _land(
        self, flight: _Flight, uncommitted: dict[int, int], replicator: ReleaseReplicator
    ) -> None:
        """Wait for ``flight``'s view records, then mark its offsets to be committed (the
        records of a partition revoked meanwhile are left to the partition's new owner)."""
        await flight.acknowledged
        abandoned: set[int] = set()
        # Each record is logged in a small batch (what an operator watches live); a large
        # one (a bootstrap, a catch-up) is summed up in one line.
        each = len(flight.records) <= PER_RECORD_LOG_MAX
        for (record, item), outcome in zip(flight.verified, flight.outcomes, strict=True):
            if isinstance(outcome, Refused):
                await self._record_rejection(record, outcome.reason, outcome.detail)
            elif isinstance(outcome, Skipped):
                log.debug("%s: %s is outside this region's policy", item.position, outcome.package)
            elif isinstance(outcome, Applied):
                _log_applied(item, outcome, logging.INFO if each else logging.DEBUG)
            elif isinstance(outcome, Abandoned):
                abandoned.add(id(record))
                log.info("%s: partition revoked meanwhile; left to its new owner", item.position)
        self._count(flight, replicator)
        for record in flight.records:
            if id(record) not in abandoned and record.partition in self._held:
                uncommitted[record.partition] = max(
                    uncommitted.get(record.partition, 0), record.offset + 1
                )
        self._vitals.batch_since = None
        self._vitals.progressed_at = self._clock()
        self._faults.reached(BEFORE_OFFSET_COMMIT)

    def _count(self, flight: _Flight, replicator: ReleaseReplicator) -> None:
        kinds = Counter(type(outcome).__name__ for outcome in flight.outcomes)
        region = self._settings.region
        for kind, outcome_count in kinds.items():
            EVENTS.labels(region, kind.lower()).inc(outcome_count)
        refused = len(flight.records) - len(flight.verified)
        if refused:
            EVENTS.labels(region, "refused").inc(refused)
        log.info(
            "batch of %d records in %.0f ms: %d applied, %d refused, %d skipped, %d abandoned; "
            "written since start: %d states, %d p2 documents",
            len(flight.records),
            (time.monotonic() - flight.started) * 1000,
            kinds["Applied"],
            kinds["Refused"] + refused,
            kinds["Skipped"],
            kinds["Abandoned"],
            replicator.written["states"],
            replicator.written["documents"],
        )

    async def _verify(
        self,
        replicator: ReleaseReplicator,
        event: ConsumedRecord,
        before_waiting: Callable[[], Awaitable[None]],
    ) -> Verified | None:
        """The verified record, or None when it was refused (and recorded as such)."""
        position = event.position
        # Read again just now for another refused record: not again for this one.
        refreshed = time.monotonic() - self._trust_reread_at < TRUST_REREAD_AFTER_SECONDS
        while True:
            try:
                return replicator.verify(event.value, position)
            except Exception as exc:
                action = on_rejection(exc, refreshed=refreshed)
                if not isinstance(exc, RejectedError):
                    log.exception("%s: verification failed unexpectedly", position)
            if isinstance(action, WaitForRoot):
                log.error("%s: %s; waiting", position, action.detail)
                await before_waiting()
                await self._refresh_trust()
                await asyncio.sleep(FROZEN_RETRY_SECONDS)
            elif isinstance(action, RefreshTrust):
                refreshed = True
                await self._refresh_trust()
                self._trust_reread_at = time.monotonic()
            else:
                await self._record_rejection(event, action.reason, action.detail)
                return None

    async def _record_rejection(self, event: ConsumedRecord, reason: str, detail: str) -> None:
        await self._reject(
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
            key=event.key.decode("utf-8", "replace") if event.key is not None else None,
            value=event.value,
            reason=reason,
            detail=detail,
        )


def _log_applied(item: Verified, applied: Applied, level: int) -> None:
    if not applied.changed:
        what = "already applied"
    elif applied.parked:
        what = "applied, zip unreachable: parked for retry"
    elif applied.fetched:
        what = "applied, artifact fetched"
    else:
        what = "applied"
    log.log(
        level,
        "%s: %s %s #%d %s",
        item.position,
        applied.package,
        applied.kind,
        applied.sequence,
        what,
    )
