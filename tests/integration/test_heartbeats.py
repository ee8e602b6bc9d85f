"""Heartbeats on the embedded broker: the goodbye of a worker that stops cleanly (SIGTERM,
Ctrl-C), bounded when the broker is down, and what `fairstream status` then says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import orjson
import pytest

from connectors.kafka_topics import Topics, ensure_region_topics
from connectors.object_store import ObjectStore
from connectors.store import S3Store, StoreLocation
from infra import devstack, localnet
from schemas.signing import SigningKey
from schemas.trust import TrustRoot
from services.cli.status import CRITICAL, read_node_book
from streams.node_settings import group_id
from streams.policy import ReplicationPolicy
from streams.sync import GOODBYE_SECONDS, StatusReporter, registration_of
from tests.roots import write_drupal_root

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(stack: devstack.Stack) -> Topics:
    """The federation's topics under a prefix of this test's own."""
    created = Topics.with_prefix(f"hb-{uuid4().hex[:8]}.")
    ensure_region_topics(stack.broker_url, created, "eu", 2)
    return created


@pytest.fixture
def root(tmp_path: Path) -> tuple[Path, TrustRoot]:
    path = tmp_path / "root.avro"
    return path, write_drupal_root(path, SigningKey.generate(), SigningKey.generate())


def reporter(
    broker_url: str, topics: Topics, store: ObjectStore, root: TrustRoot
) -> StatusReporter:
    key = SigningKey.generate()
    return StatusReporter(
        key=key,
        registration=registration_of(key, "eu", "http://127.0.0.1:9", ReplicationPolicy()),
        broker_url=broker_url,
        topics=topics,
        group=group_id("eu", topics),
        store=store,
        trust_root=lambda: root,
    )


def test_a_goodbye_follows_the_last_heartbeat_and_no_heartbeat_follows_it(
    stack: devstack.Stack,
    topics: Topics,
    location: StoreLocation,
    root: tuple[Path, TrustRoot],
) -> None:
    store = S3Store(location, f"hb-{uuid4().hex[:8]}")
    store.ensure_bucket()
    node = reporter(stack.broker_url, topics, store, root[1])
    node.register()
    heartbeat = node.report()
    assert heartbeat is not None and heartbeat.state == "in-sync"

    started = time.monotonic()
    goodbye = node.goodbye()
    took = time.monotonic() - started
    after = node.report()  # a heartbeat timer that fires during the stop
    node.close()

    assert goodbye is not None and goodbye.state == "stopped", "the broker did not take it"
    assert took < GOODBYE_SECONDS + 1, f"the goodbye took {took:.1f} s"
    assert goodbye.sequence > heartbeat.sequence
    assert goodbye.partitions == heartbeat.partitions  # the last measured figures
    assert after is None
    last = read_node_book(stack.broker_url, topics.status).statuses[node.node_id]
    assert (last.state, last.sequence, last.detail) == (
        "stopped",
        goodbye.sequence,
        "the node was shut down",
    )


def test_a_goodbye_with_the_broker_down_gives_up_within_its_bound(
    topics: Topics, location: StoreLocation, root: tuple[Path, TrustRoot]
) -> None:
    closed = f"kafka://127.0.0.1:{localnet.free_port()}"
    node = reporter(closed, topics, S3Store(location, "hb-unused"), root[1])

    started = time.monotonic()
    goodbye = node.goodbye()
    took = time.monotonic() - started

    assert goodbye is None
    assert took < GOODBYE_SECONDS + 1.5, f"the goodbye held the stop for {took:.1f} s"


# --- a worker process stopped by a signal ------------------------------------------------


def fairstream_status(
    stack: devstack.Stack, topics: Topics, *args: str, columns: str | None = "200"
) -> subprocess.CompletedProcess[str]:
    """``fairstream status`` with stdout a pipe (not a terminal), as a monitoring check
    runs it; ``columns=None`` leaves COLUMNS unset."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    prefix = topics.releases.removesuffix("fair.releases")
    command = ["status", "--broker", stack.broker_url, "--topic-prefix", prefix, *args]
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture
def workers(
    stack: devstack.Stack, topics: Topics, root: tuple[Path, TrustRoot], tmp_path: Path
) -> Iterator[list[localnet.LocalProcess]]:
    """Two workers of region eu, heartbeating every second; stopped (SIGKILL at worst)
    after the test."""
    started = [
        localnet.start_node(
            "eu",
            broker_url=stack.broker_url,
            store_url=stack.store_url,
            root=root[0],
            data_dir=tmp_path / "nodes",
            topic_prefix=topics.releases.removesuffix("fair.releases"),
            partitions=2,
            bucket=f"hb-{uuid4().hex[:8]}",
            wait=False,
            options=["--status-every", "1"],
        )
        for _ in range(2)
    ]
    try:
        for worker in started:
            worker.wait_until_answering("/health", timeout=120)
        yield started
    finally:
        for worker in started:
            worker.stop()


def test_workers_stopped_by_sigterm_and_ctrl_c_say_goodbye_and_status_exits_2(
    stack: devstack.Stack, topics: Topics, workers: list[localnet.LocalProcess]
) -> None:
    urls = {worker.url for worker in workers}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        book = read_node_book(stack.broker_url, topics.status)
        running = {s.base_url for s in book.statuses.values() if s.state == "in-sync"}
        if running >= urls:
            break
        time.sleep(0.5)
    assert running >= urls, f"no in-sync heartbeat of both workers: {running}"
    healthy = fairstream_status(stack, topics)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr

    for worker, sent in zip(workers, (signal.SIGTERM, signal.SIGINT), strict=True):
        worker.process.send_signal(sent)
    for worker in workers:
        try:
            worker.process.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{worker.name} did not stop:\n{worker.log_tail(30)}")

    book = read_node_book(stack.broker_url, topics.status)
    states = {s.base_url: (s.state, s.detail) for s in book.statuses.values()}
    for worker in workers:
        assert states[worker.url] == ("stopped", "the node was shut down"), worker.log_tail(30)

    # Right after the stop: no time to go silent, the goodbye alone says it.
    table = fairstream_status(stack, topics, columns=None)
    assert table.returncode == CRITICAL, table.stdout + table.stderr
    for url in urls:
        # Piped, the table is not cut to 80 columns: each node is one line.
        line = next((line for line in table.stdout.splitlines() if url in line), "")
        assert "stopped: the node was shut down" in line, table.stdout
    assert "in sync" not in table.stdout

    as_json = fairstream_status(stack, topics, "--json")
    assert as_json.returncode == CRITICAL, as_json.stderr
    document = orjson.loads(as_json.stdout)
    assert document["status"] == "critical" and document["exit_code"] == CRITICAL
    nodes = {node["base_url"]: node for node in document["nodes"]}
    assert nodes.keys() == urls
    for node in nodes.values():
        assert (node["state"], node["severity"]) == ("stopped", "critical")
        heartbeat_at = datetime.fromisoformat(node["heartbeat_at"])
        assert datetime.now(UTC) - heartbeat_at < timedelta(minutes=2)
