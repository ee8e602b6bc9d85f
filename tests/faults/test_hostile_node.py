"""A node that turns hostile after its admission: the directory's spot checks catch it.

The node is a proxy of region eu with a valid key of its own, registered and
heartbeating "in sync" (it claims more than eu applied). It serves eu's bytes
honestly until it is admitted, then turns: other bytes for every zip, or stale
metadata (p2 without the newest version of each package while its heartbeat
claims it applied it). Within a few spot checks the directory refuses it with
the reason, and sends no client there.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from connectors.kafka_producers import EventProducer
from infra import localnet
from schemas.composer import expand
from schemas.federation import registration_key, seal_registration, seal_status, status_key
from schemas.signing import SigningKey
from services.cli.status import read_node_book
from streams.policy import ReplicationPolicy
from streams.sync import registration_of
from tests.e2e.harness import Federation, federation, wait_until_served
from tests.e2e.test_directory import eventually, start_directory
from tests.e2e.test_regional_node import get_json, redirect_of

__all__ = ["federation"]
NODE_OPTIONS = {"eu": ["--status-every", "1"], "us": ["--status-every", "1"]}
PACKAGES = ("metatag", "token", "pathauto")


@dataclass
class Turncoat:
    """A hostile node: ``mode`` is honest, wrong-bytes or stale."""

    base: str
    key: SigningKey
    mode: str = "honest"


def newest_removed(body: bytes, package: str) -> bytes:
    document = orjson.loads(body)
    entries = expand(document["packages"][package])
    entries.sort(key=lambda e: tuple(int(n) for n in re.findall(r"\d+", str(e["version"]))))
    document["packages"][package] = entries[:-1]
    document.pop("minified", None)
    return orjson.dumps(document)


@pytest.fixture
def turncoat(federation: Federation) -> Iterator[Turncoat]:
    eu = federation.nodes["eu"]
    port = localnet.free_port()
    node = Turncoat(f"http://127.0.0.1:{port}", SigningKey.generate())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                with urllib.request.urlopen(eu.url + self.path, timeout=5) as answer:
                    body = answer.read().replace(eu.url.encode(), node.base.encode())
                    status = answer.status
            except urllib.error.HTTPError as exc:
                body, status = exc.read(), exc.code
            if node.mode == "wrong-bytes" and self.path.endswith(".zip"):
                body = b"PK other bytes than signed"
            elif node.mode == "stale" and self.path.startswith("/p2/") and status == 200:
                # p2/<name>.json or, for dev versions, p2/<name>~dev.json.
                package = self.path.removeprefix("/p2/").removesuffix(".json")
                package = package.removesuffix("~dev")
                body = newest_removed(body, package)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped = threading.Event()

    def heartbeats() -> None:
        """Register, then claim every second to have applied more than eu did."""
        producer = EventProducer(federation.stack.broker_url)
        registration = registration_of(node.key, "eu", node.base, ReplicationPolicy())
        producer.produce(
            federation.topics.status,
            registration_key(node.key.public_key.keyid),
            seal_registration(registration, node.key),
        )
        sequence = 0
        try:
            while not stopped.is_set():
                book = read_node_book(federation.stack.broker_url, federation.topics.status)
                eu_status = next((s for s in book.statuses.values() if s.base_url == eu.url), None)
                if eu_status is not None:
                    sequence += 1
                    claim = replace(
                        eu_status,
                        node_id=node.key.public_key.keyid,
                        base_url=node.base,
                        sequence=sequence,
                        heartbeat_at=datetime.now(UTC),
                        partitions=tuple(
                            replace(p, applied_offset=p.applied_offset + 1000)
                            for p in eu_status.partitions
                        ),
                    )
                    producer.produce(
                        federation.topics.status,
                        status_key(node.key.public_key.keyid),
                        seal_status(claim, node.key),
                    )
                stopped.wait(1.0)
        finally:
            producer.close()

    thread = threading.Thread(target=heartbeats, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        stopped.set()
        thread.join(30)
        server.shutdown()
        server.server_close()


def admission(directory: localnet.LocalProcess, base: str) -> dict[str, Any] | None:
    for node in get_json(f"{directory.url}/nodes.json")["nodes"]:
        if node["base_url"] == base:
            return node  # type: ignore[no-any-return]
    return None


def publish_versions(federation: Federation, minor: int) -> dict[str, Any]:
    """A release ``8.x-1.<minor>`` of each package, then a dev snapshot of a new branch
    (``<minor>.0.x-dev``, served from ``p2/<name>~dev.json``): each package's newest
    version, which spot checks test, is a dev one. Returns the stable releases."""
    events = {}
    for project in PACKAGES:
        event, _ = federation.release(project, f"8.x-1.{minor}")
        federation.publish(event)
        events[project] = event
    snapshots = []
    for project in PACKAGES:
        snapshot, _ = federation.release(project, f"{minor}.0.x-dev")
        federation.publish(snapshot)
        snapshots.append(snapshot)
    for event in [*events.values(), *snapshots]:
        wait_until_served(federation, event.package, event.version, nodes=["eu"])
    return events


@pytest.mark.parametrize("turn", ["wrong-bytes", "stale"])
def test_a_node_that_turns_hostile_after_admission_is_refused_at_a_spot_check(
    federation: Federation, turncoat: Turncoat, turn: str
) -> None:
    minor = 40 if turn == "wrong-bytes" else 50
    publish_versions(federation, minor)
    events = publish_versions(federation, minor + 1)
    directory = start_directory(
        federation, "--region-map", "127.0.0.0/8=eu", "--spot-check-every", "1"
    )

    def admitted() -> bool:
        entry = admission(directory, turncoat.base)
        return entry is not None and entry["admission"] == "admitted"

    eventually(admitted, "the turncoat admitted while honest", timeout=90)
    # Honest and admitted: it passes spot checks for a while (they run every second).
    time.sleep(4)
    entry = admission(directory, turncoat.base)
    assert entry is not None and entry["admission"] == "admitted", entry

    turncoat.mode = turn

    def refused() -> dict[str, Any] | None:
        entry = admission(directory, turncoat.base)
        return entry if entry is not None and entry["admission"] == "refused" else None

    entry = eventually(refused, f"the turncoat ({turn}) refused at a spot check", timeout=60)
    assert entry["reason"].startswith("failed a spot check after its admission"), entry
    expected = "sha1" if turn == "wrong-bytes" else "~dev.json does not list"
    assert expected in entry["reason"], entry
    # Every package's newest version is a dev snapshot: the spot check that caught it read
    # the dev document (stale) or fetched a dev zip (wrong bytes).
    assert ".0.x-dev" in entry["reason"], entry
    for project, event in events.items():
        path = f"/dist/drupal/{project}/{event.version}/{event.artifact.sha256}.zip"
        for _ in range(5):
            status, location = redirect_of(directory.url + path)
            assert status == 302 and location is not None, (status, location)
            assert not location.startswith(turncoat.base), location
