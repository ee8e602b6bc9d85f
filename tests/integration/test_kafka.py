"""The Kafka clients against the real embedded broker (Tansu): topics, exact offsets, group lag."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from uuid import uuid4

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_followers import TopicFollower
from connectors.kafka_group_consumer import GroupConsumer
from connectors.kafka_producers import AsyncProducer, Delivered, EventProducer
from connectors.kafka_reading import group_positions, iter_partition, records_after
from connectors.kafka_topics import ensure_topics
from infra import devstack
from schemas.errors import BrokerUnavailableError, ConfigurationError

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:12]}"


def closed_broker_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"kafka://127.0.0.1:{probe.getsockname()[1]}"


def partition_counts(broker_url: str, *topics: str) -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap_servers(broker_url)}).list_topics(
        timeout=10
    )
    return {
        topic: len(metadata.topics[topic].partitions)
        for topic in topics
        if topic in metadata.topics
    }


def commit(broker_url: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for ``group`` as any consumer of the group would."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers(broker_url),
            "group.id": group,
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


# ---------------------------------------------------------------------------
# URLs and topics
# ---------------------------------------------------------------------------


def test_bootstrap_servers() -> None:
    assert bootstrap_servers("kafka://a:9092,b:9093") == "a:9092,b:9093"
    for bad in ("http://a:9092", "kafka://", "a:9092", "kafka://a:9092,b"):
        with pytest.raises(ConfigurationError, match=r"kafka://|has no port"):
            bootstrap_servers(bad)


def test_ensure_topics_creates_with_the_partition_count(stack: devstack.Stack) -> None:
    one, three = unique("t1"), unique("t3")

    ensure_topics(stack.broker_url, {one: 1, three: 3})

    assert partition_counts(stack.broker_url, one, three) == {one: 1, three: 3}


def test_ensure_topics_is_idempotent_and_leaves_existing_topics(stack: devstack.Stack) -> None:
    topic, added = unique("t"), unique("t")
    ensure_topics(stack.broker_url, {topic: 2})

    ensure_topics(stack.broker_url, {topic: 2})
    ensure_topics(stack.broker_url, {topic: 5, added: 1})  # no repartitioning of existing ones

    assert partition_counts(stack.broker_url, topic, added) == {topic: 2, added: 1}


def test_ensure_topics_on_a_closed_port_is_broker_unavailable() -> None:
    url = closed_broker_url()
    started = time.monotonic()

    with pytest.raises(BrokerUnavailableError, match=url):
        ensure_topics(url, {unique("t"): 1}, timeout=1.0)

    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------
# The producer: exact offsets from delivery reports
# ---------------------------------------------------------------------------


def test_produce_returns_exact_offsets(stack: devstack.Stack, producer: EventProducer) -> None:
    topic = unique("t")
    ensure_topics(stack.broker_url, {topic: 3})

    delivered = [producer.produce(topic, b"drupal/token", f"v{i}".encode()) for i in range(3)]

    partition = delivered[0].partition
    assert delivered == [Delivered(topic, partition, offset) for offset in (0, 1, 2)]


def test_produce_many_returns_offsets_in_order(
    stack: devstack.Stack, producer: EventProducer
) -> None:
    topic = unique("t")
    ensure_topics(stack.broker_url, {topic: 1})
    producer.produce(topic, b"k", b"first")

    delivered = producer.produce_many(topic, [(b"k", f"v{i}".encode()) for i in range(10)])

    assert [d.offset for d in delivered] == list(range(1, 11))
    assert {d.partition for d in delivered} == {0}
    assert producer.produce_many(topic, []) == []


def test_records_with_one_key_share_a_partition(
    stack: devstack.Stack, producer: EventProducer
) -> None:
    topic = unique("t")
    ensure_topics(stack.broker_url, {topic: 4})

    by_key = {
        key: {producer.produce(topic, key, b"v").partition for _ in range(3)}
        for key in (b"drupal/token", b"drupal/pathauto", b"drupal/views")
    }

    assert all(len(partitions) == 1 for partitions in by_key.values())


def test_produce_to_a_closed_port_is_broker_unavailable_in_bounded_time() -> None:
    url = closed_broker_url()
    unreachable = EventProducer(url, delivery_timeout=1.0)
    started = time.monotonic()

    with pytest.raises(BrokerUnavailableError) as raised:
        unreachable.produce(unique("t"), b"k", b"v")

    assert time.monotonic() - started < 5
    assert url in str(raised.value) or "refused" in str(raised.value)
    assert raised.value.retry_after > 0


async def test_an_async_producer_resolves_each_send_on_its_acknowledgement_in_order(
    stack: devstack.Stack,
) -> None:
    topic = unique("t")
    ensure_topics(stack.broker_url, {topic: 1})
    producer = AsyncProducer(stack.broker_url)
    try:
        sends = [producer.send(topic, b"drupal/token", f"v{i}".encode()) for i in range(50)]
        await asyncio.wait_for(asyncio.gather(*sends), timeout=30)
    finally:
        await asyncio.to_thread(producer.close)

    read = list(iter_partition(stack.broker_url, topic, 0))
    assert [value for _, value in read] == [f"v{i}".encode() for i in range(50)]


async def test_an_async_producer_to_a_closed_port_fails_the_send_in_bounded_time() -> None:
    producer = AsyncProducer(closed_broker_url(), delivery_timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailableError, match="did not acknowledge"):
            await asyncio.wait_for(producer.send(unique("t"), b"k", b"v"), timeout=10)
    finally:
        await asyncio.to_thread(producer.close, 0.1)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------
# Consumer group positions and exact lag
# ---------------------------------------------------------------------------


def test_group_positions_and_records_after_count_unconsumed_records(
    stack: devstack.Stack, producer: EventProducer
) -> None:
    topic, group = unique("t"), unique("g")
    ensure_topics(stack.broker_url, {topic: 2})
    # One record per produce call: the log end the broker reports is exact then.
    delivered = [producer.produce(topic, b"drupal/token", b"v") for _ in range(7)]
    busy = delivered[0].partition
    idle = 1 - busy

    before = {p.partition: p for p in group_positions(stack.broker_url, group, topic)}
    assert set(before) == {0, 1}
    assert before[busy].committed is None
    assert before[busy].log_end == 7
    assert before[busy].behind == 7
    assert before[idle].behind == 0

    commit(stack.broker_url, group, topic, {busy: 3})

    after = {p.partition: p for p in group_positions(stack.broker_url, group, topic)}
    assert after[busy].committed == 3
    assert after[busy].behind == 4
    assert after[idle].committed is None
    assert records_after(stack.broker_url, topic, {busy: 3, idle: 0}) == {busy: 4, idle: 0}


def test_records_after_is_exact_when_the_log_end_is_not(
    stack: devstack.Stack, producer: EventProducer
) -> None:
    # Batches: Tansu reports the log end as the last batch's base offset + 1 (DESIGN.md).
    topic, group = unique("t"), unique("g")
    ensure_topics(stack.broker_url, {topic: 1})
    producer.produce_many(topic, [(b"k", b"v")] * 5)
    producer.produce_many(topic, [(b"k", b"v")] * 10)
    commit(stack.broker_url, group, topic, {0: 4})

    [position] = group_positions(stack.broker_url, group, topic)
    exact = records_after(stack.broker_url, topic, {0: 4})

    assert exact == {0: 11}
    assert position.committed == 4
    # Approximate on Tansu, exact on Apache Kafka: never more, never negative.
    assert 0 <= position.behind <= exact[0]


def test_records_after_stops_at_the_limit(stack: devstack.Stack, producer: EventProducer) -> None:
    topic = unique("t")
    ensure_topics(stack.broker_url, {topic: 1})
    producer.produce_many(topic, [(b"k", b"v")] * 8)

    assert records_after(stack.broker_url, topic, {0: 0}, limit=5) == {0: 5}
    assert records_after(stack.broker_url, topic, {0: 8}) == {0: 0}


def test_group_positions_of_an_unknown_topic_is_empty_and_does_not_create_it(
    stack: devstack.Stack,
) -> None:
    topic = unique("absent")

    assert group_positions(stack.broker_url, unique("g"), topic) == []
    # A metadata request naming the topic would have the broker auto-create it with its
    # default partition count, which ensure_topics would then never correct.
    assert partition_counts(stack.broker_url, topic) == {}


def test_group_positions_on_a_closed_port_is_broker_unavailable() -> None:
    started = time.monotonic()

    with pytest.raises(BrokerUnavailableError):
        group_positions(closed_broker_url(), "g", "t", timeout=1.0)

    assert time.monotonic() - started < 5


def test_a_follower_reads_a_topic_from_its_beginning_and_keeps_following(
    stack: devstack.Stack, producer: EventProducer
) -> None:
    topic = unique("follow")
    ensure_topics(stack.broker_url, {topic: 2})
    for n in range(3):
        producer.produce(topic, f"k{n}".encode(), f"before-{n}".encode())
    seen: list[bytes] = []
    follower = TopicFollower(stack.broker_url, topic, seen.append)
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        producer.produce(topic, b"k9", b"after")
        while len(seen) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        follower.stop()
    assert sorted(seen) == [b"after", b"before-0", b"before-1", b"before-2"]


def test_a_follower_survives_a_record_its_callback_refuses(
    stack: devstack.Stack, producer: EventProducer
) -> None:
    topic = unique("follow-bad")
    ensure_topics(stack.broker_url, {topic: 1})
    kept: list[bytes] = []

    def on_record(value: bytes) -> None:
        if value == b"poison":
            raise ValueError("not a record of ours")
        kept.append(value)

    producer.produce(topic, b"k", b"poison")
    producer.produce(topic, b"k", b"fine")
    follower = TopicFollower(stack.broker_url, topic, on_record)
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while not kept and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        follower.stop()
    assert kept == [b"fine"]


def test_a_member_stopped_in_the_middle_of_a_rebalance_leaves_a_group_others_can_join(
    stack: devstack.Stack,
) -> None:
    """Tansu keeps a group stuck for good when a member leaves between a revocation and
    its next assignment; ``GroupConsumer.close`` waits for the assignment first (a worker
    stopped right after another one is the everyday case: a rolling restart)."""
    topic, group = unique("rebalance"), unique("group")
    ensure_topics(stack.broker_url, {topic: 4})
    events: list[tuple[str, str, list[int]]] = []

    def member(name: str) -> GroupConsumer:
        return GroupConsumer(
            stack.broker_url,
            topic,
            group,
            session_timeout=6.0,
            on_assign=lambda partitions: events.append((name, "assigned", partitions)),
            on_revoke=lambda partitions: events.append((name, "revoked", partitions)),
        )

    def poll_until(consumers: list[GroupConsumer], done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, events
            for consumer in consumers:
                consumer.poll(100, 0.05)

    def last(name: str) -> str | None:
        return next((kind for who, kind, _ in reversed(events) if who == name), None)

    first, second = member("first"), member("second")
    poll_until([first, second], lambda: last("first") == last("second") == "assigned")
    first.close()
    # The second is told to give its partitions back, and is stopped before it is
    # given them all again.
    poll_until([second], lambda: last("second") == "revoked")
    second.close()

    third = Consumer(
        {
            "bootstrap.servers": bootstrap_servers(stack.broker_url),
            "group.id": group,
            "session.timeout.ms": 6000,
        }
    )
    try:
        third.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(third.assignment()) < 4:
            assert time.monotonic() < deadline, f"the group is stuck: {events}"
            third.poll(0.5)
    finally:
        third.close()
