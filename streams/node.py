"""The stream processing of a regional node: one consumer group per region.

``NodeStream`` wires one worker. Its intake (``streams.intake``) reads the region's
releases in batches with its own confluent-kafka consumer in the region's group,
verifies them and applies them through the worker's ``ReleaseReplicator``; a batch's
offsets are committed once its view records are acknowledged (ADR 7). The worker
owns the records of the partitions the group gave its intake.

Faust runs the app around it (``streams.worker_app``): the producer, the timers, the
clean stop. Beside
the intake: a follower of the replicas topic (every worker needs it whole) and
one of the region's partition of the downloads topic (``schemas.partitioning``),
a timer that retries parked fetches, one that produces the region's download
counts to that partition, and one that follows trust root rotations.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import faust

from connectors.kafka_followers import TopicFollower
from connectors.kafka_topics import topic_partitions
from connectors.metrics import NODE_HEALTHY, NODE_READY
from connectors.state_store import PackageStates
from connectors.store import open_store
from connectors.view_store import LocalView, ViewFollower
from schemas.errors import BrokerUnavailableError, TransientError
from schemas.events import ReplicaAvailable
from schemas.federation import NodeStatus
from schemas.package_state import StateReader, render_documents
from schemas.view import PackageView
from streams.artifacts import DownloadTally, HotStats, ReplicaRegistry
from streams.dead_letter import DeadLetterFile
from streams.faults import REFUSE_REJECTION, FaultPoints
from streams.health import Verdict, Vitals, liveness, readiness
from streams.intake import ReleaseIntake
from streams.node_settings import NodeSettings, own_partition, region_downloads_follower
from streams.peering import PeerFollower, peer_group
from streams.policy import peer_of_position
from streams.region_view import RegionView
from streams.rejections import DEAD_LETTER_RETRY_SECONDS, Rejections
from streams.replication import ReleaseReplicator
from streams.sinks import Record, Sink, TopicSink, deliver
from streams.sync import StatusReporter, registration_of
from streams.trust_keeper import RefusedRoot, TrustKeeper
from streams.view_topic import ViewTopicLink
from streams.worker_app import worker_app

log = logging.getLogger(__name__)


#: How often a node looks for trust root rotations on the trust topic.
TRUST_REFRESH_SECONDS = 10.0
#: How long one write of a rejection may take (``streams.rejections`` says how many).
REJECTION_ATTEMPT_SECONDS = 10.0


class NodeStream:
    """Builds the Faust app of one region and holds what its agent needs at run time."""

    # Long because it wires the worker's parts from its settings, each from the ones before it.
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.faults = FaultPoints(settings.fault)
        self._skew = settings.clock_skew
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.app = worker_app(settings)
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
        #: The worker's producers on the view topic and its reads of it to its end.
        self.view_link: ViewTopicLink | None = None
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
            self.view_link = ViewTopicLink(
                settings.broker_url,
                view_topic,
                ViewFollower(
                    settings.broker_url, view_topic, self.local_view, on_older=self._on_older_view
                ),
                worker_name=settings.worker_name,
            )
            self.region_view = RegionView(
                self.local_view,
                render=render,
                send=self.view_link.send,
                written_by=settings.worker_name,
                clock=self.now,
                faults=self.faults,
            )
        else:
            self.states = PackageStates(self.store, render=render)
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
        #: Reads the region's releases in its group; holds the partitions this worker owns.
        self.intake = ReleaseIntake(
            settings,
            faults=self.faults,
            vitals=self.vitals,
            clock=self.now,
            catch_up_view=self._catch_up_view,
            refresh_trust=self._refresh_trust,
            reject=self._send_rejection,
        )
        self.app.task(self._read_releases)
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
        if self.view_link is not None:
            self.view_link.follower.start()
            # Serve nothing older than what the region served before this worker
            # (re)started.
            self.view_link.read_to_end(timeout=600.0)
            self.view_link.started_producer()
        self.vitals.view_caught_up = True
        self.vitals.unrecorded_rejections = self.rejections.unrecorded
        # Not before the view is read: that read takes tens of seconds in a large region,
        # and a member given partitions meanwhile would hold them from the workers that
        # could apply them.
        self.intake.join_early()
        if self.reporter is not None:
            self.reporter.register()

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
            held, releases = self.intake.held, self.settings.topics.releases
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
        await self.intake.stop()

    async def _say_goodbye(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        """The signed ``stopped`` heartbeat of a worker that stops cleanly, once it has
        stopped reading; bounded (``StatusReporter.goodbye``), so a broker that is down does
        not hold up the stop."""
        await self.intake.stop()
        if self.reporter is not None:
            await asyncio.to_thread(self.reporter.goodbye)

    def _owns(self, position: str) -> bool:
        """Whether this worker still owns the partition of a record at ``position``."""
        if peer_of_position(position) is not None:
            # A peer's record: its partition is held in the region's group on the peer's
            # cluster, and its follower commits nothing it did not apply.
            return True
        topic, partition, _ = position.rsplit(":", 2)
        return topic == self.settings.topics.releases and int(partition) in self.intake.held

    async def _catch_up_view(self) -> None:
        """Read the region's view topic to its end, when it is the view (``ViewTopicLink``)."""
        if self.view_link is not None:
            await self.view_link.catch_up()

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

    async def _read_releases(self) -> None:
        """The intake (``streams.intake``), the app's task: it applies through the
        replicator, built here, in the running event loop."""
        replicator = self.replicator
        self._loop = asyncio.get_running_loop()
        await self.intake.run(replicator)

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
        await self.intake.close()
        for peer_follower in self._peer_followers:
            peer_follower.stop()
        for follower in self._followers:
            await asyncio.to_thread(follower.stop)
        if self.view_link is not None:
            await asyncio.to_thread(self.view_link.follower.stop)
        if self.local_view is not None:
            await asyncio.to_thread(self.local_view.flush_files)  # the docroot has what it served
        if self._replicator is not None:
            await self._replicator.close()
        if self._session is not None:
            await self._session.close()
        if self.view_link is not None:
            await self.view_link.close()
