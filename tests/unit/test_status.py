"""The status a person or a monitoring check reads: region and node states, the rendered
tables, the silent bound, the exit code and the --json document."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from rich.console import Console

from schemas.federation import (
    HEARTBEAT_EVERY_SECONDS,
    MISSED_HEARTBEATS,
    SHOWN_STATES,
    SILENT_AFTER,
    NodeBook,
    NodeStatus,
    seal_registration,
    seal_status,
    shown_state,
)
from schemas.signing import SigningKey
from services.cli.status import (
    CRITICAL,
    OK,
    WARNING,
    RegionStatus,
    check_federation,
    exit_code,
    federation_table,
    severity,
    status_table,
)
from services.shared.status_views import node_rows
from streams.policy import ReplicationPolicy
from streams.sync import registration_of


def status(**changes: object) -> RegionStatus:
    fields: dict[str, object] = {
        "region": "eu",
        "url": "http://127.0.0.1:8081",
        "healthy": True,
        "committed": 12,
        "behind": 0,
        "behind_is_lower_bound": False,
        "trust_root": 2,
    }
    fields.update(changes)
    return RegionStatus(**fields)  # type: ignore[arg-type]


def test_states_say_in_sync_behind_and_down() -> None:
    assert status().state == "in sync"
    assert status(behind=3).state == "behind by 3 events"
    assert status(behind=10_000, behind_is_lower_bound=True).state == "behind by 10000+ events"
    assert status(healthy=False).state == "down"


def test_the_table_shows_every_region_with_its_root_and_state() -> None:
    console = Console(width=200, record=True)
    console.print(status_table([status(), status(region="us", behind=5, trust_root=None)]))
    text = console.export_text()

    rows = [line for line in text.splitlines() if "│ eu" in line or "│ us" in line]
    assert len(rows) == 2
    assert "v2" in rows[0] and "in sync" in rows[0] and "12" in rows[0]
    assert "behind by 5 events" in rows[1] and "v2" not in rows[1]


# --- silent and stopped nodes, the exit code and the --json document -------------------

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def signed_book(*nodes: tuple[str, str | None, timedelta, int]) -> NodeBook:
    """A book read from signed records: per node (region, heartbeat state or None for
    none yet, age of its last heartbeat, zips parked)."""
    book = NodeBook()
    for index, (region, state, age, pending) in enumerate(nodes):
        key = SigningKey(seed=bytes([index + 1]) * 32)
        url = f"http://{region}-{index}.example"
        registration = replace(
            registration_of(key, region, url, ReplicationPolicy()), registered_at=NOW - age
        )
        book.add(seal_registration(registration, key))
        if state is None:
            continue
        status = NodeStatus(
            node_id=key.public_key.keyid,
            region=region,
            base_url=url,
            sequence=1,
            heartbeat_at=NOW - age,
            partitions=(),
            events_behind=0 if state == "in-sync" else 3,
            behind_is_lower_bound=False,
            seconds_behind=None if state == "in-sync" else 4.0,
            artifacts_pending=pending,
            rejected_total=0,
            store_bytes=2_000,
            trust_root_version=2,
            state=state,
            detail="the node was shut down" if state == "stopped" else "",
        )
        book.add(seal_status(status, key))
    return book


def test_the_silent_bound_is_three_heartbeats_of_the_default_period() -> None:
    assert MISSED_HEARTBEATS * timedelta(seconds=HEARTBEAT_EVERY_SECONDS) == SILENT_AFTER
    assert timedelta(seconds=30) == SILENT_AFTER


@pytest.mark.parametrize(
    ("state", "age", "shown"),
    [
        ("in-sync", timedelta(seconds=30), "in-sync"),  # at the bound: still heard
        ("in-sync", timedelta(seconds=31), "silent"),
        ("catching-up", timedelta(seconds=5), "catching-up"),
        ("catching-up", timedelta(minutes=2), "silent"),
        ("degraded", timedelta(seconds=5), "degraded"),
        ("stopped", timedelta(seconds=1), "stopped"),
        ("stopped", timedelta(days=3), "stopped"),  # a goodbye never turns into silence
        (None, timedelta(seconds=5), "starting"),
        (None, timedelta(seconds=31), "silent"),  # registered, then never a heartbeat
    ],
)
def test_a_reader_shows_silent_past_the_bound_and_stopped_after_a_goodbye(
    state: str | None, age: timedelta, shown: str
) -> None:
    book = signed_book(("eu", state, age, 0))
    status = next(iter(book.statuses.values()), None)
    registration = next(iter(book.registrations.values()))
    heard = status.heartbeat_at if status else registration.registered_at
    assert shown_state(status, heard_at=heard, now=NOW) == shown
    (row,) = node_rows(book, now=NOW)
    assert row.state == shown


@pytest.mark.parametrize(
    ("state", "pending", "admission", "code"),
    [
        ("in-sync", 0, None, OK),
        ("in-sync", 0, "admitted", OK),
        ("catching-up", 0, None, WARNING),
        ("starting", 0, None, WARNING),
        ("in-sync", 2, None, WARNING),  # zips parked
        ("in-sync", 0, "pending", WARNING),
        ("in-sync", 0, "unknown", WARNING),  # the directory does not list it
        ("silent", 0, None, CRITICAL),
        ("stopped", 0, None, CRITICAL),
        ("degraded", 0, None, CRITICAL),  # trust root expired: frozen
        ("in-sync", 0, "refused", CRITICAL),  # unreachable, or serving other bytes
        ("in-sync", 0, "dropped", CRITICAL),
        ("catching-up", 3, "silent", CRITICAL),
        ("a-state-from-a-newer-node", 0, None, CRITICAL),
    ],
)
def test_each_state_maps_to_a_nagios_severity(
    state: str, pending: int, admission: str | None, code: int
) -> None:
    assert severity(state, artifacts_pending=pending, admission=admission) == code


def test_every_state_a_reader_shows_has_its_severity() -> None:
    assert {state: severity(state) for state in SHOWN_STATES} == {
        "in-sync": OK,
        "catching-up": WARNING,
        "starting": WARNING,
        "degraded": CRITICAL,
        "stopped": CRITICAL,
        "silent": CRITICAL,
    }


def test_the_exit_code_is_the_worst_node_and_a_warning_with_no_node() -> None:
    assert exit_code([OK, OK]) == OK
    assert exit_code([OK, WARNING, OK]) == WARNING
    assert exit_code([WARNING, CRITICAL, OK]) == CRITICAL
    assert exit_code([]) == WARNING


def test_silent_and_stopped_nodes_are_never_shown_in_sync_or_green() -> None:
    book = signed_book(
        ("eu", "in-sync", timedelta(seconds=2), 0),
        ("eu", "in-sync", timedelta(minutes=2), 0),  # the bug: shown green "2 min ago"
        ("us", "stopped", timedelta(minutes=2), 0),
    )
    check = check_federation(book, now=NOW)
    console = Console(width=200, record=True)
    console.print(federation_table(check))
    lines = console.export_text().splitlines()

    by_url = {node.row.base_url: node for node in check.nodes}
    fresh, silent, stopped = (by_url[f"http://{r}.example"] for r in ("eu-0", "eu-1", "us-2"))
    assert (fresh.row.state, fresh.row.health, fresh.severity) == ("in-sync", "ok", OK)
    assert (silent.row.state, silent.row.health, silent.severity) == ("silent", "down", CRITICAL)
    assert (stopped.row.state, stopped.row.health, stopped.severity) == (
        "stopped",
        "down",
        CRITICAL,
    )
    silent_line = next(line for line in lines if "eu-1.example" in line)
    stopped_line = next(line for line in lines if "us-2.example" in line)
    assert "silent: no heartbeat for more than 30 s" in silent_line
    assert "stopped: the node was shut down" in stopped_line
    assert "in sync" not in silent_line and "in sync" not in stopped_line
    assert check.exit_code == CRITICAL


def test_the_bound_is_the_readers_to_choose() -> None:
    book = signed_book(("eu", "in-sync", timedelta(seconds=45), 0))
    assert check_federation(book, now=NOW).exit_code == CRITICAL
    relaxed = check_federation(book, silent_after=timedelta(seconds=60), now=NOW)
    assert relaxed.exit_code == OK and relaxed.nodes[0].row.state == "in-sync"


#: The fields of the --json document; scripts read them by name, so they only ever grow.
DOCUMENT_FIELDS = {
    "checked_at",
    "status",
    "exit_code",
    "silent_after_seconds",
    "regions",
    "directory",
    "nodes",
}
NODE_FIELDS = {
    "region",
    "node_id",
    "base_url",
    "mode",
    "state",
    "severity",
    "sync",
    "detail",
    "heartbeat_at",
    "heartbeat_age_seconds",
    "events_behind",
    "behind_is_lower_bound",
    "seconds_behind",
    "artifacts_pending",
    "rejected_total",
    "store_bytes",
    "trust_root_version",
    "admission",
    "admission_reason",
}


def test_the_json_document_names_each_node_its_state_and_the_exit_code() -> None:
    book = signed_book(
        ("eu", "catching-up", timedelta(seconds=2), 0),
        ("us", "stopped", timedelta(seconds=90), 0),
        ("us", None, timedelta(seconds=1), 0),
    )
    admissions = {next(iter(book.registrations)): ("admitted", "served drupal/token")}
    check = check_federation(book, regions=("eu", "us"), admissions=admissions, now=NOW)

    document = orjson.loads(
        orjson.dumps(check.document(regions=("eu", "us"), directory="http://dir.example"))
    )

    assert set(document) == DOCUMENT_FIELDS
    assert document["status"] == "critical" and document["exit_code"] == CRITICAL
    assert document["checked_at"] == "2026-12-05T12:00:00Z"
    assert document["silent_after_seconds"] == 30.0
    assert document["regions"] == ["eu", "us"] and document["directory"] == "http://dir.example"
    nodes = {node["base_url"]: node for node in document["nodes"]}
    assert all(set(node) == NODE_FIELDS for node in nodes.values())
    behind, stopped, starting = (nodes[f"http://{r}.example"] for r in ("eu-0", "us-1", "us-2"))
    assert behind["state"] == "catching-up" and behind["severity"] == "warning"
    assert behind["events_behind"] == 3 and behind["seconds_behind"] == 4.0
    assert behind["heartbeat_at"] == "2026-12-05T11:59:58Z"
    assert behind["heartbeat_age_seconds"] == 2.0
    assert (behind["admission"], behind["admission_reason"]) == ("admitted", "served drupal/token")
    assert stopped["state"] == "stopped" and stopped["severity"] == "critical"
    assert stopped["detail"] == "the node was shut down"
    assert stopped["admission"] == "unknown"
    assert starting["state"] == "starting" and starting["heartbeat_at"] is None
    assert starting["events_behind"] is None and starting["trust_root_version"] is None
