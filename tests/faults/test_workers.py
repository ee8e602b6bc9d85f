"""A rebalance storm (a region's workers 1 -> 3 -> 1 under load) and a node whose clock is a
day off: nothing lost, doubled or rolled back."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.cli.status import read_node_book
from tests.faults.harness import FaultFederation, Load, Poller


def test_a_rebalance_storm_loses_and_doubles_nothing(fault_federation: FaultFederation) -> None:
    federation = fault_federation
    with Load(federation), Poller(federation):
        federation.rebalance_storm(hold=5)
        time.sleep(3)
    federation.wait_until_quiet(timeout=180)
    verdict = federation.history()
    assert verdict.clean, str(verdict)


def nodes(directory_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{directory_url}/nodes.json", timeout=5) as response:
        return orjson.loads(response.read())["nodes"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("days", [1, -1])
def test_a_node_with_its_clock_a_day_off_serves_and_stays_admitted(
    fault_federation: FaultFederation, days: int
) -> None:
    """The node's wall clock is a day off (its verification, records and heartbeats): it
    still serves every acknowledged release, and the directory, which judges liveness on
    its own clock, still admits it and sends it clients.

    libfaketime would be the outside way to skew it, but it hangs librdkafka (measured:
    an AdminClient never returns under LD_PRELOAD=libfaketime), so the node's clock is
    skewed inside with a hidden --clock-skew."""
    federation = fault_federation
    with Load(federation), Poller(federation):
        skewed = federation.start_worker("us", ["--clock-skew", str(days * 86400)])
        time.sleep(10)
    federation.wait_until_quiet(timeout=180)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    assert skewed.alive(), skewed.log_tail(30)
    log = skewed.log.read_text(errors="replace")
    assert "root-expired" not in log and "Traceback" not in log, skewed.log_tail(40)

    directory = federation.start_directory("--region-map", "127.0.0.0/8=us")
    deadline = time.monotonic() + 60
    entry: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        entry = next((n for n in nodes(directory.url) if n["base_url"] == skewed.url), None)
        if entry is not None and entry["admission"] == "admitted" and entry["live"]:
            break
        time.sleep(0.5)
    assert entry is not None and entry["admission"] == "admitted" and entry["live"], entry
    # Its heartbeat carries its own (wrong) time; liveness never depended on it.
    book = read_node_book(federation.stack.broker_url, federation.topics.status)
    status = next(s for s in book.statuses.values() if s.base_url == skewed.url)
    off_by = (status.heartbeat_at - datetime.now(UTC)).total_seconds()
    assert abs(off_by - days * 86400) < 600, status.heartbeat_at
    directory.stop()
    federation.start_worker("us")  # the next tests get a node with the right time
