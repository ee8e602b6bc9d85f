"""services.node.http_app.NodeHttp over a real socket, backed by the real embedded S3 server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from uuid import uuid4

import aiohttp
import orjson
import pytest
import yarl
from aiohttp.test_utils import TestClient, TestServer

from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.store import S3Store, StoreLocation
from schemas import layout
from schemas.package_state import PackageState, VersionRecord, render_documents
from schemas.version_entries import version_entry
from services.node.composer_requests import MAX_ADVISORY_NAMES
from services.node.http_app import NodeHttp
from services.node.http_settings import NodeHttpSettings
from services.node.repository_documents import mirror_url_template
from streams.artifacts import Source
from streams.health import Verdict
from streams.policy import JurisdictionPolicy

pytestmark = pytest.mark.integration

ZIP = os.urandom(50_000)
SHA256 = hashlib.sha256(ZIP).hexdigest()
P2 = b'{"packages":{"drupal/token":[{"name":"drupal/token","version":"1.9.0"}]},"minified":"composer/2.0"}'


@pytest.fixture
def store(location: StoreLocation) -> ObjectStore:
    created = S3Store(location, f"t-{uuid4().hex[:12]}")
    created.ensure_bucket()
    created.put_bytes(layout.p2_key("drupal/token"), P2, content_type="application/json")
    created.put_bytes(
        layout.p2_key("drupal/token", dev=True),
        b'{"packages":{"drupal/token":[]},"minified":"composer/2.0"}',
        content_type="application/json",
    )
    created.put_bytes(layout.artifact_key(SHA256), ZIP, content_type="application/zip")
    return created


def seconds_later() -> datetime:
    """A clock 3 s ahead: the documents the fixture just wrote count as settled."""
    return datetime.now(UTC) + timedelta(seconds=3)


async def serve(
    store: ObjectStore, clock: Callable[[], datetime] = seconds_later
) -> TestClient[aiohttp.web.Request, aiohttp.web.Application]:
    node = NodeHttp(NodeHttpSettings(region="eu-west"), store, clock=clock)
    client: TestClient[aiohttp.web.Request, aiohttp.web.Application] = TestClient(
        TestServer(node.app)
    )
    await client.start_server()
    return client


@pytest.fixture
async def client(
    store: ObjectStore,
) -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    started = await serve(store)
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def unreachable_client(
    location: StoreLocation,
) -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    """A node whose store's port is closed: any request that reaches the store fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    store = S3Store(dataclasses.replace(location, endpoint=closed), "nowhere")
    started = await serve(store)
    try:
        yield started
    finally:
        await started.close()


Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


async def test_health(client: Client) -> None:
    response = await client.get("/health")

    assert response.status == 200
    assert await response.json() == {"region": "eu-west", "status": "ok"}


async def test_health_and_ready_answer_503_with_the_reasons_of_the_worker(
    store: ObjectStore,
) -> None:
    verdicts = {"live": Verdict(True), "ready": Verdict(False, ("not ready: catching up",))}
    node = NodeHttp(
        NodeHttpSettings(region="eu-west"),
        store,
        liveness=lambda: verdicts["live"],
        readiness=lambda: verdicts["ready"],
    )
    async with TestClient(TestServer(node.app)) as client:
        health = await client.get("/health")
        assert (health.status, (await health.json())["status"]) == (200, "ok")
        ready = await client.get("/ready")
        assert ready.status == 503
        assert await ready.json() == {
            "region": "eu-west", "ready": False, "reasons": ["not ready: catching up"]
        }  # fmt: skip
        verdicts["live"] = Verdict(False, ("stuck: one batch in progress for 300 s",))
        verdicts["ready"] = Verdict(False, verdicts["live"].reasons)
        health = await client.get("/health")
        assert health.status == 503
        assert (await health.json())["reasons"] == ["stuck: one batch in progress for 300 s"]
        verdicts["live"] = verdicts["ready"] = Verdict(True)
        assert (await client.get("/health")).status == 200
        assert (await client.get("/ready")).status == 200


async def test_without_a_worker_ready_is_health(client: Client) -> None:
    response = await client.get("/ready")
    assert response.status == 200
    assert await response.json() == {"region": "eu-west", "status": "ok"}


async def test_p2_is_served_with_last_modified(client: Client, store: ObjectStore) -> None:
    info = store.stat(layout.p2_key("drupal/token"))
    assert info is not None

    response = await client.get("/p2/drupal/token.json")

    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == P2
    modified = response.headers["Last-Modified"]
    assert modified.endswith(" GMT")
    assert parsedate_to_datetime(modified) == info.last_modified.replace(microsecond=0)


