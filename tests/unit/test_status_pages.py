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
    NOT_RECORDED,
    Copy,
    NetworkView,
    NodeRow,
    PackageView,
    RejectionRow,
    Series,
    StatusSource,
    age_text,
    package_document,
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
    view = package_view(STATE, root(PUBLISHER), lambda r: [Copy(f"eu:{r.size}")], "note")
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


async def answer(path: str, source: StatusSource | None = None) -> web.Response:
    app = web.Application()
    StatusPages(source or MemorySource(), clock=lambda: NOW).register(app)
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


def eu_node(bucket: str) -> NodeOwnStatus:
    """Node eu's own pages over a store holding drupal/token 1.9.0, fetched from de (EU),
    and 1.2.0, fetched before provenance was recorded; 1.10.0 is not held."""
    store = MemoryStore(bucket, space="status-pages-tests")
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
    return NodeOwnStatus(
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


def test_a_nodes_package_page_says_where_each_held_copy_came_from() -> None:
    """The proof a sovereign region shows: for each version held, from whom and which
    jurisdiction its bytes came (the replicator's record); none recorded, nothing claimed."""
    status = eu_node("status-pages")

    view = status._package("drupal/token")

    assert view is not None
    holders = {v.version: list(v.holders) for v in view.versions}
    assert holders["1.9.0"] == ["this node (eu), from de (EU), fetched 2026-12-05 12:00 UTC"]
    assert holders["1.2.0"] == ["this node (eu)"]
    assert holders["1.10.0"] == []  # not held


def test_the_package_json_lists_each_version_its_digest_and_where_its_copy_came_from() -> None:
    """The evidence in machine-readable form: every version, newest first, with its digests
    and this node's copy of it, if any, with the provenance record's fields; a copy with no
    record says so rather than claim anything."""
    view = eu_node("status-pages-json")._package("drupal/token")
    assert view is not None

    document = package_document(view, answered_by="fairstream node · eu", now=NOW)

    assert (document["package"], document["answered_by"]) == (
        "drupal/token",
        "fairstream node · eu",
    )
    assert (document["generated_at"], document["trust_root_version"]) == ("2026-12-05T12:00:00Z", 2)
    versions = {v["version"]: v for v in document["versions"]}
    assert [v["version"] for v in document["versions"]] == ["1.10.0", "1.9.0", "1.2.0"]
    held = versions["1.9.0"]
    assert (held["sha256"], held["sha1"], held["size"]) == (f"{9:064x}", f"{9:040x}", 109)
    assert held["origin_url"] == "https://ftp.drupal.org/files/projects/token-8.x-1.9.zip"
    assert held["signed_by"] == [OLD_PUBLISHER.public_key.keyid]
    assert held["copies"] == [
        {
            "holder": "this node (eu)",
            "region": "eu",
            "base_url": "http://eu.example",
            "provenance": {
                "from": "de",
                "jurisdiction": "EU",
                "url": "http://de.example/dist/x.zip",
                "fetched_at": "2026-12-05T12:00:00Z",
            },
            "provenance_unknown": None,
        }
    ]
    [unrecorded] = versions["1.2.0"]["copies"]
    assert (unrecorded["provenance"], unrecorded["provenance_unknown"]) == (None, NOT_RECORDED)
    assert versions["1.10.0"]["copies"] == []  # not held here
    assert versions["1.10.0"]["yanked"] == HOSTILE  # data, not markup: JSON escapes nothing
    assert orjson.loads(orjson.dumps(document)) == document


def test_an_unreadable_provenance_record_is_said_unreadable_and_claims_nothing() -> None:
    status = eu_node("status-pages-unreadable")
    sha256 = STATE.versions["1.9.0"].sha256
    status._store.put_bytes(
        layout.provenance_key(sha256), b'{"from": "de"}', content_type="application/json"
    )

    view = status._package("drupal/token")

    assert view is not None
    [copy] = next(v for v in view.versions if v.version == "1.9.0").copies
    assert (copy.provenance, copy.unknown) == (None, "its provenance record is unreadable")
    assert copy.text == "this node (eu), origin unknown (its provenance record is unreadable)"


async def test_the_package_json_is_served_beside_the_page_and_refuses_as_json() -> None:
    node = eu_node("status-pages-route")
    found = await answer("/status/packages/drupal/token.json", node)
    assert (found.status, found.content_type) == (200, "application/json")
    assert found.headers["Cache-Control"] == "no-store"
    assert found.body is not None
    document = orjson.loads(found.body)  # type: ignore[arg-type]
    assert document["package"] == "drupal/token" and document["answered_by"] == "eu"
    assert len(document["versions"]) == 3
    # The page itself is still HTML, and links to it.
    page = await answer("/status/packages/drupal/token", node)
    assert page.content_type == "text/html"
    assert 'href="/status/packages/drupal/token.json"' in (page.text or "")

    unknown = await answer("/status/packages/drupal/nope.json", node)
    assert (unknown.status, unknown.content_type) == (404, "application/json")
    assert orjson.loads(unknown.body) == {  # type: ignore[arg-type]
        "package": "drupal/nope",
        "error": "drupal/nope is not known here: no verified event of it has been applied",
    }
    malformed = await answer("/status/packages/Drupal/x.json", node)
    assert malformed.status == 400
    assert "not a Composer package name" in orjson.loads(malformed.body)["error"]  # type: ignore[arg-type]
