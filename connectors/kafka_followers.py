"""A Kafka topic followed whole, outside any group, in a thread of its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.kafka_connection import client_config

# The logger of the module these clients came from (connectors/kafka.py): operators' filters
# and greps name it.
log = logging.getLogger("connectors.kafka")


#: Which of a topic's partitions to follow, given all of them (sorted, once the topic exists).
PartitionChoice = Callable[[list[int]], Iterable[int]]


class TopicFollower:
    """Reads every partition of a topic (or those ``partitions`` chooses) from its
    beginning and keeps following them, in a thread.

    For state every worker needs whole (which nodes hold which replica, the
    region's download counts), so it reads outside the consumer group: no
    partition is shared out, nothing is committed. ``on_record(value)`` is
    called in the follower's thread, in log order per partition.

    ``partitions`` is asked once, when the topic's partitions are known; a choice of
    partitions the topic does not have is left out (and logged). ``followed`` is then
    the partitions followed.
    """

    def __init__(
        self,
        broker_url: str,
        topic: str,
        on_record: Callable[[bytes], None],
        *,
        name: str = "follower",
        partitions: PartitionChoice | None = None,
    ) -> None:
        self._broker_url = broker_url
        self._topic = topic
        self._on_record = on_record
        self._choose = partitions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}:{topic}", daemon=True)
        self.records = 0
        #: The partitions followed, once the topic's are known (None before).
        self.followed: list[int] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        consumer = Consumer(
            {
                **client_config(self._broker_url),
                "group.id": "fairstream-follower",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                "log.connection.close": False,
            }
        )
        try:
            partitions = self._partitions(consumer)
            if self._choose is not None and not self._stop.is_set():
                partitions = self._chosen(partitions)
            self.followed = partitions
            consumer.assign([TopicPartition(self._topic, p, 0) for p in partitions])
            while not self._stop.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.2):
                    if message.error() is not None:
                        continue
                    value = message.value()
                    if value is None:
                        continue
                    try:
                        self._on_record(value)
                    except Exception:  # one bad record must not stop the follower
                        log.exception("%s: record at %s not applied", self._topic, message.offset())
                    self.records += 1
        except KafkaException as exc:
            log.error("following %s stopped: %s", self._topic, exc)
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[int]:
        return wait_for_partitions(consumer, self._topic, self._stop)

    def _chosen(self, partitions: list[int]) -> list[int]:
        assert self._choose is not None
        wanted = set(self._choose(partitions))
        chosen = sorted(wanted.intersection(partitions))
        if wanted - set(chosen):
            log.warning(
                "%s has no partition %s (it has %d); not followed",
                self._topic,
                sorted(wanted - set(chosen)),
                len(partitions),
            )
        return chosen


def wait_for_partitions(
    consumer: Consumer, topic: str, stop: threading.Event, *, every: float = 1.0
) -> list[int]:
    """The partitions of ``topic``, once it exists (asking again every ``every`` seconds), or
    [] when ``stop`` is set first. Never raises."""
    while not stop.is_set():
        try:
            # All topics: asking about one by name makes Tansu create it.
            topics = consumer.list_topics(timeout=5.0).topics
        except KafkaException:
            time.sleep(every)
            continue
        if topic in topics and topics[topic].partitions:
            return sorted(topics[topic].partitions)
        time.sleep(every)
    return []
