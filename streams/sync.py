"""A node's sync state, measured from the log, published as signed heartbeats.

Consumer lag is the sync state: the region's committed offsets (every event
below is applied and durable) against what the log holds, counted by reading.
Every process of a region that serves clients (a ``node run`` worker, a
``node serve`` frontend) registers itself and sends heartbeats on the
compacted status topic; the directory reads them to decide where to send
clients, and ``fairstream status`` to print the federation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import count

from connectors.kafka_producers import EventProducer
from connectors.kafka_reading import region_sync
from connectors.kafka_topics import Topics
from connectors.metrics import (
    ARTIFACTS_PENDING,
    LAG_EVENTS,
    LAG_SECONDS,
    NODE_STATE,
    STORE_BYTES,
    STORE_QUOTA_BYTES,
)
from connectors.object_store import ObjectStore
from schemas import layout
from schemas.errors import TransientError
from schemas.events import utc_now
from schemas.federation import (
    LAG_HISTORY,
    LagSample,
    NodeRegistration,
    NodeStatus,
    PartitionSync,
    registration_key,
    seal_registration,
    seal_status,
    status_key,
)
from schemas.signing import SigningKey
from schemas.trust import TrustRoot
from streams.policy import ReplicationPolicy

log = logging.getLogger(__name__)

#: How often the bytes of zips in the store are counted again (a listing of every zip).
STORE_USAGE_EVERY_SECONDS = 300.0
#: Events counted by reading, per partition, before a count is reported as "at least".
COUNT_LIMIT = 1_000
#: The states a running node's heartbeat carries (``node_state``); a goodbye says ``stopped``.
RUNNING_STATES = ("in-sync", "catching-up", "degraded")
#: How long a stopping node tries to say goodbye: long enough for a broker that answers
#: (a record is acknowledged in milliseconds), short enough that a stop with the broker
#: down is not held up; readers then call the node silent instead.
GOODBYE_SECONDS = 2.0


@dataclass(frozen=True)
class SyncSummary:
    """A region's sync state over all partitions, as a heartbeat states it."""

    events_behind: int
    lower_bound: bool
    seconds_behind: float | None


def summarize(partitions: tuple[PartitionSync, ...], now: datetime) -> SyncSummary:
    """Sum the partitions: events behind, and the age of the oldest unapplied event."""
    oldest = [p.oldest_unapplied_at for p in partitions if p.behind and p.oldest_unapplied_at]
    return SyncSummary(
        events_behind=sum(p.behind for p in partitions),
        lower_bound=any(p.behind_is_lower_bound for p in partitions),
        seconds_behind=max(0.0, (now - min(oldest)).total_seconds()) if oldest else None,
    )


def node_state(summary: SyncSummary, root: TrustRoot, now: datetime) -> tuple[str, str]:
    """The state a heartbeat carries and, when degraded, why, in a sentence."""
    if root.expires <= now:
        return (
            "degraded",
            f"trust root v{root.version} expired at {root.expires:%Y-%m-%d %H:%M} UTC; "
            "nothing new is applied until a newer root is published",
        )
    if summary.events_behind == 0:
        return "in-sync", ""
    return "catching-up", ""


def registration_of(
    key: SigningKey, region: str, base_url: str, policy: ReplicationPolicy
) -> NodeRegistration:
    """The registration of a node serving ``policy`` at ``base_url``."""
    return NodeRegistration(
        node_id=key.public_key.keyid,
        public_key=key.public_key.raw.hex(),
        region=region,
        base_url=base_url.rstrip("/"),
        mode=policy.mode.value,
        include=tuple(policy.include),
        exclude=tuple(policy.exclude),
        capacity_bytes=policy.quota_bytes,
        registered_at=utc_now(),
        jurisdiction=policy.jurisdictions.own,
        routes_to=(
            None
            if policy.jurisdictions.route is None
            else tuple(sorted(policy.jurisdictions.route))
        ),
    )