async def test_dev_p2_is_served(client: Client) -> None:
    response = await client.get("/p2/drupal/token~dev.json")

    assert response.status == 200
    assert orjson.loads(await response.read())["packages"] == {"drupal/token": []}


async def test_if_modified_since_the_same_time_is_304_and_empty(client: Client) -> None:
    first = await client.get("/p2/drupal/token.json")
    modified = first.headers["Last-Modified"]

    response = await client.get("/p2/drupal/token.json", headers={"If-Modified-Since": modified})

    assert response.status == 304
    assert await response.read() == b""
    assert response.headers["Last-Modified"] == modified


async def test_if_modified_since_later_is_304(client: Client) -> None:
    first = await client.get("/p2/drupal/token.json")
    later = parsedate_to_datetime(first.headers["Last-Modified"]) + timedelta(hours=1)

    response = await client.get(
        "/p2/drupal/token.json", headers={"If-Modified-Since": format_datetime(later, usegmt=True)}
    )

    assert response.status == 304


@pytest.mark.parametrize("age", [timedelta(seconds=1), timedelta(days=400)])
async def test_if_modified_since_earlier_is_200(client: Client, age: timedelta) -> None:
    first = await client.get("/p2/drupal/token.json")
    earlier = parsedate_to_datetime(first.headers["Last-Modified"]) - age

    response = await client.get(
        "/p2/drupal/token.json",
        headers={"If-Modified-Since": format_datetime(earlier, usegmt=True)},
    )

    assert response.status == 200
    assert await response.read() == P2


@pytest.mark.parametrize("value", ["yesterday", "", "Mon, 99 Foo 2024 00:00:00 GMT"])
async def test_an_unreadable_if_modified_since_is_ignored(client: Client, value: str) -> None:
    response = await client.get("/p2/drupal/token.json", headers={"If-Modified-Since": value})

    assert response.status == 200
    assert await response.read() == P2


@pytest.mark.parametrize(
    "path",
    ["/p2/symfony/console.json", "/p2/symfony/console~dev.json", "/p2/psr/log.json"],
)
async def test_packages_outside_the_namespace_are_404_without_the_store(
    unreachable_client: Client, path: str
) -> None:
    response = await unreachable_client.get(path)

    assert response.status == 404
    assert "is not served here" in await response.text()


async def test_a_drupal_package_does_reach_the_store(unreachable_client: Client) -> None:
    # The other side of the test above: with this store, touching it is a 503.
    response = await unreachable_client.get("/p2/drupal/token.json")

    assert response.status == 503
    assert response.headers["Retry-After"] == "5"


async def test_an_unknown_drupal_package_is_404(client: Client) -> None:
    response = await client.get("/p2/drupal/pathauto.json")

    assert response.status == 404
    assert "p2/drupal/pathauto.json not found" in await response.text()


@pytest.mark.parametrize(
    "path",
    ["/p2/drupal/Token.json", "/p2/drupal/token.txt", "/p2/drupal/token", "/p2/drupal/.json"],
)
async def test_a_bad_p2_file_name_is_404(client: Client, path: str) -> None:
    response = await client.get(path)

    assert response.status == 404


async def test_dist_redirects_to_the_stored_bytes(client: Client) -> None:
    response = await client.get(f"/dist/drupal/token/1.9.0/{SHA256}.zip", allow_redirects=False)

    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith("http://")
    assert layout.artifact_key(SHA256) in location
    async with aiohttp.ClientSession() as outside, outside.get(location) as download:
        assert download.status == 200
        assert await download.read() == ZIP


async def test_dist_followed_by_a_client_gives_the_zip(client: Client) -> None:
    response = await client.get(f"/dist/drupal/token/1.9.0/{SHA256}.zip")

    assert response.status == 200
    assert await response.read() == ZIP


async def test_a_missing_artifact_is_404(client: Client) -> None:
    absent = hashlib.sha256(b"absent").hexdigest()

    response = await client.get(f"/dist/drupal/token/1.9.0/{absent}.zip", allow_redirects=False)

    assert response.status == 404
    assert f"no artifact {absent} in region eu-west" in await response.text()


@pytest.mark.parametrize(
    "sha256",
    [SHA256.upper(), SHA256[:-1], SHA256 + "0", "z" * 64, "..", "%2E%2E"],
)
async def test_a_bad_sha256_is_404(client: Client, sha256: str) -> None:
    response = await client.get(f"/dist/drupal/token/1.9.0/{sha256}.zip", allow_redirects=False)

    assert response.status == 404


