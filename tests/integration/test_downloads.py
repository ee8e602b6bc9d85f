"""Download counts on the embedded broker: each region's workers produce them to the
region's partition of the downloads topic (through Faust, as a worker does) and follow
that partition alone, while a reader of the whole topic still sees every region's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest

from connectors.kafka_followers import TopicFollower
from connectors.kafka_reading import read_partition
from connectors.kafka_topics import (
    DOWNLOADS_PARTITIONS,
    Topics,
    ensure_region_topics,
    topic_partitions,
)
from connectors.store import StoreLocation
from infra import devstack
from schemas.events import DownloadCounts
from schemas.partitioning import region_partition
from schemas.signing import SigningKey
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.artifacts import HotStats
from streams.node import NodeStream
from streams.node_settings import NodeSettings, region_downloads_follower

pytestmark = pytest.mark.integration

EU, US = "eu", "us"
EU_ZIP, US_ZIP = "e" * 64, "f" * 64
ROOT_KEY = SigningKey(seed=b"\x51" * 32)
ROOT = build_root(
    version=1,
    root_keys=[ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[DelegationSpec("drupal/*", "drupal.org", (ROOT_KEY.public_key,), 1)],
)


@pytest.fixture
def topics(stack: devstack.Stack) -> Topics:
    """The federation's topics, as a node creates them, under a prefix of this test's own."""
    created = Topics.with_prefix(f"dl-{uuid4().hex[:8]}.")
    ensure_region_topics(stack.broker_url, created, EU, 1)
    return created


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def produce_counts(
    stack: devstack.Stack, topics: Topics, region: str, sha256: str, tmp: Path
) -> None:
    """One period of ``region``'s downloads, produced by a node's own flush."""
    stream = NodeStream(
        NodeSettings(
            region=region,
            broker_url=stack.broker_url,
            store=StoreLocation.from_url(stack.store_url),
            bucket=f"fairstream-{region}",
            public_url=f"http://{region}.example",
            pinned_root=ROOT.sign([ROOT_KEY]),
            data_dir=tmp / region,
            topics=topics,
        )
    )
    stream.tally.record("drupal/token", "1.9.0.0", sha256)

    async def flush() -> None:
        producer = await stream.app.maybe_start_producer()
        try:
            await stream._flush_downloads()
        finally:
            await producer.stop()

    asyncio.run(flush())
    assert stream.tally.drain(stream.now()) is None, "the counts were not produced"


def regions_of(values: list[bytes]) -> list[str]:
    return [DownloadCounts.from_bytes(value).region for value in values]


def test_a_region_reads_only_its_own_partition_of_the_download_counts(
    stack: devstack.Stack, topics: Topics, tmp_path: Path
) -> None:
    partitions = topic_partitions(stack.broker_url, topics.downloads)
    assert partitions == list(range(DOWNLOADS_PARTITIONS))
    eu_partition = region_partition(EU, DOWNLOADS_PARTITIONS)
    us_partition = region_partition(US, DOWNLOADS_PARTITIONS)
    assert eu_partition != us_partition

    eu_read: list[bytes] = []
    eu_hot = HotStats(EU)

    def eu_record(value: bytes) -> None:
        eu_read.append(value)
        eu_hot.add_record(value)

    everything: list[bytes] = []
    eu_follower = region_downloads_follower(stack.broker_url, topics.downloads, EU, eu_record)
    whole = TopicFollower(stack.broker_url, topics.downloads, everything.append)
    eu_follower.start()
    whole.start()
    try:
        produce_counts(stack, topics, US, US_ZIP, tmp_path)
        produce_counts(stack, topics, EU, EU_ZIP, tmp_path)
        produce_counts(stack, topics, US, US_ZIP, tmp_path)

        wait_for(lambda: len(everything) == 3, "the whole topic's follower read every record")
        wait_for(lambda: eu_hot.snapshot().get(EU_ZIP) is not None, "eu read its counts")
        time.sleep(1.0)  # time enough for a follower of the whole topic to read us's too
    finally:
        eu_follower.stop()
        whole.stop()

    assert sorted(regions_of(everything)) == [EU, US, US]
    assert eu_follower.followed == [eu_partition]
    assert whole.followed == list(range(DOWNLOADS_PARTITIONS))
    assert regions_of(eu_read) == [EU], "another region's counts reached eu's follower"
    assert set(eu_hot.snapshot()) == {EU_ZIP}
    # Where the node's producer put them: each region's records in its partition alone.
    in_eu = [value for _, value in read_partition(stack.broker_url, topics.downloads, eu_partition)]
    in_us = [value for _, value in read_partition(stack.broker_url, topics.downloads, us_partition)]
    assert (regions_of(in_eu), regions_of(in_us)) == ([EU], [US, US])
