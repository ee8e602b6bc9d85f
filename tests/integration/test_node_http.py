"""services.node_http.NodeHttp over a real socket, backed by the real embedded S3 server."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from uuid import uuid4

import aiohttp
import orjson
import pytest
import yarl
from aiohttp.test_utils import TestClient, TestServer

from connectors.store import ObjectStore, StoreLocation
from schemas import layout
from schemas.composer import render_packages_json
from services.node_http import NodeHttp, NodeHttpSettings

pytestmark = pytest.mark.integration

ZIP = os.urandom(50_000)
SHA256 = hashlib.sha256(ZIP).hexdigest()
P2 = b'{"packages":{"drupal/token":[{"name":"drupal/token","version":"1.9.0"}]},"minified":"composer/2.0"}'


@pytest.fixture
def store(location: StoreLocation) -> ObjectStore:
    created = ObjectStore(location, f"t-{uuid4().hex[:12]}")
    created.ensure_bucket()
    created.put_bytes(layout.PACKAGES_JSON, render_packages_json(), content_type="application/json")
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
    store = ObjectStore(dataclasses.replace(location, endpoint=closed), "nowhere")
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


async def test_packages_json_is_served(client: Client) -> None:
    response = await client.get("/packages.json")

    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == render_packages_json()
    assert orjson.loads(await response.read())["metadata-url"] == "/p2/%package%.json"
    assert "Last-Modified" in response.headers


async def test_packages_json_is_404_before_it_is_written(location: StoreLocation) -> None:
    empty = ObjectStore(location, f"t-{uuid4().hex[:12]}")
    empty.ensure_bucket()
    client = await serve(empty)
    try:
        response = await client.get("/packages.json")
        assert response.status == 404
    finally:
        await client.close()


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


async def test_if_modified_since_applies_to_packages_json(client: Client) -> None:
    first = await client.get("/packages.json")

    response = await client.get(
        "/packages.json", headers={"If-Modified-Since": first.headers["Last-Modified"]}
    )

    assert response.status == 304


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
