"""schemas.partitioning: which partition of the downloads topic holds a region's counts,
and the node producing to it and following it alone."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from confluent_kafka import cimpl
from hypothesis import given
from hypothesis import strategies as st

from connectors.kafka_topics import DOWNLOADS_PARTITIONS, Topics
from connectors.store import StoreLocation
from schemas.errors import BrokerUnavailableError
from schemas.events import DownloadCounts
from schemas.partitioning import murmur2, region_partition
from schemas.signing import SigningKey
from services.publishing.trust_admin import DelegationSpec, build_root
from streams import node as node_module
from streams.node import NodeStream
from streams.node_settings import NodeSettings, region_downloads_follower
from streams.sinks import Record

# Region names as schemas.federation accepts them.
REGIONS = st.from_regex(re.compile(r"[a-z0-9][a-z0-9-]{0,40}"), fullmatch=True)
ROOT_KEY = SigningKey(seed=b"\x50" * 32)
ROOT = build_root(
    version=1,
    root_keys=[ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[DelegationSpec("drupal/*", "drupal.org", (ROOT_KEY.public_key,), 1)],
)


def signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def test_murmur2_is_kafkas() -> None:
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2 (the Java method returns an int).
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {data: signed(murmur2(data)) for data in cases} == cases


def test_known_regions_have_fixed_partitions() -> None:
    # A change here moves every region's counts: the producers and readers of a running
    # network would disagree.
    assert [region_partition(r, 64) for r in ("eu", "us", "meta", "directory")] == [42, 9, 44, 14]
    assert [region_partition(r, 12) for r in ("eu", "us", "meta", "directory")] == [10, 1, 8, 6]
    assert region_partition("eu", 1) == 0


@given(REGIONS, st.integers(min_value=1, max_value=10_000))
def test_every_region_maps_into_the_topic_as_kafka_clients_would_key_it(
    region: str, partitions: int
) -> None:
    chosen = region_partition(region, partitions)
    assert 0 <= chosen < partitions
    assert region_partition(region, partitions) == chosen
    key = region.encode()
    # Kafka's Java default partitioner and aiokafka's (Faust's), and librdkafka's murmur2
    # partitioner: the same partition for key = region.
    assert chosen == (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions
    assert chosen == cimpl.murmur2(key, partitions)


def test_regions_spread_over_the_partitions() -> None:
    used = {region_partition(f"region-{n}", DOWNLOADS_PARTITIONS) for n in range(1000)}
    assert len(used) == DOWNLOADS_PARTITIONS


def test_a_topic_has_at_least_one_partition() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        region_partition("eu", 0)


def test_the_downloads_topic_is_created_with_more_than_one_partition() -> None:
    topics = Topics.with_prefix("x.")
    assert topics.partitions(3)[topics.downloads] == DOWNLOADS_PARTITIONS > 1


# --- the node ------------------------------------------------------------------------------


class SentTo:
    """Stands for the downloads topic's sink: records what was written, where."""

    name = "fair.downloads"

    def __init__(self) -> None:
        self.sent: list[Record] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.sent.extend(records)


def node(tmp_path: Path, region: str) -> tuple[NodeStream, SentTo]:
    stream = NodeStream(
        NodeSettings(
            region=region,
            broker_url="kafka://127.0.0.1:1",
            store=StoreLocation.from_url("s3://fairstream-key:secret-key@127.0.0.1:1"),
            bucket=f"fairstream-{region}",
            public_url=f"http://{region}.example",
            pinned_root=ROOT.sign([ROOT_KEY]),
            data_dir=tmp_path,
        )
    )
    topic = SentTo()
    stream.downloads_sink = topic
    return stream, topic


def test_a_node_sends_its_counts_to_its_regions_partition_and_asks_the_count_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def partitions(broker_url: str, topic: str, *, timeout: float) -> list[int]:
        asked.append(topic)
        return list(range(64))

    monkeypatch.setattr(node_module, "topic_partitions", partitions)
    stream, topic = node(tmp_path, "us")

    async def flush_twice() -> None:
        for _ in range(2):
            stream.tally.record("drupal/token", "1.9.0.0", "ab" * 32)
            await stream._flush_downloads()

    asyncio.run(flush_twice())

    # Told explicitly, not left to the client's partitioner.
    assert [sent.partition for sent in topic.sent] == [9, 9]
    assert [sent.key for sent in topic.sent] == [b"us", b"us"]
    assert DownloadCounts.from_bytes(topic.sent[0].value).region == "us"
    assert asked == [stream.settings.topics.downloads]


@pytest.mark.parametrize(
    "lookup",
    [lambda *a, **k: [], lambda *a, **k: (_ for _ in ()).throw(BrokerUnavailableError("down"))],
    ids=["no topic", "broker down"],
)
def test_counts_not_sent_for_want_of_a_partition_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lookup: Any
) -> None:
    monkeypatch.setattr(node_module, "topic_partitions", lookup)
    stream, topic = node(tmp_path, "eu")
    stream.tally.record("drupal/token", "1.9.0.0", "ab" * 32)

    asyncio.run(stream._flush_downloads())

    assert topic.sent == []
    kept = stream.tally.drain(datetime.now(UTC))
    assert kept is not None and [c.downloads for c in kept.counts] == [1]


def test_a_node_follows_only_its_regions_partition_of_the_downloads_topic(
    tmp_path: Path,
) -> None:
    stream, _ = node(tmp_path, "eu")
    follower = stream.downloads_follower
    assert follower._topic == stream.settings.topics.downloads
    assert follower._chosen(list(range(64))) == [42]
    assert follower._chosen(list(range(12))) == [10]
    assert follower._chosen([0]) == [0]


def test_a_follower_leaves_out_partitions_the_topic_lacks() -> None:
    follower = region_downloads_follower("kafka://127.0.0.1:1", "t", "eu", lambda value: None)
    follower._choose = lambda found: [3, 99]
    assert follower._chosen([0, 1, 2, 3]) == [3]
