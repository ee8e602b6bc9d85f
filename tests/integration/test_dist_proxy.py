"""``/dist`` and ``/mirror`` of a node whose clients cannot reach its store's internal
endpoint: zips sent through the node (``dist="proxy"``) and redirects presigned for the
store's public endpoint, over a real socket against the embedded S3 server (and nginx, the
static server ranges are compared with); and the settings ``node run`` and ``node serve``
refuse before they ask the store."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import socket
import subprocess
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.store import S3Store, StoreLocation
from infra.localnet import free_port
from schemas import layout
from schemas.errors import ConfigurationError
from schemas.package_state import PackageState, VersionRecord, render_documents
from schemas.version_entries import version_entry
from services.cli.main import cli
from services.node.dist_proxy import PIECE
from services.node.http_app import NodeHttp
from services.node.http_settings import NodeHttpSettings

pytestmark = pytest.mark.integration

Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]

PUBLIC = "https://eu.fair.example"
#: Several pieces and a short last one, so that ranges and checks cross piece boundaries.
ZIP = os.urandom(3 * PIECE + 12_345)
SHA256 = hashlib.sha256(ZIP).hexdigest()
ORIGIN = "https://ftp.drupal.org/files/projects/token-8.x-1.9.zip"
DIST = f"/dist/drupal/token/1.9.0/{SHA256}.zip"
EXPUNGED_SHA256 = hashlib.sha256(b"token 1.8.0").hexdigest()
OTHER_SHA256 = hashlib.sha256(b"other bytes").hexdigest()
NGINX = "/usr/sbin/nginx"


def signed(data: bytes, drupal_version: str = "8.x-1.9") -> VersionRecord:
    sha1 = hashlib.sha1(data).hexdigest()
    return VersionRecord(
        drupal_version=drupal_version,
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=sha1,
        size=len(data),
        composer=version_entry(name="drupal/token", drupal_version=drupal_version, sha1=sha1),
        origin_url=ORIGIN,
    )


TOKEN = PackageState(
    package="drupal/token",
    versions={"1.9.0": signed(ZIP)},
    sequence=3,
    expunged={"1.8.0": EXPUNGED_SHA256},
)


class Served:
    """The node's callbacks that matter here."""

    def __init__(self) -> None:
        self.served: list[tuple[str, str, str]] = []
        self.missing: list[tuple[str, str]] = []

    def on_serve(self, package: str, version: str, sha256: str) -> None:
        self.served.append((package, version, sha256))

    def on_missing(self, package: str, version: str, record: VersionRecord) -> None:
        self.missing.append((package, version))


@pytest.fixture
def store(location: StoreLocation) -> ObjectStore:
    created = S3Store(location, f"t-{uuid4().hex[:12]}")
    created.ensure_bucket()
    created.put_bytes(layout.artifact_key(SHA256), ZIP, content_type="application/zip")
    PackageStates(created, render=lambda state: render_documents(state, PUBLIC)).save(TOKEN)
    return created


@pytest.fixture
def served() -> Served:
    return Served()


@pytest.fixture
def region() -> str:
    """A region of the test's own: the metrics of the process are shared by every test."""
    return f"eu-{uuid4().hex[:8]}"


async def start(
    store: ObjectStore,
    served: Served,
    settings: NodeHttpSettings,
    presigner: ObjectStore | None = None,
) -> Client:
    node = NodeHttp(
        settings,
        store,
        states=PackageStates(store, render=lambda state: render_documents(state, PUBLIC)),
        on_serve=served.on_serve,
        on_missing=served.on_missing,
        presigner=presigner,
    )
    client: Client = TestClient(TestServer(node.app))
    await client.start_server()
    return client


@pytest.fixture
async def proxy(store: ObjectStore, served: Served, region: str) -> AsyncIterator[Client]:
    client = await start(store, served, NodeHttpSettings(region=region, dist="proxy"))
    try:
        yield client
    finally:
        await client.close()


