"""Kafka partitions read to their end, outside any group: records, counts, the published set.

A group's committed offsets against the log ends, and a region's sync built on both, live
here too: the end of a partition is found by reading it (Tansu under-reports its log end).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from connectors.kafka_connection import admin_client, client_config
from connectors.kafka_topics import topic_partitions
from connectors.store import redact_url
from schemas.errors import BrokerUnavailableError, RejectedError
from schemas.events import ReleasePublished, decode_package_event
from schemas.federation import PartitionSync
from schemas.signing import SignedEvent


@dataclass(frozen=True)
class PartitionPosition:
    """A consumer group's committed offset against the log end of one partition."""

    partition: int
    committed: int | None
    log_end: int

    @property
    def behind(self) -> int:
        """Events not yet committed; never negative (Tansu under-reports the log end)."""
        return max(0, self.log_end - (self.committed or 0))


def group_positions(
    broker_url: str, group: str, topic: str, *, timeout: float = 10.0
) -> list[PartitionPosition]:
    """Committed offsets of ``group`` and log ends of ``topic``, per partition.

    On Tansu the log end is approximate (DESIGN.md): it may lag the real one by
    the last batch. Raises ``BrokerUnavailableError``.
    """
    admin = admin_client(broker_url)
    try:
        metadata = admin.list_topics(timeout=timeout)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        if not partitions:
            return []
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in partitions]
        )
        result = admin.list_consumer_group_offsets([request])[group].result(timeout=timeout)
        committed = {tp.partition: tp.offset for tp in result.topic_partitions}
        probe = Consumer(
            {
                **client_config(broker_url),
                "group.id": f"{group}.probe",
                "log.connection.close": False,
            }
        )
        try:
            ends = {
                p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout)[1]
                for p in partitions
            }
        finally:
            probe.close()
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"broker {redact_url(broker_url)} did not report offsets: {exc}"
        ) from exc
    return [
        PartitionPosition(p, committed[p] if committed.get(p, -1) >= 0 else None, ends[p])
        for p in partitions
    ]


# Long because one read loop: the assignment, each partition's end, the deadline of no progress.
def _iter_to_end(
    broker_url: str,
    topic: str,
    positions: Mapping[int, int],
    *,
    limit: int,
    timeout: float,
) -> Iterator[tuple[int, int, bytes, int, bytes | None]]:
    """Yield (partition, offset, value, timestamp in ms, key) of every record at or after
    ``positions[partition]``.

    Tansu under-reports the high watermark (DESIGN.md), so the end is where the
    broker answers a fetch with nothing more (partition EOF), not the
    watermark. A partition stops early at ``limit`` records. Raises
    ``BrokerUnavailableError`` if the partitions are not read to their end
    within ``timeout`` seconds of no progress: an unknown end is never
    reported as "nothing left".
    """
    consumer = Consumer(
        {
            **client_config(broker_url),
            "group.id": "fairstream-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # At a partition's end the broker holds a fetch this long before saying so.
            "fetch.wait.max.ms": 50,
            "log.connection.close": False,
        }
    )
    counts = dict.fromkeys(positions, 0)
    open_partitions = set(positions)
    # Where each partition's next record would be, and those whose end was checked twice.
    following = {p: max(o, 0) for p, o in positions.items()}
    rechecked: set[int] = set()
    last_progress = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, p, max(o, 0)) for p, o in positions.items()])
        while open_partitions:
            messages = consumer.consume(num_messages=1000, timeout=0.1)
            if not messages:
                if time.monotonic() - last_progress > timeout:
                    raise BrokerUnavailableError(
                        f"could not read {topic} partitions {sorted(open_partitions)} to their "
                        f"end within {timeout:.0f} s; the broker may be overloaded, try again"
                    )
                continue
            last_progress = time.monotonic()
            for message in messages:
                partition, offset = message.partition(), message.offset()
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                        if partition in rechecked or not _records_beyond(
                            consumer, topic, partition, following[partition]
                        ):
                            open_partitions.discard(partition)
                        else:
                            # The end came before the watermark (which Tansu under-reports,
                            # never over-reports): read on, once.
                            rechecked.add(partition)
                        continue
                    raise BrokerUnavailableError(f"reading {topic} failed: {error.str()}")
                if partition is None or offset is None or partition not in open_partitions:
                    continue
                following[partition] = max(following[partition], offset + 1)
                if offset >= positions[partition]:
                    yield (
                        partition,
                        offset,
                        message.value() or b"",
                        message.timestamp()[1],
                        message.key(),
                    )
                    counts[partition] += 1
                    if counts[partition] >= limit:
                        open_partitions.discard(partition)
                        consumer.pause([TopicPartition(topic, partition)])
    except KafkaException as exc:
        raise BrokerUnavailableError(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()


def _records_beyond(consumer: Consumer, topic: str, partition: int, offset: int) -> bool:
    """Whether the broker's high watermark says the partition holds records at ``offset`` or
    later (an under-reported watermark errs towards False: then the EOF is taken)."""
    try:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=5, cached=False
        )
    except KafkaException:
        return False
    return bool(high > offset)