class StatusReporter:
    """Registers one node and produces its heartbeats (blocking calls: run them in a thread).

    Not on a ``streams.sinks.Sink``, by choice: a sink's ``write`` is async and durable on
    return, and its callers retry it (``deliver``); a heartbeat is a blocking, best-effort
    record. ``_produce`` waits for the broker on a producer of its own; when that fails,
    ``report`` logs it (``last_error``) and does not retry, since the next heartbeat
    replaces it under the same compacted key, and the producer, which the failure may have
    fenced, is dropped and made again. ``register`` raises to its caller instead;
    ``goodbye`` tries once, within its bound, on a fresh producer.
    """

    # Long because keyword-only: the reporter's collaborators, named at its one construction.
    def __init__(
        self,
        *,
        key: SigningKey,
        registration: NodeRegistration,
        broker_url: str,
        topics: Topics,
        group: str,
        store: ObjectStore,
        trust_root: Callable[[], TrustRoot],
        rejected_total: Callable[[], int] = lambda: 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registration = registration
        self._key = key
        self._broker_url = broker_url
        self._topics = topics
        self._group = group
        self._store = store
        self._trust_root = trust_root
        self._rejected_total = rejected_total
        self._clock = clock
        self._sequence = count()
        self._producer: EventProducer | None = None
        self._store_bytes: int | None = None
        self._store_counted_at = float("-inf")
        self._lock = threading.Lock()
        #: Set by ``goodbye``: a heartbeat measured meanwhile is not sent after it.
        self._stopping = False
        self.last: NodeStatus | None = None
        #: Why the last heartbeat failed (the broker or the store did not answer), or None.
        self.last_error: TransientError | None = None
        #: Called with each status sent, in the heartbeat's thread (the CLI's catch-up display).
        self.listeners: list[Callable[[NodeStatus], None]] = []
        #: This node's recent lag, one sample per measurement (the status page's chart).
        self.history: deque[LagSample] = deque(maxlen=LAG_HISTORY)
        if registration.capacity_bytes is not None:
            STORE_QUOTA_BYTES.labels(registration.region).set(registration.capacity_bytes)

    @property
    def node_id(self) -> str:
        return self.registration.node_id

    def _produce(self, key: bytes, value: bytes) -> None:
        """Produce one record on the status topic and wait until the broker acknowledged
        it (10 s at most); raises ``BrokerUnavailableError`` after dropping the producer
        (the next call makes a new one)."""
        if self._producer is None:
            self._producer = EventProducer(self._broker_url, delivery_timeout=10.0)
        try:
            self._producer.produce(self._topics.status, key, value)
        except TransientError:
            # An idempotent producer whose request timed out (a broker paused past the
            # timeout) may be fenced for good: Tansu then refuses each later record ("a
            # newer producer ... fences the current one"). The next heartbeat gets a new one.
            producer, self._producer = self._producer, None
            producer.close(discard=True)
            raise

    def register(self) -> None:
        """Produce the node's signed registration; raises ``BrokerUnavailableError``."""
        with self._lock:
            self._produce(
                registration_key(self.node_id), seal_registration(self.registration, self._key)
            )
        log.info(
            "registered node %s (%s, %s) on %s",
            self.node_id[:16],
            self.registration.region,
            self.registration.base_url,
            self._topics.status,
        )

    def measure(self) -> NodeStatus:
        """The node's status now; raises ``BrokerUnavailableError`` or ``StoreUnavailableError``."""
        now = self._clock()
        partitions = tuple(
            region_sync(self._broker_url, self._group, self._topics.releases, limit=COUNT_LIMIT)
        )
        summary = summarize(partitions, now)
        root = self._trust_root()
        state, detail = node_state(summary, root, now)
        return NodeStatus(
            node_id=self.node_id,
            region=self.registration.region,
            base_url=self.registration.base_url,
            sequence=next(self._sequence),
            heartbeat_at=now,
            partitions=partitions,
            events_behind=summary.events_behind,
            behind_is_lower_bound=summary.lower_bound,
            seconds_behind=summary.seconds_behind,
            artifacts_pending=len(self._store.list_keys(layout.PENDING_PREFIX)),
            rejected_total=self._rejected_total(),
            store_bytes=self._usage(),
            trust_root_version=root.version,
            state=state,
            detail=detail,
        )

    def _usage(self) -> int | None:
        if self.registration.mode != "full":
            return 0
        if time.monotonic() - self._store_counted_at >= STORE_USAGE_EVERY_SECONDS:
            objects = self._store.list_objects(layout.ARTIFACT_PREFIX)
            self._store_bytes = sum(stored.size for _, stored in objects)
            self._store_counted_at = time.monotonic()
        return self._store_bytes

    def report(self) -> NodeStatus | None:
        """Measure and produce one heartbeat; a failure is logged and returns None."""
        try:
            status = self.measure()
            region = self.registration.region
            LAG_EVENTS.labels(region).set(status.events_behind)
            LAG_SECONDS.labels(region).set(status.seconds_behind or 0.0)
            ARTIFACTS_PENDING.labels(region).set(status.artifacts_pending)
            if status.store_bytes is not None:
                STORE_BYTES.labels(region).set(status.store_bytes)
            for state in RUNNING_STATES:
                NODE_STATE.labels(region, state).set(1 if status.state == state else 0)
            self.history.append(LagSample(status.heartbeat_at, status.events_behind))
            with self._lock:
                if self._stopping:
                    # Measured before the goodbye, done after it: sent now, it would
                    # follow the goodbye in the log and say the node is running.
                    return None
                self._produce(status_key(self.node_id), seal_status(status, self._key))
        except TransientError as exc:
            log.warning("heartbeat not sent: %s", exc)
            self.last_error = exc
            return None
        self.last = status
        self.last_error = None
        for listener in self.listeners:
            try:
                listener(status)
            except Exception:  # a display must never stop the heartbeats
                log.exception("status listener %r failed", listener)
        return status

    def goodbye(self, *, timeout: float = GOODBYE_SECONDS) -> NodeStatus | None:
        """Produce one signed heartbeat saying the node stopped, within about ``timeout``
        seconds; returns it, or None when the broker did not take it in time (logged).

        Nothing is measured: the goodbye carries the last measured sync figures (so a
        broker that stopped answering cannot hold up the stop), and no heartbeat is sent
        after it.
        """
        self._stopping = True
        started = time.monotonic()
        now = self._clock()
        # Measured at the last heartbeat, or nothing measured yet (stopped at start-up).
        measured = self.last or NodeStatus(
            node_id=self.node_id,
            region=self.registration.region,
            base_url=self.registration.base_url,
            sequence=0,
            heartbeat_at=now,
            partitions=(),
            events_behind=0,
            behind_is_lower_bound=False,
            seconds_behind=None,
            artifacts_pending=0,
            rejected_total=0,
            store_bytes=None,
            trust_root_version=0,
            state="stopped",
        )
        status = replace(
            measured,
            sequence=next(self._sequence),
            heartbeat_at=now,
            rejected_total=self._rejected_total(),
            trust_root_version=self._trust_root().version,
            state="stopped",
            detail="the node was shut down",
        )
        # A heartbeat being sent holds the lock for as long as its broker takes: wait for
        # it only within the bound, so the goodbye lands after it in the log or not at all.
        if not self._lock.acquire(timeout=timeout):
            log.warning("goodbye heartbeat not sent: a heartbeat was still being sent")
            return None
        producer: EventProducer | None = None
        try:
            left = max(0.5, timeout - (time.monotonic() - started))
            producer = EventProducer(self._broker_url, delivery_timeout=left)
            producer.produce(
                self._topics.status, status_key(self.node_id), seal_status(status, self._key)
            )
        except TransientError as exc:
            log.warning("goodbye heartbeat not sent within %.0f s: %s", timeout, exc)
            return None
        finally:
            if producer is not None:
                producer.close(discard=True)
            self._lock.release()
        self.last = status
        log.info("sent the goodbye heartbeat of node %s", self.node_id[:16])
        return status

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