async def test_dist_with_an_unreachable_store_is_503(unreachable_client: Client) -> None:
    response = await unreachable_client.get(
        f"/dist/drupal/token/1.9.0/{SHA256}.zip", allow_redirects=False
    )

    assert response.status == 503
    assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize(
    "path", ["/p2/drupal%2F../token.json", "/p2/drupal%2F..%2F..%2Fstate%2Fdrupal/token.json"]
)
async def test_an_encoded_slash_in_the_vendor_is_404(client: Client, path: str) -> None:
    response = await client.get(yarl.URL(path, encoded=True))

    assert response.status == 404


async def test_document_written_this_second_has_no_last_modified(store: ObjectStore) -> None:
    """Two writes in one second share an HTTP date: no 304 may hide the second one."""
    stored = store.stat(layout.p2_key("drupal/token"))
    assert stored is not None
    written = stored.last_modified.replace(microsecond=0)
    far_future = format_datetime(written + timedelta(days=1), usegmt=True)

    same_second = await serve(store, clock=lambda: written + timedelta(milliseconds=500))
    try:
        response = await same_second.get(
            "/p2/drupal/token.json", headers={"If-Modified-Since": far_future}
        )
        assert response.status == 200
        assert "Last-Modified" not in response.headers
        assert await response.read() == P2
    finally:
        await same_second.close()

    next_second = await serve(store, clock=lambda: written + timedelta(milliseconds=1500))
    try:
        response = await next_second.get(
            "/p2/drupal/token.json", headers={"If-Modified-Since": far_future}
        )
        assert response.status == 304
        assert response.headers["Last-Modified"] == format_datetime(written, usegmt=True)
    finally:
        await next_second.close()


# ---------------------------------------------------------------------------
# A node that knows package states, its peers and other nodes' copies
# ---------------------------------------------------------------------------

PUBLIC = "https://eu.fair.example"
US = "https://us.fair.example"
AP = "https://ap.fair.example"
#: 1.10.0's zip: signed, not (yet) in this node's bucket.
MISSING_SHA256 = hashlib.sha256(b"token 1.10.0").hexdigest()
#: 1.8.0's zip, expunged.
EXPUNGED_SHA256 = hashlib.sha256(b"token 1.8.0").hexdigest()
#: 1.11.0's zip: not here, no other node has it, and its origin is unknown.
SOURCELESS_SHA256 = hashlib.sha256(b"token 1.11.0").hexdigest()
ORIGIN_1_10 = "https://ftp.drupal.org/files/projects/token-8.x-1.10.zip"
ADVISORY = {
    "advisoryId": "SA-CONTRIB-2024-001",
    "packageName": "drupal/token",
    "affectedVersions": "<1.10.0",
    "title": "Token - Cross site scripting",
    "link": "https://www.drupal.org/sa-contrib-2024-001",
    "cve": None,
    "reportedAt": "2024-01-17T16:00:00+00:00",
    "sources": [{"name": "drupal.org", "remoteId": "SA-CONTRIB-2024-001"}],
    "severity": "moderate",
}


def record(
    drupal_version: str, sha256: str, origin_url: str, package: str = "drupal/token"
) -> VersionRecord:
    sha1 = hashlib.sha1(sha256.encode()).hexdigest()
    return VersionRecord(
        drupal_version=drupal_version,
        sha256=sha256,
        sha1=sha1,
        size=50_000,
        composer=version_entry(name=package, drupal_version=drupal_version, sha1=sha1),
        origin_url=origin_url,
    )


TOKEN = PackageState(
    package="drupal/token",
    versions={
        "1.9.0": record(
            "8.x-1.9", SHA256, "https://ftp.drupal.org/files/projects/token-8.x-1.9.zip"
        ),
        "1.10.0": record("8.x-1.10", MISSING_SHA256, ORIGIN_1_10),
        "1.11.0": record("8.x-1.11", SOURCELESS_SHA256, ""),
    },
    sequence=7,
    expunged={"1.8.0": EXPUNGED_SHA256},
    advisories={ADVISORY["advisoryId"]: ADVISORY},
)
CTOOLS = PackageState(
    package="drupal/ctools",
    versions={"4.0.0": record("8.x-4.0", SHA256, "", package="drupal/ctools")},
    sequence=3,
)


