"""The HTTP surface under attack: path traversal, odd encodings, fuzzed requests, oversized
and slow bodies. Real servers on loopback over the real embedded S3 server and broker.

Requests go out through ``http.client`` with the path sent exactly as written (no client
normalisation of ``..`` or percent-encodings), as an attacker would send them.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.kafka_reading import read_partition
from connectors.kafka_topics import Topics, ensure_topics
from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.store import S3Store, StoreLocation
from infra import devstack
from schemas import layout
from schemas.package_state import render_documents
from schemas.request_signing import sign_request
from schemas.signing import SigningKey
from services.directory.http_app import Directory, directory_app
from services.directory.registry import RegionMap, Registry
from services.node.http_app import NodeHttp
from services.node.http_settings import NodeHttpSettings
from services.publishing.body_limits import MAX_DOCUMENT_SIZE
from services.publishing.http_app import PublishingService, PublishingSettings
from services.publishing.trust_admin import DelegationSpec, build_root
from tests.servers import ServerThread

ROOT_KEY = SigningKey.generate()
SERVICE = SigningKey.generate()
PIPELINE = SigningKey.generate()
ROOT = build_root(
    version=1,
    root_keys=[ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[
        DelegationSpec("drupal/*", "drupal.org", (SERVICE.public_key, PIPELINE.public_key), 1)
    ],
)
ZIP = os.urandom(20_000)
SHA256 = hashlib.sha256(ZIP).hexdigest()
P2 = b'{"packages":{"drupal/token":[{"name":"drupal/token","version":"1.9.0"}]},"minified":"composer/2.0"}'
#: Held in the bucket but never served by any route: a state document.
SECRET = b'{"secret": "state documents are not served: ' + os.urandom(8).hex().encode() + b'"}'

TRAVERSALS = [
    "/p2/../state/drupal/token/x.json",
    "/p2/drupal/..%2f..%2fstate%2fdrupal%2ftoken.json",
    "/p2/%2e%2e/%2e%2e/etc/passwd",
    "/p2/drupal/%252e%252e%252fstate.json",
    "/p2/drupal/token%00.json",
    "/p2/drupal/%c0%ae%c0%ae/state.json",
    "/p2/drupal\\..\\..\\state.json",
    "/p2/drupal/%EF%BD%94oken.json",  # a fullwidth t, encoded
    "/p2/drupal/" + "a" * 8000 + ".json",
    f"/dist/drupal/token/1.9.0/../../../../state/drupal/token/{SHA256}.zip",
    f"/dist/drupal/token/1.9.0/{SHA256}%00.zip",
    "/dist/drupal/token/1.9.0/..%2f..%2f..%2fetc%2fpasswd.zip",
    "/mirror/drupal/token/..%2f..%2fstate.json",
    "/mirror/drupal/token/%2e%2e%2f%2e%2e%2fstate%2fdrupal%2ftoken.json",
    "/../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
    "/packages.json/../state/drupal/token.json",
    "/health/%2e%2e",
]


def signed_headers(
    key: SigningKey, path: str, body: bytes, *, method: str = "POST"
) -> dict[str, str]:
    """A request signed by a delegated key, as the publishing client signs it."""
    digest = hashlib.sha256(body).hexdigest()
    return sign_request(key, method, path, digest, now=datetime.now(UTC))


@pytest.fixture(scope="module")
def surface_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    """A broker and S3 server of this module's own: the session's S3 server is slowed by
    the catalogues earlier tests wrote (each fuzzed request reaches it)."""
    data_dir = tmp_path_factory.mktemp("surface-stack")
    started = devstack.up(data_dir)
    try:
        yield started
    finally:
        devstack.down(data_dir)


@pytest.fixture(scope="module")
def seeded(surface_stack: devstack.Stack) -> ObjectStore:
    """A region's bucket: a p2 document, a zip, and state documents no route may serve."""
    store = S3Store(StoreLocation.from_url(surface_stack.store_url), f"surface-{uuid4().hex[:10]}")
    store.ensure_bucket()
    store.put_bytes(layout.p2_key("drupal/token"), P2, content_type="application/json")
    store.put_bytes(layout.artifact_key(SHA256), ZIP, content_type="application/zip")
    store.put_bytes(layout.state_key("drupal/token", 1), SECRET, content_type="application/json")
    store.put_bytes("state/drupal/token.json", SECRET, content_type="application/json")
    return store