async def aborted(client: Client, region: str, reason: str) -> float:
    """``fairstream_dist_proxy_aborted_total`` of ``region`` and ``reason``, from /metrics."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fairstream_dist_proxy_aborted_total" and sample.labels == {
                "region": region,
                "reason": reason,
            }:
                return sample.value
    return 0.0


# -- whole downloads -----------------------------------------------------------------------------


async def test_a_proxied_download_is_the_signed_zip_from_the_node_itself(
    proxy: Client, served: Served
) -> None:
    response = await proxy.get(DIST, allow_redirects=False)

    assert response.status == 200
    assert "Location" not in response.headers
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Length"] == str(len(ZIP))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{SHA256}"'
    assert await response.read() == ZIP
    assert served.served == [("drupal/token", "1.9.0", SHA256)]
    assert served.missing == []


async def test_a_head_request_has_the_headers_and_no_body(proxy: Client) -> None:
    response = await proxy.head(DIST, allow_redirects=False)

    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(ZIP))
    assert await response.read() == b""


async def test_the_mirror_route_is_proxied_too(proxy: Client) -> None:
    response = await proxy.get("/mirror/drupal/token/1.9.0.zip", allow_redirects=False)

    assert response.status == 200
    assert await response.read() == ZIP


async def test_a_tampered_zip_in_the_store_is_never_served_whole(
    store: ObjectStore, proxy: Client, region: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Same size, other bytes, under the signed sha256: only the hash can tell.
    tampered = bytearray(ZIP)
    tampered[-10] ^= 0xFF
    store.put_bytes(layout.artifact_key(SHA256), bytes(tampered), content_type="application/zip")

    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with proxy.get(DIST) as response:
            assert response.status == 200
            async for piece in response.content.iter_any():
                received += piece

    # The client got less than announced, and not the altered last bytes.
    assert len(received) < len(ZIP)
    assert bytes(received) == ZIP[: len(received)]
    assert await aborted(proxy, region, "digest-mismatch") == 1
    assert "the zip in the store is not the signed one (sha256 " in caplog.text
    # curl, which Composer uses, fails the transfer too.
    curl = await asyncio.create_subprocess_exec(
        *("curl", "-sS", "-o", "/dev/null", str(proxy.make_url(DIST))),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(curl.communicate(), 30)
    assert curl.returncode == 18, stderr  # CURLE_PARTIAL_FILE


async def test_a_stored_zip_of_another_size_is_not_served_but_fetched_again(
    store: ObjectStore, proxy: Client, served: Served
) -> None:
    store.put_bytes(layout.artifact_key(SHA256), ZIP[:-1], content_type="application/zip")

    response = await proxy.get(DIST, allow_redirects=False)

    assert response.status == 302
    assert response.headers["Location"] == ORIGIN
    assert served.missing == [("drupal/token", "1.9.0")]


async def test_a_zip_not_held_goes_elsewhere_as_before(
    store: ObjectStore, proxy: Client, served: Served
) -> None:
    store.delete(layout.artifact_key(SHA256))

    response = await proxy.get(DIST, allow_redirects=False)
    mirror = await proxy.get("/mirror/drupal/token/1.9.0.zip", allow_redirects=False)

    assert response.status == 302
    assert response.headers["Location"] == ORIGIN
    assert served.missing == [("drupal/token", "1.9.0")]
    assert mirror.status == 404


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (f"/dist/drupal/token/1.8.0/{EXPUNGED_SHA256}.zip", 410, "was expunged"),
        (f"/dist/drupal/token/1.8.0/{SHA256}.zip", 410, "was expunged"),
        (f"/dist/drupal/token/2.0.0/{SHA256}.zip", 404, "has no version 2.0.0"),
        (f"/dist/drupal/token/1.9.0/{OTHER_SHA256}.zip", 404, f"is sha256 {SHA256}"),
    ],
)
async def test_the_dist_rules_hold_when_proxying(
    proxy: Client, served: Served, path: str, status: int, message: str
) -> None:
    response = await proxy.get(path, allow_redirects=False)

    assert response.status == status
    assert message in await response.text()
    assert served.served == []


async def test_a_store_that_fails_before_the_answer_is_503(
    location: StoreLocation, store: ObjectStore, served: Served, region: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    # States readable, the zips' store gone: the stat fails.
    broken = S3Store(dataclasses.replace(location, endpoint=closed), store.bucket)
    node = NodeHttp(
        NodeHttpSettings(region=region, dist="proxy"),
        broken,
        states=PackageStates(store, render=lambda state: render_documents(state, PUBLIC)),
    )
    async with TestClient(TestServer(node.app)) as client:
        response = await client.get(DIST, allow_redirects=False)

        assert response.status == 503
        assert response.headers["Retry-After"] == "5"


def test_proxying_needs_the_package_states(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="needs the package states"):
        NodeHttp(NodeHttpSettings(region="eu", dist="proxy"), store)


# -- ranges, as nginx answers them for the same file ---------------------------------------------


@pytest.fixture(scope="module")
def static_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's nginx serving ZIP as a static file: the reference for range answers."""
    prefix = tmp_path_factory.mktemp("nginx-static")
    (prefix / "root").mkdir()
    (prefix / "root" / "token.zip").write_bytes(ZIP)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"""{user}daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  server {{ listen 127.0.0.1:{port}; root {prefix}/root; }}
}}
"""
    )
    process = subprocess.Popen(
        [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/token.zip"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def nginx_answer(url: str, range_header: str) -> tuple[int, str | None, bytes]:
    request = urllib.request.Request(url, headers={"Range": range_header})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Range"), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Range"), b""


SIZE = len(ZIP)


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-99",
        f"bytes={PIECE - 10}-{PIECE + 10}",  # across two pieces
        f"bytes={SIZE - 1}-{SIZE - 1}",
        "bytes=100-",
        "bytes=-500",
        f"bytes=-{SIZE + 1000}",  # a suffix longer than the zip: all of it
        f"bytes=1000-{SIZE * 2}",  # an end past the zip: clipped
        "bytes=0-",  # the whole zip, as a range
        "BYTES= 1-2",
        f"bytes={SIZE}-",  # starts past the end
        "bytes=-0",
        "bytes=5-2",
        "bytes=abc",
        "bytes=-",
        "items=0-5",  # another unit: ignored
    ],
)
async def test_a_range_is_answered_as_nginx_answers_it(
    proxy: Client, static_server: str, range_header: str
) -> None:
    status, content_range, body = nginx_answer(static_server, range_header)

    response = await proxy.get(DIST, headers={"Range": range_header}, allow_redirects=False)

    assert (response.status, response.headers.get("Content-Range")) == (status, content_range)
    if status in (200, 206):
        ours = await response.read()
        assert ours == body
        assert response.headers["Content-Length"] == str(len(body))