class Recorder:
    """The node's callbacks, recording their arguments."""

    def __init__(self) -> None:
        self.missing: list[tuple[str, str, VersionRecord]] = []
        self.downloads: list[tuple[str, str, str]] = []
        self.served: list[tuple[str, str, str]] = []
        self.replicas: dict[str, list[str]] = {}
        self.peers: list[str] = [US + "/", AP, PUBLIC]
        #: Each other node's declared jurisdiction, by base URL (none: not declared).
        self.jurisdictions: dict[str, str] = {}

    def on_missing(self, package: str, version: str, found: VersionRecord) -> None:
        self.missing.append((package, version, found))

    def on_download(self, package: str, version: str, sha256: str) -> None:
        self.downloads.append((package, version, sha256))

    def on_serve(self, package: str, version: str, sha256: str) -> None:
        self.served.append((package, version, sha256))

    def _source(self, url: str) -> Source:
        base = url.split("/dist/", 1)[0].rstrip("/")
        return Source(url, base, self.jurisdictions.get(base))

    def replicas_of(self, sha256: str) -> Sequence[Source]:
        return [self._source(url) for url in self.replicas.get(sha256, [])]

    def peer_urls(self) -> Sequence[Source]:
        return [self._source(url) for url in self.peers]


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def states(store: ObjectStore) -> PackageStates:
    saved = PackageStates(store, render=lambda state: render_documents(state, PUBLIC))
    saved.save(TOKEN)
    saved.save(CTOOLS)
    return saved


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def serve_node(
    settings: NodeHttpSettings,
    store: ObjectStore,
    states: PackageStates,
    recorder: Recorder,
    clock: Callable[[], datetime] = seconds_later,
) -> Client:
    node = NodeHttp(
        settings,
        store,
        clock=clock,
        states=states,
        replicas=recorder.replicas_of,
        peers=recorder.peer_urls,
        on_missing=recorder.on_missing,
        on_download=recorder.on_download,
        on_serve=recorder.on_serve,
    )
    started: Client = TestClient(TestServer(node.app))
    await started.start_server()
    return started


@pytest.fixture
async def node(
    store: ObjectStore, states: PackageStates, recorder: Recorder
) -> AsyncIterator[Client]:
    started = await serve_node(
        NodeHttpSettings(region="eu-west", public_url=PUBLIC + "/"), store, states, recorder
    )
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def unreachable_node(location: StoreLocation, recorder: Recorder) -> AsyncIterator[Client]:
    """A full node whose store's port is closed: any request that reaches the store fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    store = S3Store(dataclasses.replace(location, endpoint=closed), "nowhere")
    states = PackageStates(store, render=lambda state: render_documents(state, PUBLIC))
    started = await serve_node(
        NodeHttpSettings(region="eu-west", public_url=PUBLIC), store, states, recorder
    )
    try:
        yield started
    finally:
        await started.close()


def composer_mirror_url(template: str, package: str, version: str, pretty_version: str) -> str:
    """What Composer 2.5.5 makes of a mirror's dist-url (Util/ComposerMirror::processUrl,
    called by Package::getUrls with the package's pretty version, reference and dist type)."""
    replacements = {
        "%package%": package,
        "%version%": version,
        "%reference%": "8.x-1.10",
        "%type%": "zip",
        "%prettyVersion%": pretty_version,
    }
    return re.sub("|".join(replacements), lambda m: replacements[m[0]], template)


# -- packages.json -------------------------------------------------------------------------------


async def test_packages_json_has_absolute_urls_and_the_peers_as_mirrors(node: Client) -> None:
    response = await node.get("/packages.json")

    assert response.status == 200
    assert response.content_type == "application/json"
    assert orjson.loads(await response.read()) == {
        "packages": [],
        "metadata-url": f"{PUBLIC}/p2/%package%.json",
        "available-package-patterns": ["drupal/*"],
        "notify-batch": f"{PUBLIC}/downloads/",
        "security-advisories": {
            "metadata": True,
            "api-url": f"{PUBLIC}/api/security-advisories/",
        },
        # This node itself (listed by the peers callable too) is not its own mirror.
        "mirrors": [
            {"dist-url": f"{US}/mirror/%package%/%prettyVersion%.%type%", "preferred": False},
            {"dist-url": f"{AP}/mirror/%package%/%prettyVersion%.%type%", "preferred": False},
        ],
    }


async def test_a_mirror_url_as_composer_fills_it_is_served_by_that_node(node: Client) -> None:
    document = orjson.loads(await (await node.get("/packages.json")).read())
    templates = [mirror["dist-url"] for mirror in document["mirrors"]]

    urls = [composer_mirror_url(t, "drupal/token", "1.9.0.0", "1.9.0") for t in templates]

    assert urls == [f"{US}/mirror/drupal/token/1.9.0.zip", f"{AP}/mirror/drupal/token/1.9.0.zip"]
    # Any node answers that path: ask this one, which holds 1.9.0.
    path = yarl.URL(urls[0]).path
    response = await node.get(path, allow_redirects=False)
    assert response.status == 302
    assert layout.artifact_key(SHA256) in response.headers["Location"]


