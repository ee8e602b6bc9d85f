"""The `fairstream` command driven by a script: `--json` documents, exit codes, and logs in a
format a machine reads (one JSON object per line on stderr, an HTTP access log).

Each case runs the installed console script in a subprocess against the session's
embedded broker and store, as a script or a supervisor would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from infra import devstack
from infra.localnet import free_port
from tests.integration.test_cli_mistakes import (
    fairstream,
    make_work,
    start,
    stopped_by,
    wait_until_answering,
)

pytestmark = pytest.mark.integration

#: The fields every JSON log line carries.
LOG_FIELDS = {"time", "level", "logger", "message"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return make_work(tmp_path)


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` as a JSON log record, each checked for the common fields."""
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)  # a line that is not one JSON object fails here
        assert record.keys() >= LOG_FIELDS, line
        assert ISO_UTC.match(record["time"]), line
        records.append(record)
    return records


# --- --json ----------------------------------------------------------------------------


def test_dev_status_json_says_what_runs_with_the_exit_code(
    work: Path, stack: devstack.Stack
) -> None:
    running = fairstream("dev", "status", "--json", "--data-dir", stack.data_dir, cwd=work)
    absent = fairstream("dev", "status", "--json", "--data-dir", "nothing-here", cwd=work)

    assert running.returncode == 0, running.stderr
    document = json.loads(running.stdout)
    assert document["running"] is True and document["recorded"] is True
    assert document["exit_code"] == 0
    assert document["broker_url"] == stack.broker_url
    assert document["store_url"] == stack.store_url
    assert {c["name"] for c in document["components"]} == {"broker", "store"}
    assert all(c["running"] and c["pid"] > 0 for c in document["components"])

    assert absent.returncode == 3, absent.stderr
    assert json.loads(absent.stdout) == {
        "data_dir": str(work / "nothing-here"),
        "recorded": False,
        "running": False,
        "exit_code": 3,
        "broker_url": None,
        "store_url": None,
        "components": [],
    }


def test_config_check_json_lists_settings_and_problems(work: Path) -> None:
    (work / "good.toml").write_text(
        'region = "eu"\nroot = "root.avro"\nquota = 21474836480\n'
        'max_artifact_size = "512 MiB"\nstore = "s3://key:secret@minio:9000"\n'
    )
    (work / "bad.toml").write_text('region = "eu"\nroot = "root.avro"\nqouta = "20G"\n')

    good = fairstream("config", "check", "good.toml", "--json", cwd=work)
    bad = fairstream("config", "check", "bad.toml", "--json", cwd=work)

    assert good.returncode == 0, good.stdout + good.stderr
    document = json.loads(good.stdout)
    assert document["ok"] is True and document["exit_code"] == 0 and document["problems"] == []
    assert document["command"] == "node-run" and document["file"] == "good.toml"
    settings = {s["key"]: s for s in document["settings"]}
    # Sizes: a TOML integer and a string with units, both as the command takes them.
    assert settings["quota"]["value"] == 20 * 1024**3
    assert settings["max_artifact_size"]["value"] == 512 * 1024**2
    assert settings["quota"]["source"] == "file"
    assert settings["store"]["value"] == "s3://key:***@minio:9000"
    assert settings["public_url"] == {
        "key": "public_url",
        "value": None,
        "source": "default",
        "environment_variable": "FAIRSTREAM_PUBLIC_URL",
    }

    assert bad.returncode == 1, bad.stdout + bad.stderr
    problems = json.loads(bad.stdout)["problems"]
    assert [(p["key"], p["kind"]) for p in problems] == [("qouta", "unknown-key")]
    assert "did you mean 'quota'?" in problems[0]["message"]


def test_import_and_rebuild_json_summaries(work: Path, stack: devstack.Stack) -> None:
    port = free_port()
    made = fairstream(
        "catalogue",
        "generate",
        "cat",
        "--projects",
        "3",
        "--base-url",
        f"http://127.0.0.1:{port}",
        cwd=work,
    )
    assert made.returncode == 0, made.stderr
    origin = start("origin", "serve", "cat", "--listen", f"127.0.0.1:{port}", cwd=work)
    prefix = f"script-{uuid4().hex[:8]}-"
    common = ["--broker", stack.broker_url, "--topic-prefix", prefix]
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/health", origin)
        import_args = ["import", f"http://127.0.0.1:{port}", "--key", "keys/drupal.key"]
        import_args += ["--checksums", "cat/checksums.json", "--root", "root.avro", "--json"]
        first = fairstream(*import_args, *common, cwd=work)
        again = fairstream(*import_args, *common, cwd=work)
    finally:
        stopped_by(origin, signal.SIGTERM)
    rebuild_args = ["node", "rebuild", "--region", f"r{uuid4().hex[:8]}", "--root", "root.avro"]
    rebuild_args += ["--public-url", "http://127.0.0.1:1", "--mode", "metadata-only", "--json"]
    rebuild_args += ["--store", stack.store_url]
    rebuilt = fairstream(*rebuild_args, *common, cwd=work)
    unchanged = fairstream(*rebuild_args, *common, cwd=work)

    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    published = summary["published"]
    assert summary["packages"] == 3 and published > 3 and summary["skipped"] == []
    assert summary["repository"] == f"http://127.0.0.1:{port}"
    assert summary["downloads"] == 0  # sha256 and sizes from --checksums
    assert {"requests", "retries", "elapsed_seconds"} <= summary.keys()
    assert again.returncode == 0, again.stderr
    skipped = json.loads(again.stdout)["skipped"]
    assert [(s["reason"], s["counts"], s["count"]) for s in skipped] == [
        ("already published", "releases", published)
    ]
    assert skipped[0]["example"].endswith(": on the releases topic")

    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)  # the document alone: no progress bar on stdout
    assert report["records"] == published and report["packages"] == 3
    assert report["states_written"] == 3 and report["refused"] == {}
    assert unchanged.returncode == 0, unchanged.stderr
    repeat = json.loads(unchanged.stdout)
    assert repeat["states_written"] == 0 and repeat["documents_written"] == 0


