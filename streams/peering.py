"""Peering: following another network's releases topic under a per-peer policy (canonical, source, refuse).

A peer is an independently operated stream (another organisation's cluster,
its own trust root), configured with ``--peer`` (``streams.peer_config``). Its
records are verified against the peer's pinned root, then ``streams.peer_verdict``
says what each may do here: be applied as canonical, lend its artifact URL as a
download source, or be refused and recorded on our rejected topic.

``PeerFollower`` is the loop: a confluent-kafka consumer in the region's group
on the peer's cluster, polled from one thread, that applies canonical records
through the node's ``ReleaseReplicator`` and commits the peer's offsets only
once their effects (or rejections) are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from connectors.kafka_group_consumer import ConsumedRecord, GroupConsumer
from connectors.kafka_reading import iter_partition
from connectors.kafka_topics import topic_partitions
from connectors.store import redact_url
from schemas.errors import BrokerUnavailableError, RejectedError
from schemas.event_verification import Reject, WaitForRoot, on_rejection
from schemas.events import ReleasePublished
from schemas.trust import TrustRoot
from streams.artifacts import ReplicaRegistry
from streams.outcomes import Abandoned, Applied, Refused, Skipped, Verified
from streams.peer_config import PeerPolicy, PeerSettings
from streams.peer_verdict import PeerUse, decide
from streams.rejections import RecordRejection
from streams.replication import ReleaseReplicator

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0
#: How long a follower waits for the peer's cluster to list its topics.
TOPIC_LOOKUP_TIMEOUT = 2.0
#: How long a follower whose pinned peer root expired waits before looking again.
EXPIRED_ROOT_WAIT_SECONDS = 60.0

T = TypeVar("T")


def peer_group(region_group: str, peer: str) -> str:
    """The consumer group a region's workers share on a peer's cluster: distinct from the
    region's own group, which may live on the same cluster, and from other peers'."""
    return f"{region_group}.peer.{peer}"


class _PeerRootExpiredError(Exception):
    """The peer's pinned root expired: nothing of it is applied or refused until re-pinned."""


