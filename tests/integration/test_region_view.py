"""A region's view on the real embedded broker: a worker writes, another process follows,
a stale worker's late record is ignored and its owner told, a reader restores from the topic,
and a read barrier is exact."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import ensure_topics
from connectors.view_store import LocalView, ViewFollower, marker_key
from infra import devstack
from schemas import layout
from schemas.package_state import PackageState, render_documents
from schemas.view import PackageView
from streams.rebuild import read_region_view
from streams.region_view import RegionView

pytestmark = pytest.mark.integration

PUBLIC = "http://eu.example"


@pytest.fixture
def topic(stack: devstack.Stack) -> str:
    name = f"fair.view.eu-{uuid4().hex[:10]}"
    ensure_topics(stack.broker_url, {name: 3}, compacted=[name])
    return name


def state(package: str, sequence: int) -> PackageState:
    return PackageState(package, sequence=sequence, applied={f"d{sequence}": f"t:0:{sequence}"})


def record(package: str, sequence: int) -> bytes:
    """A view record as a worker writes it."""
    return PackageView(
        package=package,
        sequence=sequence,
        position="t:0:1",
        state=state(package, sequence).to_json(),
        stable=b"{}",
        dev=b"{}",
        stable_modified=1,
        dev_modified=1,
        written_by="eu@a",
        written_at=datetime.now(UTC),
    ).to_bytes()


def worker_view(local: LocalView, producer: EventProducer, topic: str, name: str) -> RegionView:
    async def send(key: bytes, value: bytes) -> asyncio.Future[object]:
        await asyncio.to_thread(producer.produce, topic, key, value)
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    return RegionView(
        local,
        render=lambda written: render_documents(written, PUBLIC),
        send=send,
        written_by=name,
    )


def barrier(producer: EventProducer, topic: str, partitions: int = 3) -> dict[int, int]:
    return {
        p: producer.produce(topic, marker_key("test"), b"", partition=p).offset
        for p in range(partitions)
    }


def following(
    stack: devstack.Stack, topic: str, local: LocalView, **kwargs: object
) -> ViewFollower:
    follower = ViewFollower(stack.broker_url, topic, local, **kwargs)  # type: ignore[arg-type]
    follower.start()
    return follower


async def test_what_one_worker_writes_another_serves_and_a_late_older_record_changes_nothing(
    stack: devstack.Stack, topic: str, producer: EventProducer, tmp_path: Path
) -> None:
    writer_local = LocalView(tmp_path / "a.sqlite3")
    writer = worker_view(writer_local, producer, topic, "eu@a")
    reader = LocalView(tmp_path / "b.sqlite3", docroot=tmp_path / "docroot")
    older_seen: list[tuple[int, int]] = []
    follower = following(
        stack,
        topic,
        reader,
        on_older=lambda inc, held: older_seen.append((inc.sequence, held.sequence)),
    )
    try:
        first = await writer.write(state("drupal/token", 5), previous=None, redelivered=False)
        await first.acked
        newer = await writer.write(state("drupal/token", 7), previous=None, redelivered=False)
        await newer.acked
        # A stale worker's record of an older state lands after the newer one.
        stale_local = LocalView(None)
        stale = worker_view(stale_local, producer, topic, "eu@stale")
        late = await stale.write(state("drupal/token", 6), previous=None, redelivered=False)
        await late.acked
        assert follower.wait_past(barrier(producer, topic), timeout=30)

        held = reader.held("drupal/token")
        assert held is not None and held.sequence == 7 and held.written_by == "eu@a"
        assert older_seen == [(6, 7)]
        served = reader.document(layout.p2_key("drupal/token"))
        own = writer_local.document(layout.p2_key("drupal/token"))
        assert served is not None and own is not None
        assert (served.body, served.modified) == (own.body, own.modified)
        assert (tmp_path / "docroot" / layout.p2_key("drupal/token")).read_bytes() == served.body
    finally:
        follower.stop()


async def test_a_new_reader_restores_the_whole_view_from_the_topic(
    stack: devstack.Stack, topic: str, producer: EventProducer, tmp_path: Path
) -> None:
    writer = worker_view(LocalView(None), producer, topic, "eu@a")
    acks = []
    for n in range(60):
        written = await writer.write(state(f"drupal/p{n}", n + 1), previous=None, redelivered=False)
        acks.append(written.acked)
    await asyncio.gather(*acks)

    restored = read_region_view(stack.broker_url, topic, producer)
    assert restored.packages() == sorted(f"drupal/p{n}" for n in range(60))
    loaded = restored.load("drupal/p59")
    assert loaded is not None and loaded.sequence == 60


def test_a_reader_resumes_from_its_own_offsets_after_a_restart(
    stack: devstack.Stack, topic: str, producer: EventProducer, tmp_path: Path
) -> None:
    producer.produce(topic, b"drupal/a", record("drupal/a", 1))
    local = LocalView(tmp_path / "view.sqlite3")
    follower = following(stack, topic, local)
    assert follower.wait_past(barrier(producer, topic), timeout=30)
    follower.stop()
    read_before = follower.records
    local.close()

    producer.produce(topic, b"drupal/b", record("drupal/b", 1))
    again = LocalView(tmp_path / "view.sqlite3")
    resumed = following(stack, topic, again)
    try:
        assert resumed.wait_past(barrier(producer, topic), timeout=30)
        assert again.packages() == ["drupal/a", "drupal/b"]
        # Only what came after: not drupal/a again.
        assert resumed.records == 1 and read_before == 1
    finally:
        resumed.stop()


def test_a_read_barrier_waits_for_the_last_record_of_a_batch(
    stack: devstack.Stack, topic: str, producer: EventProducer
) -> None:
    """Tansu's high watermark under-reports the end by a batch (DESIGN.md): the barrier is a
    marker read back, so a reader past it has every record produced before it."""
    local = LocalView(None)
    writer_started = time.monotonic()
    records = [(f"drupal/m{n}".encode(), record(f"drupal/m{n}", 1)) for n in range(200)]
    producer.produce_many(topic, records)
    follower = following(stack, topic, local)
    try:
        assert follower.wait_past(barrier(producer, topic), timeout=30)
        assert len(local) == 200, (
            f"read {len(local)} of 200 after {time.monotonic() - writer_started:.1f} s"
        )
    finally:
        follower.stop()
