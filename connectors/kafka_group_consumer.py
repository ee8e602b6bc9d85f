"""A member of a Kafka consumer group that commits only the offsets it is given."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.kafka_connection import client_config
from connectors.store import redact_url
from schemas.errors import BrokerUnavailableError

# The logger of the module these clients came from (connectors/kafka.py): operators' filters
# and greps name it.
log = logging.getLogger("connectors.kafka")


@dataclass(frozen=True)
class ConsumedRecord:
    """One record read by a ``GroupConsumer``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def position(self) -> str:
        """``topic:partition:offset``, as a package state records where an event was."""
        return f"{self.topic}:{self.partition}:{self.offset}"


class GroupConsumer:
    """A member of a consumer group on one topic that commits only the offsets it is given.

    Blocking, and not safe for concurrent calls: drive it from one thread.
    Every method raises ``BrokerUnavailableError`` for a broker that does not
    answer or refuses; librdkafka reconnects by itself, so the caller may go
    on calling after a pause.
    """

    def __init__(
        self,
        broker_url: str,
        topic: str,
        group: str,
        *,
        session_timeout: float = 10.0,
        on_assign: Callable[[list[int]], None] = lambda partitions: None,
        on_revoke: Callable[[list[int]], None] = lambda partitions: None,
        fetch_wait: float = 0.1,
    ) -> None:
        """``on_assign`` and ``on_revoke`` are called with partition numbers, in the thread
        that calls ``poll``, inside it (so never while a polled batch is being handled by
        a caller that polls again only after handling). ``fetch_wait``: how long the
        broker may hold a fetch that finds nothing new (a release's latency floor on a
        broker that does not answer a waiting fetch early, the embedded Tansu)."""
        self._broker_url = broker_url
        self._topic = topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._consumer = Consumer(
            {
                **client_config(broker_url),
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Asking for a topic by name must not create it on someone else's cluster.
                "allow.auto.create.topics": False,
                "session.timeout.ms": int(session_timeout * 1000),
                "heartbeat.interval.ms": int(max(session_timeout / 6, 0.5) * 1000),
                "fetch.wait.max.ms": int(fetch_wait * 1000),
                # What librdkafka prefetches per partition (64 MB by default): a catch-up
                # of a large region would hold that much per partition in memory.
                "queued.max.messages.kbytes": 16384,
                "log.connection.close": False,
                # Connection failures come back from poll() and list_topics() and are
                # logged by the caller with its backoff; librdkafka would log each retry.
                "log_level": 2,
            }
        )
        self._subscribed = False
        self._session_timeout = session_timeout
        #: Whether the group's last word to this member was an assignment (not a revocation
        #: or nothing yet): see ``close``.
        self._settled = False

    def topic_exists(self, timeout: float = 5.0) -> bool:
        """Whether the topic exists (listing all topics: naming one may create it)."""
        try:
            return self._topic in self._consumer.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"broker {redact_url(self._broker_url)} did not list topics: {exc}"
            ) from exc

    def join(self) -> None:
        """Ask to join the group, once. The join goes on in librdkafka's threads (about 3 s
        on Tansu, which waits for more members), so a caller that joins before the rest of
        its start-up overlaps the two; the assignment is handed over in ``poll``. Raises
        ``BrokerUnavailableError``."""
        if self._subscribed:
            return
        try:
            self._consumer.subscribe(
                [self._topic],
                on_assign=lambda _, partitions: self._assigned(partitions),
                on_revoke=lambda _, partitions: self._revoked(partitions),
            )
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"joining the group of {self._topic} failed: {exc}"
            ) from exc
        self._subscribed = True

    def poll(self, max_records: int, timeout: float) -> list[ConsumedRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds; joins the
        group on the first call. Raises ``BrokerUnavailableError`` when nothing but errors came.
        """
        self.join()
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(f"reading {self._topic} failed: {exc}") from exc
        records: list[ConsumedRecord] = []
        errors: list[str] = []
        for message in messages:
            error = message.error()
            partition, offset = message.partition(), message.offset()
            if error is not None:
                errors.append(error.str())
            elif partition is not None and offset is not None:
                records.append(
                    ConsumedRecord(
                        self._topic, partition, offset, message.key(), message.value() or b""
                    )
                )
        if errors and not records:
            raise BrokerUnavailableError(
                f"reading {self._topic} on {redact_url(self._broker_url)} failed: "
                f"{'; '.join(errors[:3])}"
            )
        return records

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self._settled = True
        self._on_assign(sorted(tp.partition for tp in partitions))

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._settled = False
        self._on_revoke(sorted(tp.partition for tp in partitions))

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        """Commit, per partition, the offset of the next record to read (synchronously).

        Raises ``BrokerUnavailableError`` when the commit failed, for one
        partition or all (after a rebalance, say): the records are read again.
        """
        if not next_offsets:
            return
        offsets = [TopicPartition(self._topic, p, o) for p, o in sorted(next_offsets.items())]
        try:
            committed = self._consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            raise BrokerUnavailableError(f"committing {self._topic} offsets failed: {exc}") from exc
        failed = [tp for tp in committed if tp.error is not None]
        if failed:
            raise BrokerUnavailableError(
                f"committing {self._topic} offsets failed for partitions "
                f"{[tp.partition for tp in failed]}: {failed[0].error}"
            )

    def close(self) -> None:
        """Leave the group (its partitions go to the other members at once).

        A member in the middle of a rebalance (revoked, not yet assigned again) first
        waits for the rebalance to end, for at most twice the session timeout: the
        embedded broker (Tansu 0.6) keeps a group whose member left in the middle of a
        rebalance stuck for good, no member joins it again (measured: a third consumer
        had no partition after 60 s; after a settled leave it had all of them in 3.5 s).
        What is polled meanwhile is dropped, uncommitted: the next owner reads it.
        """
        deadline = time.monotonic() + 2 * self._session_timeout
        try:
            while self._subscribed and not self._settled and time.monotonic() < deadline:
                self._consumer.consume(num_messages=1000, timeout=0.2)
        except KafkaException as exc:
            log.debug("settling the consumer of %s before it leaves: %s", self._topic, exc)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("closing the consumer of %s: %s", self._topic, exc)