async def test_a_range_of_a_tampered_zip_is_sent_as_stored_and_the_whole_is_checked(
    store: ObjectStore, proxy: Client, region: str
) -> None:
    tampered = bytearray(ZIP)
    tampered[5] ^= 0xFF
    store.put_bytes(layout.artifact_key(SHA256), bytes(tampered), content_type="application/zip")

    part = await proxy.get(DIST, headers={"Range": "bytes=0-99"})
    assert (part.status, await part.read()) == (206, bytes(tampered[:100]))

    # The whole asked as a range is checked as a whole download is.
    with pytest.raises(aiohttp.ClientPayloadError):
        async with proxy.get(DIST, headers={"Range": "bytes=0-"}) as whole:
            assert whole.status == 206
            await whole.read()
    assert await aborted(proxy, region, "digest-mismatch") == 1


async def test_several_ranges_get_the_whole_zip(proxy: Client) -> None:
    response = await proxy.get(DIST, headers={"Range": "bytes=0-1,5-6"})

    assert response.status == 200
    assert "Content-Range" not in response.headers
    assert await response.read() == ZIP


@pytest.mark.parametrize(
    ("if_range", "status"),
    [(f'"{SHA256}"', 206), ('"another"', 200), ("Sat, 01 Mar 2025 12:00:00 GMT", 200)],
)
async def test_if_range_sends_the_range_only_for_these_very_bytes(
    proxy: Client, if_range: str, status: int
) -> None:
    response = await proxy.get(DIST, headers={"Range": "bytes=10-19", "If-Range": if_range})

    assert response.status == status
    assert await response.read() == (ZIP[10:20] if status == 206 else ZIP)