# --- logs ------------------------------------------------------------------------------


def test_node_run_logs_one_json_object_per_line_with_an_access_log(
    work: Path, stack: devstack.Stack
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRSTREAM_")}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fairstream")),
            "--access-log",
            *("node", "run", "--region", "jsonlog", "--root", "root.avro"),
            *("--broker", stack.broker_url, "--store", stack.store_url),
            *("--topic-prefix", f"jsonlog-{uuid4().hex[:8]}-", "--session-timeout", "6"),
            *("--listen", f"127.0.0.1:{port}", "--data-dir", "state"),
        ],
        cwd=work,
        env={**env, "FAIRSTREAM_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_until_answering(f"http://127.0.0.1:{port}/health", process)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/packages.json", headers={"User-Agent": "composer/2.8"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    stdout, stderr = stopped_by(process, signal.SIGTERM)

    assert process.returncode == 0, stderr
    records = json_lines(stderr)
    assert stdout == ""
    # The default level is info: the node's own lines and Faust's, each one object.
    assert any(r["logger"] == "streams.sync" and "registered node" in r["message"] for r in records)
    assert any(r["logger"].startswith("faust.") for r in records)
    assert {r["level"] for r in records} <= {"debug", "info", "warning", "error", "critical"}
    # No box tables of Faust's own formatter, inside a message either.
    assert not any("+----" in r["message"] or "┌" in r["message"] for r in records)
    access = [r for r in records if r["logger"] == "aiohttp.access"]
    answered = next(r for r in access if r["path"] == "/packages.json")
    assert answered["method"] == "GET" and answered["status"] == 200
    assert answered["remote"] == "127.0.0.1" and answered["user_agent"] == "composer/2.8"
    assert answered["bytes"] > 0 and answered["seconds"] >= 0


def test_origin_serve_logs_at_the_level_asked_with_a_text_access_log(work: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRSTREAM_")}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fairstream")),
            *("origin", "serve", "adir", "--listen", f"127.0.0.1:{port}"),
        ],
        cwd=work,
        env={**env, "FAIRSTREAM_LOG_LEVEL": "debug", "FAIRSTREAM_ACCESS_LOG": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_until_answering(f"http://127.0.0.1:{port}/health", process)
    _, stderr = stopped_by(process, signal.SIGTERM)

    assert process.returncode == 0, stderr
    assert re.search(r"^\S+ \S+ DEBUG asyncio: ", stderr, re.MULTILINE), stderr
    assert re.search(
        r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO aiohttp\.access: 127\.0\.0\.1 "GET /health" 200 ',
        stderr,
        re.MULTILINE,
    ), stderr


def test_librdkafka_lines_come_through_the_json_format(work: Path) -> None:
    # A producer whose broker is down: librdkafka logs its failures to connect.
    script = textwrap.dedent(
        """
        import time
        from confluent_kafka import Producer
        from connectors.kafka_connection import client_config
        from services.shared.logs import LogSettings, configure_logging

        configure_logging(LogSettings(format="json"))
        producer = Producer(client_config("kafka://127.0.0.1:1"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            producer.poll(0.2)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    records = json_lines(result.stderr)
    from_librdkafka = [r for r in records if r["logger"] == "connectors.kafka.librdkafka"]
    assert from_librdkafka, result.stderr
    assert "%3|" not in result.stderr
    # Held back: one line of each kind, not one per reconnect.
    assert len(from_librdkafka) <= 5, result.stderr


def test_a_mistake_is_an_error_record_with_json_logs(work: Path) -> None:
    result = fairstream(
        "--log-format",
        "json",
        *("node", "run", "--region", "eu", "--root", "missing.avro"),
        *("--broker", "kafka://127.0.0.1:1", "--store", "s3://key:secret@127.0.0.1:1"),
        *("--listen", "127.0.0.1:0", "--data-dir", "state"),
        cwd=work,
    )

    assert result.returncode == 1, result.stderr
    last = json_lines(result.stderr)[-1]
    assert last["level"] == "error" and last["logger"] == "fairstream"
    assert "missing.avro" in last["message"] and "No such file" in last["message"]
