"""The status pages' pure parts: the lag chart, the package view, escaping, page answers,
and the directory's rows of stopped and silent nodes. No sockets: pages are rendered
through aiohttp's mocked requests over in-memory sources."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from connectors.memory_store import MemoryStore
from schemas import layout
from schemas.federation import LagSample, NodeStatus, seal_registration, seal_status
from schemas.package_state import PackageState, VersionRecord
from schemas.signing import SigningKey
from services.directory.http_app import Directory, DirectoryStatus
from services.directory.registry import RegionMap, Registry
from services.publishing.trust_admin import DelegationSpec, build_root
from services.shared.lag_chart import lag_chart
from services.shared.node_own_status import NodeOwnStatus
from services.shared.status_pages import StatusPages
from services.shared.status_views import (
    NetworkView,
    NodeRow,
    PackageView,
    RejectionRow,
    Series,
    age_text,
    package_view,
)
from streams.artifact_fetch import provenance
from streams.artifacts import Source
from streams.policy import ReplicationPolicy
from streams.sync import registration_of

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ROOT_KEY, PUBLISHER, OLD_PUBLISHER = (SigningKey(seed=bytes([n]) * 32) for n in (1, 2, 3))
HOSTILE = '<img src=x onerror="alert(1)">'


def root(*publishers: SigningKey):  # type: ignore[no-untyped-def]
    return build_root(
        version=2,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[
            DelegationSpec("drupal/*", "drupal.org", tuple(k.public_key for k in publishers), 1)
        ],
    )


def record(offset: int, signed_by: tuple[str, ...], yanked: str | None = None) -> VersionRecord:
    return VersionRecord(
        drupal_version=f"8.x-1.{offset}",
        sha256=f"{offset:064x}",
        sha1=f"{offset:040x}",
        size=100 + offset,
        composer={},
        yanked=yanked,
        origin_url=f"https://ftp.drupal.org/files/projects/token-8.x-1.{offset}.zip",
        position=f"fair.releases:0:{offset}",
        signed_by=signed_by,
    )


STATE = PackageState(
    "drupal/token",
    versions={
        "1.9.0": record(9, (OLD_PUBLISHER.public_key.keyid,)),
        "1.10.0": record(10, (PUBLISHER.public_key.keyid,), yanked=HOSTILE),
        "1.2.0": record(2, ()),
    },
)


def samples(*values: int) -> list[LagSample]:
    return [LagSample(NOW + timedelta(seconds=10 * i), v) for i, v in enumerate(values)]


def test_no_samples_draw_no_chart() -> None:
    assert lag_chart([]).svg == ""
    assert lag_chart([Series("eu", samples(3))]).svg == ""


def test_each_series_is_one_line_scaled_to_the_largest_lag() -> None:
    chart = lag_chart(
        [Series("eu", samples(0, 40, 0)), Series("us", samples(10, 10, 10))], height=220
    )
    lines = re.findall(r'points="([^"]+)"', chart.svg)
    assert len(lines) == 2
    eu = [tuple(map(float, p.split(","))) for p in lines[0].split()]
    # 0 events sit on the axis, the largest lag at the top of the plot.
    assert eu[0][1] == eu[2][1] > eu[1][1]
    assert [(label, last) for label, _, last in chart.lines] == [("eu", 0), ("us", 10)]
    assert ">40</text>" in chart.svg  # the axis says how high the top is


def test_a_label_from_the_network_is_escaped_in_the_chart() -> None:
    chart = lag_chart([Series(HOSTILE, samples(1, 2))])
    assert HOSTILE not in chart.svg and "&lt;img" in chart.svg


def test_the_package_view_lists_versions_newest_first_with_their_signers() -> None:
    view = package_view(STATE, root(PUBLISHER), lambda r: [f"eu:{r.size}"], "note")
    assert [v.version for v in view.versions] == ["1.10.0", "1.9.0", "1.2.0"]
    assert (view.namespace, view.publisher, view.threshold) == ("drupal/*", "drupal.org", 1)
    signers = {v.version: [(s.keyid, s.delegated_now) for s in v.signers] for v in view.versions}
    assert signers["1.10.0"] == [(PUBLISHER.public_key.keyid, True)]
    # Signed by a key a later root no longer delegates: still shown, and flagged.
    assert signers["1.9.0"] == [(OLD_PUBLISHER.public_key.keyid, False)]
    assert signers["1.2.0"] == []
    assert view.versions[0].holders == ["eu:110"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s ago"),
        (59, "59 s ago"),
        (60, "1 min ago"),
        (7199, "120 min ago"),
        (7200, "2 h ago"),
        (3 * 86400, "3 d ago"),
    ],
)
def test_ages_read_as_people_say_them(seconds: int, text: str) -> None:
    assert age_text(NOW - timedelta(seconds=seconds), NOW) == text


class MemorySource:
    title = "test directory"

    def __init__(self) -> None:
        self.trust = root(PUBLISHER)

    def network(self, now: datetime) -> NetworkView:
        row = NodeRow(
            "eu", "a" * 64, "http://eu.example", "in sync", "in-sync", "ok", "1 s ago", "1 KB", "v2"
        )
        return NetworkView("Network", [row], [Series("eu", samples(0, 1))], [("bad-signature", 4)])

    async def package(self, name: str) -> PackageView | None:
        if name != "drupal/token":
            return None
        return package_view(STATE, self.trust, lambda r: [], "note")

    def rejections(self) -> Sequence[RejectionRow]:
        return [
            RejectionRow(
                "2026-12-05 12:00:00 UTC",
                "eu",
                "fair.releases[0]@7",
                "drupal/x",
                "bad-signature",
                HOSTILE,
            )
        ]


async def answer(path: str) -> web.Response:
    app = web.Application()
    StatusPages(MemorySource(), clock=lambda: NOW).register(app)
    request = make_mocked_request("GET", path, app=app)
    match = await app.router.resolve(request)
    request._match_info = match  # type: ignore[attr-defined]
    try:
        response = await match.handler(request)
    except web.HTTPException as exc:
        return web.Response(status=exc.status, headers=exc.headers)
    assert isinstance(response, web.Response)
    return response


async def test_the_pages_render_and_escape_what_came_from_the_network() -> None:
    network = await answer("/status")
    assert network.status == 200 and network.content_type == "text/html"
    assert "http://eu.example" in network.text and "bad-signature" in network.text
    package = await answer("/status/packages/drupal/token")
    assert package.status == 200
    assert HOSTILE not in (package.text or "") and "&lt;img src=x" in (package.text or "")
    rejections = await answer("/status/rejections")
    assert HOSTILE not in (rejections.text or "") and "fair.releases[0]@7" in (
        rejections.text or ""
    )


async def test_an_unknown_or_malformed_package_is_a_clear_404_or_400() -> None:
    unknown = await answer("/status/packages/drupal/nope")
    assert unknown.status == 404 and "drupal/nope is not known here" in (unknown.text or "")
    malformed = await answer("/status/packages/Drupal/x")
    assert malformed.status == 400 and "not a Composer package name" in (malformed.text or "")
    found = await answer("/status/packages?name=drupal/token")
    assert found.status == 302 and found.headers["Location"] == "/status/packages/drupal/token"


# --- the directory's view of silent and stopped nodes ----------------------------------


class NoStates:
    def load(self, package: str) -> PackageState | None:
        return None

    def packages(self) -> list[str]:
        return []


def signed_records(index: int, region: str, state: str, at: datetime) -> tuple[str, bytes, bytes]:
    """A node's id, its signed registration and one signed heartbeat sent at ``at`` (by
    its own clock)."""
    key = SigningKey(seed=bytes([index + 10]) * 32)
    registration = registration_of(key, region, f"http://{region}.example", ReplicationPolicy())
    status = NodeStatus(
        node_id=key.public_key.keyid,
        region=region,
        base_url=f"http://{region}.example",
        sequence=1,
        heartbeat_at=at,
        partitions=(),
        events_behind=0,
        behind_is_lower_bound=False,
        seconds_behind=None,
        artifacts_pending=0,
        rejected_total=0,
        store_bytes=0,
        trust_root_version=2,
        state=state,
        detail="the node was shut down" if state == "stopped" else "",
    )
    return key.public_key.keyid, seal_registration(registration, key), seal_status(status, key)


async def test_the_directory_shows_stopped_and_silent_nodes_on_its_own_clock() -> None:
    """Liveness is judged on the directory's clock of arrival: a node whose clock is a day
    behind is in sync, one whose clock is a day ahead but not heard for 31 s is silent."""
    heard_at = [NOW]
    directory = Directory(
        broker_url="kafka://127.0.0.1:1",
        status_topic="fair.status",
        states=NoStates(),
        registry=Registry(),
        regions=RegionMap(),
        clock=lambda: heard_at[0],
    )
    nodes = {
        "eu": signed_records(0, "eu", "in-sync", NOW - timedelta(days=1)),
        "us": signed_records(1, "us", "stopped", NOW),
        "ap": signed_records(2, "ap", "in-sync", NOW + timedelta(days=1)),
    }
    for region, (node_id, registration, heartbeat) in nodes.items():
        heard_at[0] = NOW - timedelta(seconds=31 if region == "ap" else 1)
        directory._on_record(registration)
        directory._on_record(heartbeat)
        directory.registry.record_test(node_id, True, "served drupal/token", heard_at[0])
    heard_at[0] = NOW

    view = DirectoryStatus(directory, lambda: root(PUBLISHER), None).network(NOW)
    rows = {row.region: row for row in view.rows}
    listed = orjson.loads(
        (await directory.nodes_json(make_mocked_request("GET", "/nodes.json"))).body  # type: ignore[arg-type]
    )
    listed_by_region = {node["region"]: node for node in listed["nodes"]}

    assert (rows["eu"].state, rows["eu"].health, rows["eu"].sync) == ("in-sync", "ok", "in sync")
    assert rows["eu"].admission == "admitted"
    assert (rows["us"].state, rows["us"].health) == ("stopped", "down")
    assert rows["us"].sync == "stopped: the node was shut down"
    assert rows["us"].admission == "stopped" and "said goodbye" in rows["us"].reason
    assert (rows["ap"].state, rows["ap"].health) == ("silent", "down")
    assert rows["ap"].sync == "silent: no heartbeat for more than 30 s"
    assert rows["ap"].admission == "silent" and "sent no clients" in rows["ap"].reason
    assert {r: (n["state"], n["live"]) for r, n in listed_by_region.items()} == {
        "eu": ("in-sync", True),
        "us": ("stopped", False),
        "ap": ("silent", False),
    }
    assert listed_by_region["ap"]["heartbeat_state"] == "in-sync"


class OneState:
    def load(self, package: str) -> PackageState | None:
        return STATE if package == STATE.package else None


def test_a_nodes_package_page_says_where_each_held_copy_came_from() -> None:
    """The proof a sovereign region shows: for each version held, from whom and which
    jurisdiction its bytes came (the replicator's record); none recorded, nothing claimed."""
    store = MemoryStore("status-pages", space="status-pages-tests")
    store.ensure_bucket()
    held_from_de, held_before = STATE.versions["1.9.0"], STATE.versions["1.2.0"]
    for held in (held_from_de, held_before):
        store.put_bytes(layout.artifact_key(held.sha256), b"zip", content_type="application/zip")
    de = Source("http://de.example/dist/x.zip", "de", "EU")
    store.put_bytes(
        layout.provenance_key(held_from_de.sha256),
        provenance(de, held_from_de.sha256, "eu", NOW),
        content_type="application/json",
    )
    key = SigningKey(seed=b"\x09" * 32)
    status = NodeOwnStatus(
        registration=registration_of(key, "eu", "http://eu.example", ReplicationPolicy()),
        last_status=lambda: None,
        history=lambda: [],
        states=OneState(),
        store=store,
        trust_root=lambda: root(PUBLISHER),
        rejections=None,
        keeps_zips=True,
        title="eu",
    )

    view = status._package("drupal/token")

    assert view is not None
    holders = {v.version: list(v.holders) for v in view.versions}
    assert holders["1.9.0"] == ["this node (eu), from de (EU), fetched 2026-12-05 12:00 UTC"]
    assert holders["1.2.0"] == ["this node (eu)"]
    assert holders["1.10.0"] == []  # not held