async def test_packages_json_without_a_public_url_uses_the_request_host(
    store: ObjectStore, states: PackageStates, recorder: Recorder
) -> None:
    recorder.peers = []
    started = await serve_node(NodeHttpSettings(region="eu-west"), store, states, recorder)
    try:
        response = await started.get("/packages.json")
        document = orjson.loads(await response.read())
        base = f"http://{started.host}:{started.port}"
    finally:
        await started.close()

    assert document["metadata-url"] == f"{base}/p2/%package%.json"
    assert document["notify-batch"] == f"{base}/downloads/"
    assert "mirrors" not in document


async def test_packages_json_needs_no_store(unreachable_node: Client) -> None:
    response = await unreachable_node.get("/packages.json")

    assert response.status == 200
    assert orjson.loads(await response.read())["metadata-url"] == f"{PUBLIC}/p2/%package%.json"


async def test_packages_json_is_dated_by_its_last_change(
    store: ObjectStore, states: PackageStates, recorder: Recorder
) -> None:
    clock = Clock()
    started = await serve_node(
        NodeHttpSettings(region="eu-west", public_url=PUBLIC), store, states, recorder, clock
    )
    try:
        first = await started.get("/packages.json")
        # Rendered for the first time this second: no date a later change could share.
        assert "Last-Modified" not in first.headers

        clock.now += timedelta(seconds=2)
        dated = await started.get("/packages.json")
        modified = dated.headers["Last-Modified"]
        assert parsedate_to_datetime(modified) == datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

        clock.now += timedelta(minutes=10)
        unchanged = await started.get("/packages.json", headers={"If-Modified-Since": modified})
        assert unchanged.status == 304
        assert await unchanged.read() == b""

        recorder.peers = [US]
        clock.now += timedelta(seconds=1)
        changed = await started.get("/packages.json", headers={"If-Modified-Since": modified})
        assert changed.status == 200
        assert len(orjson.loads(await changed.read())["mirrors"]) == 1
    finally:
        await started.close()


# -- /dist ---------------------------------------------------------------------------------------


async def test_dist_held_here_redirects_to_the_bucket_and_is_counted(
    node: Client, recorder: Recorder
) -> None:
    response = await node.get(f"/dist/drupal/token/1.9.0/{SHA256}.zip", allow_redirects=False)

    assert response.status == 302
    assert layout.artifact_key(SHA256) in response.headers["Location"]
    assert recorder.served == [("drupal/token", "1.9.0", SHA256)]
    assert recorder.missing == []


async def test_dist_not_held_goes_to_a_replica_and_schedules_a_refetch(
    node: Client, recorder: Recorder
) -> None:
    replica = f"{US}/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip"
    recorder.replicas[MISSING_SHA256] = [replica, f"{AP}/dist/drupal/token/1.10.0/x.zip"]

    response = await node.get(
        f"/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip", allow_redirects=False
    )

    assert response.status == 302
    assert response.headers["Location"] == replica
    assert recorder.missing == [("drupal/token", "1.10.0", TOKEN.versions["1.10.0"])]
    assert recorder.served == [("drupal/token", "1.10.0", MISSING_SHA256)]


async def test_dist_without_a_replica_goes_to_the_origin(node: Client, recorder: Recorder) -> None:
    response = await node.get(
        f"/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip", allow_redirects=False
    )

    assert response.status == 302
    assert response.headers["Location"] == ORIGIN_1_10
    assert [missing[:2] for missing in recorder.missing] == [("drupal/token", "1.10.0")]
    assert recorder.served == [("drupal/token", "1.10.0", MISSING_SHA256)]


@pytest.mark.parametrize(
    "replica",
    [
        # Another sha256's dist path, a path that names no sha256, this very node.
        f"{US}/dist/drupal/token/1.9.0/{SHA256}.zip",
        f"{US}/files/token-8.x-1.10.zip",
        f"{PUBLIC}/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip",
        f"ftp://us.fair.example/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip",
    ],
)
async def test_a_replica_url_not_naming_the_signed_sha256_is_not_followed(
    node: Client, recorder: Recorder, replica: str
) -> None:
    recorder.replicas[MISSING_SHA256] = [replica]

    response = await node.get(
        f"/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip", allow_redirects=False
    )

    assert response.status == 302
    assert response.headers["Location"] == ORIGIN_1_10