@pytest.fixture(scope="module")
def node(seeded: ObjectStore) -> Iterator[ServerThread]:
    with ServerThread(NodeHttp(NodeHttpSettings(region="eu"), seeded).app) as server:
        yield server


@pytest.fixture(scope="module")
def directory(surface_stack: devstack.Stack, seeded: ObjectStore) -> Iterator[ServerThread]:
    """A directory (its own metadata, /nodes.json, downloads routed) over the same bucket,
    following a real status topic."""
    topics = Topics.with_prefix(f"surface-{uuid4().hex[:10]}.")
    ensure_topics(surface_stack.broker_url, topics.partitions(1), compacted=topics.compacted)
    states = PackageStates(seeded, render=lambda state: render_documents(state, "http://x"))
    service = Directory(
        broker_url=surface_stack.broker_url,
        status_topic=topics.status,
        states=states,
        registry=Registry(),
        regions=RegionMap.parse(["127.0.0.0/8=eu"]),
        check_every=0.5,
    )
    service.start()
    http = NodeHttp(
        NodeHttpSettings(region="directory"), seeded, states=states, dist_router=service.route
    )
    try:
        with ServerThread(directory_app(http, service)) as server:
            yield server
    finally:
        service.stop()


@pytest.mark.parametrize("path", TRAVERSALS)
@pytest.mark.parametrize("server_name", ["node", "directory"])
def test_traversal_and_odd_encodings_reach_nothing_outside_a_route(
    request: pytest.FixtureRequest, server_name: str, path: str
) -> None:
    server: ServerThread = request.getfixturevalue(server_name)
    for method in ("GET", "HEAD"):
        status, body = server.request(method, path)
        assert status < 500, (method, path, status, body[:200])
        assert SECRET not in body and b"root:x:0:0" not in body, (path, body[:200])
        assert status != 200 or body in (b"", P2), (path, status, body[:200])


def test_the_valid_paths_still_work(node: ServerThread) -> None:
    assert node.request("GET", "/p2/drupal/token.json") == (200, P2)
    status, _ = node.request("GET", f"/dist/drupal/token/1.9.0/{SHA256}.zip")
    assert status in (200, 302, 307)


def route_paths(app: web.Application) -> list[str]:
    """The canonical path of every route, ``{variables}`` kept."""
    return sorted({resource.canonical for resource in app.router.resources()})


SEGMENT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["..", ".", "%2e%2e", "%2f", "%00", "drupal", "token", SHA256, "~dev"]),
)
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
HEADERS = st.dictionaries(
    st.sampled_from(
        ["If-Modified-Since", "X-Fairstream-Region", "Content-Type", "Accept", "Range"]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    max_size=3,
)


def fill(template: str, values: list[str], raw: bool) -> str:
    """The template's ``{variables}`` replaced by ``values`` (percent-encoded unless
    ``raw``), anything outside printable ASCII encoded so the request line can be sent."""
    pieces = iter(values)
    path = re.sub(
        r"\{[^}]+\}",
        lambda _: (lambda v: v if raw else urllib.parse.quote(v, safe=""))(next(pieces, "")),
        template,
    )
    return "".join(c if 32 < ord(c) < 127 else urllib.parse.quote(c) for c in path)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    values=st.lists(SEGMENT, min_size=4, max_size=4),
    raw=st.booleans(),
    method=METHODS,
    headers=HEADERS,
    body=st.binary(max_size=200),
)
def test_fuzzed_requests_to_every_node_and_directory_route_never_get_a_5xx(
    node: ServerThread,
    directory: ServerThread,
    data: st.DataObject,
    values: list[str],
    raw: bool,
    method: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    server = data.draw(st.sampled_from([node, directory]))
    template = data.draw(st.sampled_from(route_paths(server.app)))
    path = fill(template, values, raw)
    status, answer = server.request(method, path, body, headers)
    assert status < 500, (method, path, headers, status, answer[:300])
    assert SECRET not in answer


# --- the publishing API --------------------------------------------------------------------


@pytest.fixture(scope="module")
def publishing(
    stack: devstack.Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, Topics]]:
    topics = Topics.with_prefix(f"surface-{uuid4().hex[:10]}.")
    ensure_topics(stack.broker_url, {topics.releases: 1})
    work: Path = tmp_path_factory.mktemp("spool")
    settings = PublishingSettings(
        broker_url=stack.broker_url,
        topics=topics,
        max_artifact_size=64 * 1024,
        delivery_timeout=10.0,
        work_dir=work,
    )
    service = PublishingService(settings, ROOT, [SERVICE])
    with ServerThread(service.app) as server:
        yield server, topics