# -- redirects presigned for the store's public endpoint -----------------------------------------


async def test_a_redirect_is_presigned_for_the_public_endpoint_and_valid_there(
    location: StoreLocation, store: ObjectStore, served: Served, region: str
) -> None:
    port = location.endpoint.rsplit(":", 1)[1]
    # Another name of the same server, as a load balancer in front of it would be.
    public = S3Store(location.reached_at(f"http://localhost:{port}"), store.bucket)
    client = await start(store, served, NodeHttpSettings(region=region), presigner=public)
    try:
        response = await client.get(DIST, allow_redirects=False)
        mirror = await client.get("/mirror/drupal/token/1.9.0.zip", allow_redirects=False)
    finally:
        await client.close()

    assert response.status == 302
    url = response.headers["Location"]
    assert url.startswith(f"http://localhost:{port}/{store.bucket}/{layout.artifact_key(SHA256)}?")
    assert mirror.headers["Location"].startswith(f"http://localhost:{port}/")
    async with aiohttp.ClientSession() as session, session.get(url) as followed:
        assert followed.status == 200
        assert await followed.read() == ZIP
    # Signed for that host: the same URL sent to the store's other name is refused.
    internal = url.replace(f"http://localhost:{port}", f"http://{location.endpoint}")
    async with aiohttp.ClientSession() as session, session.get(internal) as elsewhere:
        assert elsewhere.status == 403


async def test_a_large_zip_is_streamed_in_bounded_memory(
    store: ObjectStore, served: Served, region: str
) -> None:
    large = os.urandom(24 * 1024 * 1024)
    record = signed(large, "8.x-2.0")
    store.put_bytes(layout.artifact_key(record.sha256), large, content_type="application/zip")
    PackageStates(store, render=lambda state: render_documents(state, PUBLIC)).save(
        dataclasses.replace(TOKEN, versions={**TOKEN.versions, "2.0.0": record}, sequence=4)
    )
    del large
    client = await start(store, served, NodeHttpSettings(region=region, dist="proxy"))
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        async with client.get(f"/dist/drupal/token/2.0.0/{record.sha256}.zip") as response:
            assert response.status == 200
            async for piece in response.content.iter_chunked(64 * 1024):
                digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await client.close()

    assert digest.hexdigest() == record.sha256
    # Node and client in this process: a few pieces in flight, never the 24 MiB zip.
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"


# -- settings a node refuses before it asks the store ----------------------------------------


@pytest.mark.parametrize("command", [["node", "run"], ["node", "serve"]])
@pytest.mark.parametrize(
    ("options", "says"),
    [
        (
            ["--dist", "proxy", "--store-public-url", "https://s3.example.org"],
            "--store-public-url is for --dist redirect",
        ),
        (["--store-public-url", "s3.example.org"], "is not http(s)://HOST[:PORT]"),
    ],
)
def test_a_wrong_dist_setting_is_refused_before_the_store_is_asked(
    tmp_path: Path, command: list[str], options: list[str], says: str
) -> None:
    args = [
        *command,
        "--region",
        "eu",
        "--root",
        str(tmp_path / "root.avro"),
        # Nothing listens on port 1: asking would fail otherwise.
        "--broker",
        "kafka://127.0.0.1:1",
        "--store",
        "s3://a:b@127.0.0.1:1",
        "--data-dir",
        str(tmp_path),
        # The listen address is checked first: one that is free now.
        "--listen",
        f"127.0.0.1:{free_port()}",
        *options,
    ]
    result = CliRunner().invoke(cli, args)

    assert isinstance(result.exception, ConfigurationError), result.output
    assert says in str(result.exception)