def _read_to_end(
    broker_url: str,
    topic: str,
    positions: Mapping[int, int],
    *,
    limit: int,
    timeout: float,
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record at or after each position, by partition (see ``_iter_to_end``)."""
    found: dict[int, list[tuple[int, bytes]]] = {p: [] for p in positions}
    for partition, offset, value, _, _ in _iter_to_end(
        broker_url, topic, positions, limit=limit, timeout=timeout
    ):
        found[partition].append((offset, value))
    return found


def records_after(
    broker_url: str,
    topic: str,
    positions: dict[int, int],
    *,
    limit: int = 10_000,
    timeout: float = 15.0,
) -> dict[int, int]:
    """Count the records at or after ``positions[partition]`` by reading them, up to ``limit``.

    Raises ``BrokerUnavailableError`` (see ``_read_to_end``).
    """
    found = _read_to_end(broker_url, topic, positions, limit=limit, timeout=timeout)
    return {partition: len(records) for partition, records in found.items()}


def read_partition(
    broker_url: str, topic: str, partition: int = 0, *, start: int = 0, timeout: float = 15.0
) -> list[tuple[int, bytes]]:
    """Every (offset, value) of one partition from ``start`` to its end, for small topics.

    Raises ``BrokerUnavailableError``.
    """
    found = _read_to_end(broker_url, topic, {partition: start}, limit=1_000_000, timeout=timeout)
    return found[partition]


def iter_partition(
    broker_url: str, topic: str, partition: int, *, start: int = 0, timeout: float = 30.0
) -> Iterator[tuple[int, bytes]]:
    """(offset, value) of every record of one partition from ``start`` to its end, streamed.

    Raises ``BrokerUnavailableError`` (see ``_iter_to_end``).
    """
    for _, offset, value, _, _ in _iter_to_end(
        broker_url, topic, {partition: start}, limit=1 << 62, timeout=timeout
    ):
        yield offset, value


def iter_partition_records(
    broker_url: str, topic: str, partition: int, *, start: int = 0, timeout: float = 30.0
) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """(offset, timestamp in ms, key, value) of every record of one partition from
    ``start`` to its end, streamed: the records as they are, to carry them elsewhere.

    Raises ``BrokerUnavailableError`` (see ``_iter_to_end``).
    """
    for _, offset, value, timestamp, key in _iter_to_end(
        broker_url, topic, {partition: start}, limit=1 << 62, timeout=timeout
    ):
        yield offset, timestamp, key, value


def region_sync(
    broker_url: str, group: str, topic: str, *, limit: int = 1_000, timeout: float = 10.0
) -> list[PartitionSync]:
    """Per partition of ``topic``: ``group``'s committed offset (every event below it is
    applied), the log end, and the events at or after the committed offset with the
    publish time of the first of them.

    The count is the larger of the log end's difference (exact on Apache Kafka) and a
    count by reading up to ``limit`` records (exact on Tansu, whose log end is low), so a
    region is never reported in sync while an event waits. Raises ``BrokerUnavailableError``.
    """
    positions = group_positions(broker_url, group, topic, timeout=timeout)
    committed = {p.partition: p.committed or 0 for p in positions}
    counted = dict.fromkeys(committed, 0)
    oldest: dict[int, int] = {}
    for partition, _, _, timestamp, _ in _iter_to_end(
        broker_url, topic, committed, limit=limit, timeout=timeout
    ):
        counted[partition] += 1
        if partition not in oldest and timestamp > 0:
            oldest[partition] = timestamp
    found = []
    for position in positions:
        p = position.partition
        behind = max(position.behind, counted[p])
        first = oldest.get(p)
        found.append(
            PartitionSync(
                topic=topic,
                partition=p,
                applied_offset=committed[p],
                log_end=max(position.log_end, committed[p] + counted[p]),
                behind=behind,
                behind_is_lower_bound=counted[p] >= limit,
                oldest_unapplied_at=(
                    datetime.fromtimestamp(first / 1000, UTC)
                    if first is not None and behind
                    else None
                ),
            )
        )
    return found


@dataclass(frozen=True)
class PublishedBuild:
    """The newest release event of one (package, version) on the log: the build it names."""

    sha1: str
    sha256: str
    sequence: int


def published_builds(
    broker_url: str, topic: str, *, idle_timeout: float = 30.0
) -> dict[tuple[str, str], PublishedBuild]:
    """Every (package, version) released on ``topic``, with the build its newest event (the
    highest sequence) names: the log as the ledger.

    Reads every partition from its beginning to its end, keeping only these, so that a
    catalogue of any size fits in memory. Records are decoded (``decode_package_event``)
    but not verified: a release anyone produced counts as published (a tagged version is
    immutable; a dev version's next build names the one nodes hold). Records that do not
    decode as a package event are passed over. A topic that does not exist holds nothing.
    Raises ``BrokerUnavailableError``.
    """
    positions = dict.fromkeys(topic_partitions(broker_url, topic, timeout=idle_timeout), 0)
    if not positions:
        return {}
    found: dict[tuple[str, str], PublishedBuild] = {}
    for _, _, value, _, _ in _iter_to_end(
        broker_url, topic, positions, limit=1 << 62, timeout=idle_timeout
    ):
        try:
            event = decode_package_event(SignedEvent.from_bytes(value).payload)
        except RejectedError:
            continue
        if isinstance(event, ReleasePublished):
            key = (event.package, event.version)
            known = found.get(key)
            if known is None or event.sequence > known.sequence:
                artifact = event.artifact
                found[key] = PublishedBuild(artifact.sha1, artifact.sha256, event.sequence)
    return found


def published_releases(
    broker_url: str, topic: str, *, idle_timeout: float = 30.0
) -> set[tuple[str, str]]:
    """The (package, version) of every release event on ``topic`` (see ``published_builds``)."""
    return set(published_builds(broker_url, topic, idle_timeout=idle_timeout))
