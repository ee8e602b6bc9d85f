"""The stream processing of a regional node: one consumer group per region.

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

Faust runs the app around it: the producer, the timers, the clean stop. Beside
the intake: a follower of the replicas topic (every worker needs it whole) and
one of the region's partition of the downloads topic (``schemas.partitioning``),
a timer that retries parked fetches, one that produces the region's download
counts to that partition, and one that follows trust root rotations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import faust
from faust.app.base import BootStrategy

from connectors.kafka_followers import TopicFollower
from connectors.kafka_group_consumer import ConsumedRecord, GroupConsumer
from connectors.kafka_producers import AsyncProducer, EventProducer
from connectors.kafka_topics import topic_partitions
from connectors.metrics import (
    EVENTS,
    NODE_HEALTHY,
    NODE_READY,
)
from connectors.state_store import PackageStates
from connectors.store import open_store
from connectors.view_store import LocalView, ViewFollower
from schemas.errors import (
    BrokerUnavailableError,
    RejectedError,
    TransientError,
)
from schemas.event_verification import RefreshTrust, WaitForRoot, on_rejection
from schemas.events import ReplicaAvailable
from schemas.federation import NodeStatus
from schemas.package_state import StateReader, render_documents
from schemas.view import PackageView
from streams.artifacts import DownloadTally, HotStats, ReplicaRegistry
from streams.dead_letter import DeadLetterFile
from streams.faults import BEFORE_OFFSET_COMMIT, REFUSE_REJECTION, FaultPoints
from streams.health import Verdict, Vitals, liveness, readiness
from streams.node_settings import (
    NodeSettings,
    faust_broker,
    own_partition,
    region_downloads_follower,
)
from streams.outcomes import Abandoned, Applied, Outcome, Refused, Skipped, Verified
from streams.peering import PeerFollower, peer_group
from streams.policy import peer_of_position
from streams.region_view import RegionView
from streams.rejections import DEAD_LETTER_RETRY_SECONDS, Rejections
from streams.replication import ReleaseReplicator
from streams.sinks import Record, Sink, TopicSink, deliver
from streams.sync import StatusReporter, registration_of
from streams.trust_keeper import RefusedRoot, TrustKeeper

log = logging.getLogger(__name__)
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


class _WorkerBoot(BootStrategy):
    """Faust runs the worker's app, timers and producer; the releases are read by the
    intake's own consumer (ADR 7), so Faust starts no consumer, no conductor and no table
    manager (whose recovery would wait for a rebalance that never comes)."""

    enable_kafka_consumer = False

    def tables(self) -> list[Any]:
        return []


class _WorkerApp(faust.App):
    BootStrategy = _WorkerBoot


MAX_BACKOFF_SECONDS = 60.0
#: Batches up to this size log each record; larger ones log a summary line.
PER_RECORD_LOG_MAX = 50
#: How often a node looks for trust root rotations on the trust topic.
TRUST_REFRESH_SECONDS = 10.0
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
#: How long one write of a rejection may take (``streams.rejections`` says how many).
REJECTION_ATTEMPT_SECONDS = 10.0
#: How long a worker waits for its view to catch up with the region's after an assignment
#: before it says so in the log (then it waits again: applying on a stale view is wrong).
VIEW_CATCH_UP_WARNING_SECONDS = 30.0


@dataclass(frozen=True)
class _Flight:
    """A batch applied whose view records may not all be acknowledged yet."""

    records: list[ConsumedRecord]
    verified: list[tuple[ConsumedRecord, Verified]]
    outcomes: list[Outcome]
    acknowledged: Awaitable[None]
    started: float


class NodeStream:
    """Builds the Faust app of one region and holds what its agent needs at run time."""

    # Long because it wires the worker's parts from its settings, each from the ones before it.
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.faults = FaultPoints(settings.fault)
        self._skew = settings.clock_skew
        self._verifiers = ThreadPoolExecutor(
            max_workers=VERIFY_THREADS, thread_name_prefix="verify"
        )
        #: When a refused record last made the worker read the trust topic (``time.monotonic``).
        self._trust_reread_at = -math.inf
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        broker, credentials = faust_broker(settings.broker_url)
        self.app = _WorkerApp(
            settings.group_id,
            broker=broker,
            broker_credentials=credentials,
            datadir=str(settings.data_dir / "faust"),
            store="memory://",
            web_enabled=False,
            # Topics are created by the CLI with their partition counts; Faust must not guess.
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
        )
        self.replica_sink: Sink = TopicSink(self._raw_topic(settings.topics.replicas))
        self.downloads_sink: Sink = TopicSink(self._raw_topic(settings.topics.downloads))
        self.store = open_store(settings.store, settings.bucket)
        self.trust = TrustKeeper(
            settings.pinned_root,
            store=self.store,
            broker_url=settings.broker_url,
            topic=settings.topics.trust,
        )
        view_topic = settings.topics.view(settings.region)
        self.view_topic = self._raw_topic(view_topic)
        view_dir = settings.view_dir or settings.data_dir / "view"
        self.docroot: Path | None = None
        self.local_view: LocalView | None = None
        self.view_follower: ViewFollower | None = None
        self.region_view: RegionView | None = None
        render = functools.partial(render_documents, public_url=settings.public_url)
        #: What the node applies on and serves: its local view, or the bucket.
        self.states: StateReader
        if settings.view_in_topic:
            self.docroot = view_dir / "docroot"
            self.local_view = LocalView(
                view_dir / "view.sqlite3", docroot=self.docroot, files_in_process=True
            )
            self.states = self.local_view
            self.view_follower = ViewFollower(
                settings.broker_url, view_topic, self.local_view, on_older=self._on_older_view
            )
            self.region_view = RegionView(
                self.local_view,
                render=render,
                send=self._send_view,
                written_by=settings.worker_name,
                clock=self.now,
                faults=self.faults,
            )
        else:
            self.states = PackageStates(self.store, render=render)
        # Set at every assignment: before applying anything, read the view to its end.
        self._view_stale = True
        self._marker_producer: EventProducer | None = None
        #: The view records' producer (confluent-kafka: a tenth of Faust's cost a record).
        self._view_producer: AsyncProducer | None = None
        self._view_topic_name = view_topic
        self._loop: asyncio.AbstractEventLoop | None = None
        self.replicas = ReplicaRegistry(settings.region)
        self.hot = HotStats(settings.region)
        self.tally = DownloadTally(settings.region, settings.region, self.now())
        #: Follows the region's partition of the downloads topic only.
        self.downloads_follower = region_downloads_follower(
            settings.broker_url, settings.topics.downloads, settings.region, self.hot.add_record
        )
        self._followers = [
            TopicFollower(settings.broker_url, settings.topics.replicas, self.replicas.add_record),
            self.downloads_follower,
        ]
        #: The downloads topic's partition of this region, looked up at the first flush.
        self._downloads_partition: int | None = None
        self._replicator: ReleaseReplicator | None = None
        self._session: aiohttp.ClientSession | None = None
        # Trust records refused before the producer runs, recorded on the first refresh.
        self._unrecorded: list[RefusedRoot] = []
        self.rejections = Rejections(
            TopicSink(
                self._raw_topic(settings.topics.rejected),
                attempt_seconds=REJECTION_ATTEMPT_SECONDS,
                before_send=lambda: self.faults.refuse(REFUSE_REJECTION),
            ),
            DeadLetterFile(settings.dead_letter_path),
            region=settings.region,
            clock=self.now,
        )
        #: What /health and /ready judge (streams/health.py).
        self.vitals = Vitals()
        # Judged when scraped, by the rules /health and /ready answer with.
        NODE_HEALTHY.labels(settings.region).set_function(lambda: float(self.health().ok))
        NODE_READY.labels(settings.region).set_function(lambda: float(self.ready().ok))
        #: The partitions of the releases topic this worker holds (set in the intake's thread).
        self._held: frozenset[int] = frozenset()
        self._revoked_lock = threading.Lock()
        self._revoked_partitions: set[int] = set()
        self._stopping = asyncio.Event()
        self._intake_done = asyncio.Event()
        #: The consumer that asked to join at start-up, until the intake takes it.
        self._joined: GroupConsumer | None = None
        self.app.task(self._intake)
        self.app.timer(TRUST_REFRESH_SECONDS)(self._refresh_trust)
        self.app.timer(settings.downloads_interval)(self._flush_downloads)
        self.app.timer(DEAD_LETTER_RETRY_SECONDS)(self._resend_dead_letters)
        if settings.policy.mirrors_artifacts:
            self.app.timer(settings.pending_interval)(self._retry_pending)
        self._peer_followers: list[PeerFollower] = []
        if settings.peers:
            self.app.task(self._follow_peers)
        self.reporter: StatusReporter | None = None
        if settings.node_key is not None:
            self.reporter = StatusReporter(
                key=settings.node_key,
                registration=registration_of(
                    settings.node_key, settings.region, settings.public_url, settings.policy
                ),
                broker_url=settings.broker_url,
                topics=settings.topics,
                group=settings.group_id,
                store=self.store,
                trust_root=lambda: self.trust.root,
                rejected_total=lambda: self.rejections.total,
                clock=self.now,
            )
            self.app.timer(settings.status_interval)(self._heartbeat)
            # Sent by the app's stop, which a clean stop of the worker runs: SIGTERM and
            # SIGINT alike (mode's signal handlers), before its producer stops.
            self.app.on_before_shutdown.connect(self._say_goodbye)  # type: ignore[arg-type]
        else:
            self.app.on_before_shutdown.connect(self._stop_reading)  # type: ignore[arg-type]

    def now(self) -> datetime:
        """This node's wall clock (skewed only by the fault harness)."""
        return datetime.now(UTC) + self._skew

    def _raw_topic(self, name: str) -> faust.TopicT:
        return self.app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    def prepare(self) -> None:
        """Blocking start-up work: the bucket, the trust root, the followers, then the group's
        join started."""
        self.store.ensure_bucket()
        self.trust.load()
        for refused in self.trust.refresh():
            log.warning("trust topic offset %d refused: %s", refused.offset, refused.error)
            self._unrecorded.append(refused)
        root = self.trust.root
        log.info("trust root v%d in force, expires %s", root.version, root.expires.isoformat())
        for follower in self._followers:
            follower.start()
        if self.view_follower is not None:
            self.view_follower.start()
            # Serve nothing older than what the region served before this worker
            # (re)started.
            self._read_view_to_end(timeout=600.0)
            self._started_view_producer()
        self.vitals.view_caught_up = True
        self.vitals.unrecorded_rejections = self.rejections.unrecorded
        # Not before the view is read: that read takes tens of seconds in a large region,
        # and a member given partitions meanwhile would hold them from the workers that
        # could apply them.
        self._join_early()
        if self.reporter is not None:
            self.reporter.register()

    def _join_early(self) -> None:
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

    async def _heartbeat(self) -> None:
        if self.reporter is not None:
            status = await asyncio.to_thread(self.reporter.report)
            self._observe(status, self.reporter.last_error)

    def _observe(self, status: NodeStatus | None, error: Exception | None) -> None:
        """What a heartbeat measured, for /health and /ready: the lag on the partitions
        this worker holds, and whether the broker and the store answered."""
        now = self.now()
        vitals = self.vitals
        if status is not None:
            held, releases = self._held, self.settings.topics.releases
            vitals.behind = sum(
                p.behind for p in status.partitions if p.topic == releases and p.partition in held
            )
            vitals.broker_answered_at = vitals.store_answered_at = now
            vitals.broker_error = vitals.store_error = None
        elif isinstance(error, BrokerUnavailableError):
            vitals.broker_error = str(error)
        elif error is not None:
            vitals.store_error = str(error)

    def health(self) -> Verdict:
        """Liveness (/health)."""
        return liveness(self._vitals_now(), self.now(), self.settings.health)

    def ready(self) -> Verdict:
        """Readiness (/ready)."""
        return readiness(self._vitals_now(), self.now(), self.settings.health)

    def _vitals_now(self) -> Vitals:
        self.vitals.root_expires = self.trust.root.expires  # a rotation may have come
        return self.vitals

    async def _stop_reading(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self._stop_intake()

    async def _say_goodbye(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        """The signed ``stopped`` heartbeat of a worker that stops cleanly, once it has
        stopped reading; bounded (``StatusReporter.goodbye``), so a broker that is down does
        not hold up the stop."""
        await self._stop_intake()
        if self.reporter is not None:
            await asyncio.to_thread(self.reporter.goodbye)

    def _owns(self, position: str) -> bool:
        """Whether this worker still owns the partition of a record at ``position``."""
        if peer_of_position(position) is not None:
            # A peer's record: its partition is held in the region's group on the peer's
            # cluster, and its follower commits nothing it did not apply.
            return True
        topic, partition, _ = position.rsplit(":", 2)
        return topic == self.settings.topics.releases and int(partition) in self._held

    async def _send_view(self, key: bytes, value: bytes) -> Any:
        return self._started_view_producer().send(self._view_topic_name, key, value)

    def _started_view_producer(self) -> AsyncProducer:
        """The view records' producer, started at the latest here; ``prepare`` starts it
        before the first batch: an idempotent producer's first record waits about half a
        second for its producer id (measured on Tansu), which the first releases would."""
        if self._view_producer is None:
            self._view_producer = AsyncProducer(self.settings.broker_url, name="view-producer")
        return self._view_producer

    async def _catch_up_view(self) -> None:
        """Before applying after an assignment, read the region's view topic to its end (the
        follower's marker barrier, exact on any broker). Nothing is applied until then: a
        package applied on a stale view would lose what its last owner wrote."""
        if not self._view_stale or self.view_follower is None:
            return
        self._view_stale = False
        while True:
            try:
                await asyncio.to_thread(self._read_view_to_end, VIEW_CATCH_UP_WARNING_SECONDS)
                return
            except TransientError as exc:
                log.warning("%s; nothing is applied until it is", exc)

    def _read_view_to_end(self, timeout: float) -> None:
        """Block until the view follower has read the region's view topic to its end.

        Raises ``BrokerUnavailableError`` after ``timeout`` seconds."""
        assert self.view_follower is not None
        if self._marker_producer is None:
            # Kept for every later catch-up: an idempotent producer's first record waits
            # about half a second for its producer id (measured on Tansu), once per rebalance
            # otherwise.
            self._marker_producer = EventProducer(self.settings.broker_url)
        self.view_follower.catch_up(
            self._marker_producer, self.settings.worker_name, timeout=timeout
        )

    def _on_older_view(self, incoming: PackageView, held: PackageView) -> None:
        """The follower read a record older than the view this worker holds (in its thread).

        Compaction keeps the last-written record of a key: a stale worker's late record
        would outlive the newer one. The package's owner writes its own again."""
        loop = self._loop
        region_view = self.region_view
        if region_view is None or loop is None or incoming.written_by == self.settings.worker_name:
            return  # our own older record: our newer one follows it in the same partition
        if peer_of_position(held.position) is not None or not self._owns(held.position):
            return
        log.info(
            "%s: an older view record (#%d by %s) landed after #%d; writing ours again",
            held.package,
            incoming.sequence,
            incoming.written_by,
            held.sequence,
        )
        asyncio.run_coroutine_threadsafe(region_view.resend(held.package), loop)

    @property
    def replicator(self) -> ReleaseReplicator:
        """The replicator; built on first use, inside the running event loop."""
        if self._replicator is None:
            self._session = aiohttp.ClientSession()
            work_dir = self.settings.data_dir / "downloads"
            work_dir.mkdir(parents=True, exist_ok=True)
            self._replicator = ReleaseReplicator(
                store=self.store,
                session=self._session,
                root=lambda: self.trust.root,
                public_url=self.settings.public_url,
                work_dir=work_dir,
                region=self.settings.region,
                policy=self.settings.policy,
                limits=self.settings.fetch_limits,
                max_artifact_size=self.settings.max_artifact_size,
                replicas=self.replicas,
                hot=self.hot,
                announce=self._announce,
                pending_first_delay=timedelta(seconds=self.settings.pending_interval),
                owns=self._owns,
                faults=self.faults,
                clock=self.now,
                view=self.region_view,
            )
        return self._replicator

    async def _refresh_trust(self) -> None:
        refused, self._unrecorded = self._unrecorded, []
        try:
            refused += await asyncio.to_thread(self.trust.refresh)
        except TransientError as exc:
            log.warning("trust topic not read: %s", exc)
        for record in refused:
            await self._send_rejection(
                topic=self.settings.topics.trust,
                partition=0,
                offset=record.offset,
                key="trust-root",
                value=record.value,
                reason=record.error.reason,
                detail=str(record.error),
            )

    async def _intake(self) -> None:
        """The region's releases, batch after batch, until the worker stops; see the module
        docstring. Whatever goes wrong, the worker reads on from its last commit."""
        replicator = self.replicator
        self._loop = asyncio.get_running_loop()
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
                        self.settings.topics.releases,
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
            self._intake_done.set()

    def _group_consumer(self) -> GroupConsumer:
        settings = self.settings
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
        settings = self.settings
        uncommitted: dict[int, int] = {}
        flight: _Flight | None = None

        async def land() -> None:
            nonlocal flight
            if flight is not None:
                landing, flight = flight, None
                await self._land(landing, uncommitted)

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
            for partition in self._take_revocations():
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
        self.vitals.assigned_at = self.now()
        log.info("assigned partitions %s of %s", partitions, self.settings.topics.releases)

    def _revoked(self, partitions: list[int]) -> None:
        """The group took ``partitions`` away (in the intake's thread, inside a poll)."""
        self._held = self._held.difference(partitions)
        with self._revoked_lock:
            self._revoked_partitions.update(partitions)
        log.info("revoked partitions %s of %s", partitions, self.settings.topics.releases)

    def _take_revocations(self) -> set[int]:
        with self._revoked_lock:
            revoked, self._revoked_partitions = self._revoked_partitions, set()
        if revoked and self._replicator is not None:
            # Another worker may now write newer states of these packages.
            self._replicator.forget_cached_states()
        return revoked

    async def _stop_intake(self) -> None:
        """Stop reading after the batch under way (then the consumer leaves the group, and
        its partitions go to the other workers at once)."""
        self._stopping.set()
        if self._loop is None:
            return  # never started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._intake_done.wait(), INTAKE_STOP_SECONDS)

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
        self.vitals.batch_since = self.now()
        await self._catch_up_view()
        started = time.monotonic()
        outcomes, acknowledged = await replicator.start_batch([item for _, item in verified])
        return _Flight(records, verified, outcomes, acknowledged, started)

    async def _land(self, flight: _Flight, uncommitted: dict[int, int]) -> None:
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
        self._count(flight)
        for record in flight.records:
            if id(record) not in abandoned and record.partition in self._held:
                uncommitted[record.partition] = max(
                    uncommitted.get(record.partition, 0), record.offset + 1
                )
        self.vitals.batch_since = None
        self.vitals.progressed_at = self.now()
        self.faults.reached(BEFORE_OFFSET_COMMIT)

    def _count(self, flight: _Flight) -> None:
        kinds = Counter(type(outcome).__name__ for outcome in flight.outcomes)
        region = self.settings.region
        for kind, outcome_count in kinds.items():
            EVENTS.labels(region, kind.lower()).inc(outcome_count)
        refused = len(flight.records) - len(flight.verified)
        if refused:
            EVENTS.labels(region, "refused").inc(refused)
        replicator = self.replicator
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

    async def _announce(self, replica: ReplicaAvailable) -> None:
        key = f"{replica.region}/{replica.sha256}".encode()
        await deliver(self.replica_sink, [Record(key, replica.to_bytes())], what="replica")
        self.replicas.add(replica)

    async def _retry_pending(self) -> None:
        try:
            report = await self.replicator.retry_pending()
        except TransientError as exc:
            log.warning("parked fetches not retried: %s", exc)
            return
        if report.retried:
            log.info(
                "parked fetches: %d retried, %d recovered, %d still pending",
                report.retried,
                report.recovered,
                report.still_pending,
            )

    async def _region_downloads_partition(self) -> int:
        """The partition of the downloads topic that holds this region's counts, from the
        topic's partition count (asked once). Raises ``BrokerUnavailableError``."""
        if self._downloads_partition is None:
            topic = self.settings.topics.downloads
            found = await asyncio.to_thread(
                topic_partitions, self.settings.broker_url, topic, timeout=10.0
            )
            if not found:
                raise BrokerUnavailableError(f"{topic} does not exist")
            self._downloads_partition = own_partition(self.settings.region, found)
        return self._downloads_partition

    async def _flush_downloads(self) -> None:
        counts = self.tally.drain(self.now())
        if counts is None:
            return
        try:
            # Explicitly: Faust's partitioner (murmur2 of the key) is not every client's.
            partition = await self._region_downloads_partition()
            await self.downloads_sink.write(
                [Record(self.settings.region.encode(), counts.to_bytes(), partition)]
            )
        except TransientError as exc:
            log.warning("download counts not produced yet (%s); kept for the next period", exc)
            self.tally.restore(counts)

    async def _record_rejection(self, event: ConsumedRecord, reason: str, detail: str) -> None:
        await self._send_rejection(
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
            key=event.key.decode("utf-8", "replace") if event.key is not None else None,
            value=event.value,
            reason=reason,
            detail=detail,
        )

    async def _send_rejection(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        value: bytes,
        reason: str,
        detail: str,
    ) -> None:
        """Record a refused record (``streams.rejections``): durable on return, on the
        rejected topic or in this worker's dead-letter file; the partition moves on."""
        await self.rejections.record(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=reason,
            detail=detail,
        )
        self.vitals.unrecorded_rejections = self.rejections.unrecorded

    async def _resend_dead_letters(self) -> None:
        await self.rejections.resend()
        self.vitals.unrecorded_rejections = self.rejections.unrecorded

    async def _follow_peers(self) -> None:
        """One follower per peer network, as long as the app runs (they never raise)."""
        replicator = self.replicator
        self._peer_followers = [
            PeerFollower(
                peer,
                group=peer_group(self.settings.group_id, peer.name),
                replicator=replicator,
                our_root=lambda: self.trust.root,
                sources=self.replicas,
                reject=self._send_rejection,
                session_timeout=self.settings.session_timeout,
                clock=self.now,
            )
            for peer in self.settings.peers
        ]
        await asyncio.gather(*(follower.run() for follower in self._peer_followers))

    async def close(self) -> None:
        if self._joined is not None:  # the intake never started
            await asyncio.to_thread(self._joined.close)
            self._joined = None
        for peer_follower in self._peer_followers:
            peer_follower.stop()
        for follower in self._followers:
            await asyncio.to_thread(follower.stop)
        if self.view_follower is not None:
            await asyncio.to_thread(self.view_follower.stop)
        if self.local_view is not None:
            await asyncio.to_thread(self.local_view.flush_files)  # the docroot has what it served
        if self._replicator is not None:
            await self._replicator.close()
        if self._session is not None:
            await self._session.close()
        if self._view_producer is not None:
            await asyncio.to_thread(self._view_producer.close)
        if self._marker_producer is not None:
            await asyncio.to_thread(self._marker_producer.close)


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