async def test_a_sovereign_region_sends_clients_only_within_its_jurisdictions(
    store: ObjectStore, states: PackageStates, recorder: Recorder
) -> None:
    """An EU-only region: a copy in us (US) and the origin (US) are never redirect targets;
    with no other, a 503 names them; a copy in ap (EU) is; mirrors list EU nodes only."""
    recorder.jurisdictions = {US: "US", AP: "EU"}
    us_copy = f"{US}/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip"
    ap_copy = f"{AP}/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip"
    recorder.replicas[MISSING_SHA256] = [us_copy]
    sovereign = JurisdictionPolicy.restricting(["EU"], own="EU", origin="US")
    started = await serve_node(
        NodeHttpSettings(region="eu-west", public_url=PUBLIC, jurisdictions=sovereign),
        store,
        states,
        recorder,
    )
    path = f"/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip"
    try:
        refused = await started.get(path, allow_redirects=False)
        reason = await refused.text()
        recorder.replicas[MISSING_SHA256] = [us_copy, ap_copy]
        sent = await started.get(path, allow_redirects=False)
        root = orjson.loads(await (await started.get("/packages.json")).read())
    finally:
        await started.close()

    assert refused.status == 503 and "Location" not in refused.headers
    assert refused.headers["Retry-After"]
    assert "sends its clients to EU only" in reason
    assert f"{US} (US)" in reason and "origin (US)" in reason
    assert sent.status == 302 and sent.headers["Location"] == ap_copy
    assert [m["dist-url"] for m in root["mirrors"]] == [mirror_url_template(AP)]


async def test_a_metadata_only_node_never_serves_from_its_bucket_nor_refetches(
    store: ObjectStore, states: PackageStates, recorder: Recorder
) -> None:
    replica = f"{US}/dist/drupal/token/1.9.0/{SHA256}.zip"
    recorder.replicas[SHA256] = [replica]
    started = await serve_node(
        NodeHttpSettings(region="eu-west", public_url=PUBLIC, mirror_artifacts=False),
        store,
        states,
        recorder,
    )
    try:
        # The fixture's bucket holds this zip; a metadata-only node does not look.
        response = await started.get(
            f"/dist/drupal/token/1.9.0/{SHA256}.zip", allow_redirects=False
        )
        mirror = await started.get("/mirror/drupal/token/1.9.0.zip", allow_redirects=False)
    finally:
        await started.close()

    assert response.status == 302
    assert response.headers["Location"] == replica
    assert recorder.missing == []
    assert recorder.served == [("drupal/token", "1.9.0", SHA256)]
    assert mirror.status == 404


class BrokenRecorder(Recorder):
    """Callbacks that fail, as a counter whose backend is down would."""

    def on_missing(self, package: str, version: str, found: VersionRecord) -> None:
        super().on_missing(package, version, found)
        raise RuntimeError("scheduler down")

    def on_download(self, package: str, version: str, sha256: str) -> None:
        super().on_download(package, version, sha256)
        raise RuntimeError("counter down")

    def on_serve(self, package: str, version: str, sha256: str) -> None:
        super().on_serve(package, version, sha256)
        raise RuntimeError("counter down")


async def test_a_failing_callback_does_not_cost_the_client_its_answer(
    store: ObjectStore, states: PackageStates
) -> None:
    broken = BrokenRecorder()
    started = await serve_node(
        NodeHttpSettings(region="eu-west", public_url=PUBLIC), store, states, broken
    )
    try:
        held = await started.get(f"/dist/drupal/token/1.9.0/{SHA256}.zip", allow_redirects=False)
        missing = await started.get(
            f"/dist/drupal/token/1.10.0/{MISSING_SHA256}.zip", allow_redirects=False
        )
    finally:
        await started.close()

    assert (held.status, missing.status) == (302, 302)
    assert missing.headers["Location"] == ORIGIN_1_10
    assert len(broken.served) == 2
    assert len(broken.missing) == 1


@pytest.mark.parametrize(
    ("version", "sha256"),
    [
        ("1.8.0", EXPUNGED_SHA256),
        ("1.8.0", MISSING_SHA256),  # the version is gone, whatever the URL says
        ("1.7.0", EXPUNGED_SHA256),  # the bytes are gone, whatever version names them
    ],
)
async def test_dist_of_an_expunged_release_is_410(
    node: Client, recorder: Recorder, version: str, sha256: str
) -> None:
    response = await node.get(f"/dist/drupal/token/{version}/{sha256}.zip", allow_redirects=False)

    assert response.status == 410
    text = await response.text()
    assert text == f"drupal/token {version} ({sha256}) was expunged\n"
    assert recorder.missing == recorder.served == []


async def test_dist_with_a_sha256_other_than_the_signed_one_is_404(
    node: Client, recorder: Recorder
) -> None:
    # 1.9.0's bytes (held here) asked for under 1.10.0: never served as 1.10.0.
    other = hashlib.sha256(b"tampered").hexdigest()
    recorder.replicas[other] = [f"{US}/dist/drupal/token/1.10.0/{other}.zip"]

    response = await node.get(f"/dist/drupal/token/1.10.0/{other}.zip", allow_redirects=False)

    assert response.status == 404
    assert f"drupal/token 1.10.0 is sha256 {MISSING_SHA256}, not {other}" in await response.text()
    assert recorder.missing == recorder.served == []