class PeerFollower:
    """Follows one peer's releases topic, for one worker of a region.

    ``run`` is meant to be an asyncio task in the node's loop; it never raises
    (a peer cluster that is down, or a record that fails, is logged and
    retried or recorded) and returns after ``stop``. The consumer is polled
    from one thread of its own. Offsets are committed once a batch's effects
    are durable: applied by ``replicator.apply_batch`` or recorded by
    ``reject``. Positions are ``PeerSettings.position``, which the replicator's
    ``owns`` guard must count as owned (the peer group owns them).

    A source peer's URLs are kept in memory, and the group's offsets are past
    them after a restart; so a source follower first reads the whole topic
    once (every partition, outside the group) to learn them again, without
    recording refusals twice. A source record read by another worker of the
    region reaches this one at its next start; meanwhile a zip this worker
    could not fetch is parked, and every worker retries parked fetches.
    """

    # Long because it is where the node wires a follower: the peer, then keyword-only arguments.
    def __init__(
        self,
        peer: PeerSettings,
        *,
        group: str,
        replicator: ReleaseReplicator,
        our_root: Callable[[], TrustRoot],
        sources: ReplicaRegistry,
        reject: RecordRejection,
        session_timeout: float = 10.0,
        batch_size: int = 500,
        poll_timeout: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.peer = peer
        #: The region's consumer group on the peer's cluster.
        self.group = group
        self._replicator = replicator
        self._our_root = our_root
        self._sources = sources
        self._reject = reject
        self._session_timeout = session_timeout
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._clock = clock
        self._peer_root = peer.root() if peer.policy is not PeerPolicy.REFUSE else None
        self._stop = asyncio.Event()
        # Written by the consumer's thread (rebalance callback), read by the loop.
        self._revoked: set[int] = set()
        self._revoked_lock = threading.Lock()
        self._uncommitted: dict[int, int] = {}
        self._failures = 0
        self._executor: ThreadPoolExecutor | None = None
        self._sources_learned = False
        #: What the follower did: applied, skipped, sources, ignored, and each refusal reason.
        self.counts: Counter[str] = Counter()
        #: Per partition, the next offset committed on the peer's cluster.
        self.committed: dict[int, int] = {}

    def stop(self) -> None:
        """Make ``run`` return after the poll or pause under way."""
        self._stop.set()

    async def run(self) -> None:
        """Follow the peer until ``stop``; see the class docstring."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"peer-{self.peer.name}")
        self._executor = executor
        try:
            while not self._stop.is_set():
                if self._peer_root is not None and self._peer_root.expires <= self._clock():
                    await self._wait_for_new_root()
                    continue
                try:
                    await self._follow()
                except _PeerRootExpiredError:
                    await self._wait_for_new_root()
                except Exception as exc:  # whatever happened, a peer must not stop the node
                    self._failures += 1
                    delay = self._backoff()
                    log.warning(
                        "peer %s (%s %s): %s: %s; following again in %.1f s",
                        self.peer.name,
                        redact_url(self.peer.broker_url),
                        self.peer.topic,
                        type(exc).__name__,
                        exc,
                        delay,
                        exc_info=not isinstance(exc, BrokerUnavailableError),
                    )
                    await self._pause(delay)
        finally:
            executor.shutdown(wait=False)

    async def _wait_for_new_root(self) -> None:
        root = self._peer_root
        assert root is not None
        log.error(
            "peer %s: its pinned trust root v%d expired at %s; nothing of it is applied or "
            "refused until the node is restarted with its newer root pinned",
            self.peer.name,
            root.version,
            root.expires.isoformat(),
        )
        await self._pause(EXPIRED_ROOT_WAIT_SECONDS)

    def _backoff(self) -> float:
        return min(0.5 * 2.0 ** min(self._failures, 10), MAX_BACKOFF_SECONDS)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        """Run a blocking consumer call in the follower's own thread."""
        assert self._executor is not None, "only called while run() runs"
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _follow(self) -> None:
        call = self._call
        consumer = await call(self._consumer)
        try:
            while not await call(consumer.topic_exists, TOPIC_LOOKUP_TIMEOUT):
                self._failures += 1
                delay = self._backoff()
                log.warning(
                    "peer %s: no topic %s on %s yet; looking again in %.1f s",
                    self.peer.name,
                    self.peer.topic,
                    redact_url(self.peer.broker_url),
                    delay,
                )
                await self._pause(delay)
                if self._stop.is_set():
                    return
            if self.peer.policy is PeerPolicy.SOURCE and not self._sources_learned:
                learned = await call(self._learn_sources)
                self._sources_learned = True
                log.info("peer %s: %d download sources read back", self.peer.name, learned)
            while not self._stop.is_set():
                try:
                    records = await call(consumer.poll, self._batch_size, self._poll_timeout)
                except BrokerUnavailableError as exc:
                    # librdkafka reconnects by itself: keep the consumer, wait, poll again.
                    self._failures += 1
                    delay = self._backoff()
                    log.warning("peer %s: %s; polling again in %.1f s", self.peer.name, exc, delay)
                    await self._pause(delay)
                    continue
                self._failures = 0
                self._take_revocations()
                if records:
                    await self._handle(records)
                if self._uncommitted:
                    await self._commit(consumer)
        finally:
            # Queued behind any poll still running in the thread; not awaited, so a
            # cancelled task does not wait for it.
            if self._executor is not None:
                self._executor.submit(consumer.close)
            # A new consumer starts from the committed offsets: what was handled and not
            # committed is read again (harmless), never committed for another member.
            self._uncommitted.clear()

    def _learn_sources(self) -> int:
        """Blocking: read every partition of the peer's topic to its end and register the
        download sources it gives; returns how many. Refusals are not recorded (they were
        when the group first read them). Raises ``BrokerUnavailableError``."""
        learned = 0
        broker, topic = self.peer.broker_url, self.peer.topic
        for partition in topic_partitions(broker, topic):
            for offset, value in iter_partition(broker, topic, partition):
                try:
                    item = self._replicator.verify(
                        value, self.peer.position(partition, offset), root=self._peer_root
                    )
                except RejectedError:
                    continue
                learned += self._use_as_source(item)
        return learned

    def _use_as_source(self, item: Verified) -> bool:
        """Register a verified record's artifact URL if the peer may be a source of it."""
        event = item.event
        decision = decide(self.peer, self._our_root(), self._peer_root, event.package)
        if decision.use is not PeerUse.SOURCE or not isinstance(event, ReleasePublished):
            return False
        artifact = event.artifact
        self._sources.add_source(
            artifact.sha256, self.peer.source_label, artifact.origin_url, self.peer.jurisdiction
        )
        return True

    def _consumer(self) -> GroupConsumer:
        return GroupConsumer(
            self.peer.broker_url,
            self.peer.topic,
            self.group,
            session_timeout=self._session_timeout,
            on_revoke=self._on_revoke,
        )

    def _on_revoke(self, partitions: list[int]) -> None:
        with self._revoked_lock:
            self._revoked.update(partitions)

    def _take_revocations(self) -> None:
        with self._revoked_lock:
            revoked, self._revoked = self._revoked, set()
        if revoked:
            # Another worker of the region may now write newer states of these packages;
            # what was not committed is read again by the partitions' new owner.
            self._replicator.forget_cached_states()
            for partition in revoked:
                self._uncommitted.pop(partition, None)

    async def _commit(self, consumer: GroupConsumer) -> None:
        offsets = dict(self._uncommitted)
        try:
            await self._call(consumer.commit, offsets)
        except BrokerUnavailableError as exc:
            # Kept: committed with the next batch. Meanwhile a restart reads them again,
            # which changes nothing (effects are idempotent).
            log.warning("peer %s: offsets not committed yet: %s", self.peer.name, exc)
            return
        self.committed.update(offsets)
        for partition, offset in offsets.items():
            if self._uncommitted.get(partition) == offset:
                del self._uncommitted[partition]

    async def _handle(self, records: list[ConsumedRecord]) -> None:
        """Screen, apply and record one batch; durable on return."""
        verified: list[tuple[ConsumedRecord, Verified]] = []
        for record in records:
            item = await self._screen(record)
            if item is not None:
                verified.append((record, item))
        outcomes = await self._replicator.apply_batch([item for _, item in verified])
        for (record, item), outcome in zip(verified, outcomes, strict=True):
            if isinstance(outcome, Refused):
                await self._record(record, outcome.reason, outcome.detail)
            elif isinstance(outcome, Applied):
                self.counts["applied"] += 1
                log.info(
                    "%s: %s %s #%d applied from peer %s",
                    item.position,
                    outcome.package,
                    outcome.kind,
                    outcome.sequence,
                    self.peer.name,
                )
            elif isinstance(outcome, Skipped):
                self.counts["skipped"] += 1
                log.debug("%s: %s is outside this region's policy", item.position, outcome.package)
            elif isinstance(outcome, Abandoned):
                raise RuntimeError(
                    f"{item.position} was abandoned: the replicator's owns() must count "
                    "peer/ positions as owned"
                )
        for record in records:
            next_offset = record.offset + 1
            if next_offset > self._uncommitted.get(record.partition, -1):
                self._uncommitted[record.partition] = next_offset
        log.info(
            "peer %s: batch of %d records; so far %s",
            self.peer.name,
            len(records),
            ", ".join(f"{kind} {count}" for kind, count in sorted(self.counts.items())),
        )

    async def _screen(self, record: ConsumedRecord) -> Verified | None:
        """The record, verified, when it is to be applied; otherwise it is recorded as
        refused or used as a source here, and None is returned."""
        if self.peer.policy is PeerPolicy.REFUSE:
            decision = decide(self.peer, self._our_root(), None, "")
            await self._record(record, decision.reason, decision.detail)
            return None
        position = self.peer.position(record.partition, record.offset)
        try:
            item = self._replicator.verify(record.value, position, root=self._peer_root)
        except Exception as exc:
            # The peer's root comes with its network: there is nothing to refresh here.
            action = on_rejection(exc, refreshed=True)
            if isinstance(action, WaitForRoot):
                raise _PeerRootExpiredError(action.detail) from exc
            assert isinstance(action, Reject)  # refreshed: never RefreshTrust
            if isinstance(exc, RejectedError):
                detail = f"peer {self.peer.name}: {action.detail}"
            else:
                log.exception("%s: verification failed unexpectedly", position)
                detail = action.detail
            await self._record(record, action.reason, detail)
            return None
        event = item.event
        decision = decide(self.peer, self._our_root(), self._peer_root, event.package)
        if decision.use is PeerUse.REFUSED:
            await self._record(record, decision.reason, decision.detail)
            return None
        if decision.use is PeerUse.SOURCE:
            self.counts["sources" if self._use_as_source(item) else "ignored"] += 1
            return None
        return item

    async def _record(self, record: ConsumedRecord, reason: str, detail: str) -> None:
        await self._reject(
            topic=self.peer.rejected_topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            value=record.value,
            reason=reason,
            detail=detail,
        )
        self.counts[reason] += 1