def test_an_oversized_body_is_refused_before_it_is_read_and_the_service_goes_on(
    publishing: tuple[ServerThread, Topics], stack: devstack.Stack
) -> None:
    server, topics = publishing
    body = orjson.dumps({"package": "drupal/token", "padding": "x" * (4 * MAX_DOCUMENT_SIZE)})
    status, answer = server.request(
        "POST",
        "/v1/yanks",
        body,
        {"Content-Type": "application/json", **signed_headers(PIPELINE, "/v1/yanks", body)},
    )
    assert status in (400, 413), (status, answer[:300])
    assert server.request("GET", "/health")[0] == 200
    assert read_partition(stack.broker_url, topics.releases, 0) == []


def test_a_slow_body_is_cut_off_and_the_service_keeps_answering(
    publishing: tuple[ServerThread, Topics],
) -> None:
    """A slowloris with valid credentials (so the service must read the body): signed
    headers, then a byte a second of a body that never ends."""
    server, _ = publishing
    body = b"x" * 100_000
    auth = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(PIPELINE, "/v1/yanks", body).items())
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(
            b"POST /v1/yanks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + auth.encode()
            + b"Content-Length: 100000\r\n\r\n"
        )
        started = time.monotonic()
        closed, answer = False, b""
        while time.monotonic() - started < 60:
            # Others are served meanwhile.
            assert server.request("GET", "/health")[0] == 200
            try:
                slow.sendall(b"x")
                slow.settimeout(1.0)
                answer = slow.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            closed = True  # an answer, or the end of the connection
            break
        took = time.monotonic() - started
        assert closed, "a body trickled for 60 s still holds its connection open"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        # 100 kB announced: 10 s of grace plus 2 s at 50 kB/s, and a second of slack.
        assert took < 20, took


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/releases", "/v1/yanks", "/v1/expunges", "/v1/advisories"]),
    method=METHODS,
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=5).map(orjson.dumps),
    ),
    content_type=st.sampled_from(
        ["application/json", "multipart/form-data; boundary=x", "text/plain", ""]
    ),
    signed=st.booleans(),
)
def test_fuzzed_publishing_requests_never_get_a_5xx_nor_publish(
    publishing: tuple[ServerThread, Topics],
    stack: devstack.Stack,
    path: str,
    method: str,
    body: bytes,
    content_type: str,
    signed: bool,
) -> None:
    server, _ = publishing
    headers = {"Content-Type": content_type} if content_type else {}
    if signed:
        headers.update(signed_headers(PIPELINE, path, body, method=method))
    status, answer = server.request(method, path, body, headers)
    assert status < 500, (method, path, status, answer[:300])
    assert status >= 400, (method, path, status, answer[:300])


def test_nothing_the_fuzz_sent_was_published(
    publishing: tuple[ServerThread, Topics], stack: devstack.Stack
) -> None:
    """After the fuzz above (tests run in file order): the topic is still empty."""
    _, topics = publishing
    assert read_partition(stack.broker_url, topics.releases, 0) == []