async def test_dist_of_an_unknown_version_is_404(node: Client, recorder: Recorder) -> None:
    response = await node.get(
        f"/dist/drupal/token/2.0.0/{MISSING_SHA256}.zip", allow_redirects=False
    )

    assert response.status == 404
    assert "drupal/token has no version 2.0.0 here" in await response.text()
    assert recorder.missing == recorder.served == []


async def test_dist_with_nowhere_to_send_the_client_is_503(
    node: Client, recorder: Recorder
) -> None:
    response = await node.get(
        f"/dist/drupal/token/1.11.0/{SOURCELESS_SHA256}.zip", allow_redirects=False
    )

    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert "not stored here yet and has no other source" in await response.text()
    # The refetch is scheduled all the same; nothing was downloaded.
    assert [missing[:2] for missing in recorder.missing] == [("drupal/token", "1.11.0")]
    assert recorder.served == []


@pytest.mark.parametrize(
    "path",
    [
        f"/dist/drupal/token/../{SHA256}.zip",
        f"/dist/drupal/token/%2E%2E/{SHA256}.zip",
        f"/dist/drupal/token/.hidden/{SHA256}.zip",
        f"/dist/drupal/Token/1.9.0/{SHA256}.zip",
        f"/dist/drupal%2F..%2Fstate/token/1.9.0/{SHA256}.zip",
        f"/dist/symfony/console/1.9.0/{SHA256}.zip",
        f"/dist/drupal/token/1.9.0%00/{SHA256}.zip",
    ],
)
async def test_odd_dist_paths_are_404_without_the_store(
    unreachable_node: Client, path: str
) -> None:
    response = await unreachable_node.get(yarl.URL(path, encoded=True), allow_redirects=False)

    assert response.status == 404


# -- /mirror -------------------------------------------------------------------------------------


async def test_mirror_of_a_held_version_redirects_to_the_bucket(node: Client) -> None:
    response = await node.get("/mirror/drupal/token/1.9.0.zip")

    assert response.status == 200
    assert await response.read() == ZIP


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/mirror/drupal/token/1.10.0.zip", "drupal/token 1.10.0 is not stored in region eu-west"),
        ("/mirror/drupal/token/2.0.0.zip", "drupal/token has no version 2.0.0 here"),
        ("/mirror/drupal/pathauto/1.0.0.zip", "drupal/pathauto has no version 1.0.0 here"),
    ],
)
async def test_mirror_of_a_version_not_held_is_404(node: Client, path: str, message: str) -> None:
    response = await node.get(path, allow_redirects=False)

    assert response.status == 404
    assert message in await response.text()


@pytest.mark.parametrize(
    "path",
    [
        "/mirror/drupal/token/1.9.0.tar",
        "/mirror/drupal/token/%25prettyVersion%25.zip",
        "/mirror/drupal/token/..%2F..%2Fpackages.zip",
        "/mirror/symfony/console/6.0.0.zip",
        "/mirror/drupal/token/.zip",
    ],
)
async def test_odd_mirror_paths_are_404_without_the_store(
    unreachable_node: Client, path: str
) -> None:
    response = await unreachable_node.get(yarl.URL(path, encoded=True), allow_redirects=False)

    assert response.status == 404


# -- /api/security-advisories/ --------------------------------------------------------------------


async def test_advisories_by_get(node: Client) -> None:
    response = await node.get(
        "/api/security-advisories/",
        params=[("packages[]", "drupal/token"), ("packages[]", "symfony/console")],
    )

    assert response.status == 200
    assert await response.json() == {"advisories": {"drupal/token": [ADVISORY]}}


async def test_advisories_by_composers_post_form(node: Client) -> None:
    # Byte for byte what Composer 2.5.5 sends: PHP's http_build_query(['packages' => [...]]).
    body = (
        "packages%5B0%5D=drupal%2Ftoken&packages%5B1%5D=symfony%2Fconsole"
        "&packages%5B2%5D=drupal%2Fctools&packages%5B3%5D=drupal%2Fpathauto"
    )

    response = await node.post(
        "/api/security-advisories/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status == 200
    advisories = (await response.json())["advisories"]
    # Known packages are answered, [] when they have none, so Composer does not ask its next
    # repository; unknown names (drupal/pathauto) and others' (symfony/console) are left out
    # so that it does ask Packagist about them.
    assert advisories == {"drupal/token": [ADVISORY], "drupal/ctools": []}
    first = advisories["drupal/token"][0]
    # What PartialSecurityAdvisory::create needs for a full SecurityAdvisory.
    assert {"advisoryId", "affectedVersions", "title", "sources", "reportedAt"} <= set(first)


async def test_advisories_outside_the_patterns_do_not_touch_the_store(
    unreachable_node: Client,
) -> None:
    response = await unreachable_node.post(
        "/api/security-advisories/",
        data={"packages[0]": "symfony/console", "packages[1]": "psr/log"},
    )

    assert response.status == 200
    assert await response.json() == {"advisories": {}}


async def test_advisories_of_a_drupal_package_do_touch_the_store(
    unreachable_node: Client,
) -> None:
    # The other side of the test above: with this store, reading a state is a 503.
    response = await unreachable_node.get(
        "/api/security-advisories/", params={"packages[]": "drupal/token"}
    )

    assert response.status == 503


@pytest.mark.parametrize("query", ["", "?packages[]=", "?names[]=drupal/token"])
async def test_advisories_without_names_is_400(node: Client, query: str) -> None:
    response = await node.get(f"/api/security-advisories/{query}")

    assert response.status == 400
    assert "missing package names" in await response.text()


async def test_too_many_advisory_names_is_400(node: Client) -> None:
    names = [("packages[]", f"drupal/p{n}") for n in range(MAX_ADVISORY_NAMES + 1)]

    response = await node.post("/api/security-advisories/", data=names)

    assert response.status == 400
    assert f"ask for at most {MAX_ADVISORY_NAMES} per request" in await response.text()


async def test_an_oversized_advisory_query_is_413(node: Client) -> None:
    body = b"packages%5B0%5D=drupal%2Ftoken&" + b"x=" + b"y" * (1024 * 1024)

    response = await node.post(
        "/api/security-advisories/",
        data=io.BytesIO(body),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status == 413
    assert "advisory query body over 1048576 bytes" in await response.text()


async def test_an_advisory_query_in_json_is_415(node: Client) -> None:
    response = await node.post("/api/security-advisories/", json={"packages": ["drupal/token"]})

    assert response.status == 415
    assert "send application/x-www-form-urlencoded" in await response.text()


# -- /downloads/ (notify-batch) -------------------------------------------------------------------


async def test_install_notification_counts_known_versions(node: Client, recorder: Recorder) -> None:
    # As Composer's json_encode writes it: normalized versions, escaped slashes.
    body = (
        b'{"downloads":[{"name":"drupal\\/token","version":"1.9.0.0"},'
        b'{"name":"drupal\\/token","version":"1.10.0.0"},'
        b'{"name":"drupal\\/token","version":"7.0.0.0"},'
        b'{"name":"drupal\\/pathauto","version":"1.0.0.0"},'
        b'{"name":"symfony\\/console","version":"6.4.0.0"}]}'
    )

    response = await node.post(
        "/downloads/", data=body, headers={"Content-Type": "application/json"}
    )

    assert response.status == 201
    assert await response.json() == {"status": "success"}
    assert recorder.downloads == [
        ("drupal/token", "1.9.0", SHA256),
        ("drupal/token", "1.10.0", MISSING_SHA256),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"downloads": [', "install notification is not JSON"),
        (b"[]", "install notification must be"),
        (b'{"downloads": {"name": "drupal/token"}}', "install notification must be"),
        (b'{"downloads": [{"name": "drupal/token", "version": 1}]}', "entry 0 is not"),
    ],
)
async def test_a_malformed_install_notification_is_400(
    node: Client, recorder: Recorder, body: bytes, message: str
) -> None:
    response = await node.post("/downloads/", data=body)

    assert response.status == 400
    assert message in await response.text()
    assert recorder.downloads == []


async def test_an_oversized_install_notification_is_413(node: Client, recorder: Recorder) -> None:
    entry = b'{"name":"drupal/token","version":"1.9.0.0"},'
    body = b'{"downloads":[' + entry * (1024 * 1024 // len(entry) + 1) + b"{}]}"

    response = await node.post("/downloads/", data=io.BytesIO(body))

    assert response.status == 413
    assert "install notification body over 1048576 bytes" in await response.text()
    assert recorder.downloads == []


async def test_an_install_notification_with_too_many_entries_is_413(
    node: Client, recorder: Recorder
) -> None:
    body = orjson.dumps({"downloads": [{"name": "drupal/token", "version": "1.9.0.0"}] * 5001})

    response = await node.post("/downloads/", data=body)

    assert response.status == 413
    assert "5001 downloads in one notification" in await response.text()
    assert recorder.downloads == []
