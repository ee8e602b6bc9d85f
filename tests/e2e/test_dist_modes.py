"""Both production paths to the zips, with the real composer: a node that sends them through
itself (``--dist proxy``, for a store clients cannot reach) and one whose redirects are
presigned for the store's public endpoint (``--store-public-url``, here a TCP forwarder in
front of the embedded store, as a load balancer in front of MinIO would be)."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra import localnet
from schemas import layout
from schemas.events import ReleasePublished
from tests.e2e.harness import Federation, wait_until_served
from tests.e2e.test_regional_node import eventually, redirect_of, unfollowed

pytestmark = pytest.mark.e2e

NODE_OPTIONS = {"eu": ["--dist", "proxy"]}


class Forwarder:
    """A TCP port that forwards every connection to ``target`` unchanged, counting them."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Forwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target, timeout=30) as upstream:
            back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
            back.start()
            self._pump(client, upstream)
            back.join(30)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # a side went away: the other is told below
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def forwarder(federation: Federation) -> Iterator[Forwarder]:
    store = urlsplit(federation.stack.store_url)
    assert store.hostname is not None and store.port is not None
    with Forwarder((store.hostname, store.port)) as started:
        yield started


def publish_pair(
    federation: Federation, token: str, pathauto: str
) -> list[tuple[ReleasePublished, Path]]:
    """Release token and a pathauto that requires it; returns the events and their zips."""
    released = [
        federation.release("token", token),
        federation.release("pathauto", pathauto, {"drupal/token": "*"}),
    ]
    for event, _ in released:
        federation.publish(event)
    return released


def wait_until_held(federation: Federation, region: str, events: list[ReleasePublished]) -> None:
    """Until the region's bucket holds every zip of ``events`` (else it redirects elsewhere)."""
    store = federation.store(region)
    keys = [layout.artifact_key(event.artifact.sha256) for event in events]
    eventually(lambda: all(store.stat(key) is not None for key in keys), f"{region} holds the zips")


def assert_installed(
    site: Path, released: list[tuple[ReleasePublished, Path]], node_url: str
) -> None:
    locked = {p["name"]: p for p in orjson.loads((site / "composer.lock").read_bytes())["packages"]}
    for event, zip_path in released:
        project = event.package.split("/")[1]
        assert locked[f"drupal/{project}"]["dist"]["url"].startswith(node_url + "/dist/")
        with zipfile.ZipFile(zip_path) as archive:
            expected = archive.read(f"{project}/{project}.module")
        assert (site / "vendor" / "drupal" / project / f"{project}.module").read_bytes() == expected


def dist_answers(node_url: str, code: str) -> float:
    """How many /dist requests the node answered with ``code``, from its /metrics."""
    with urllib.request.urlopen(node_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "fairstream_http_requests_total"
                and labels.get("route", "").startswith("/dist/")
                and code in (labels.get("code"), labels.get("status"))
            ):
                total += sample.value
    return total


def test_composer_installs_through_a_proxying_node(federation: Federation, tmp_path: Path) -> None:
    released = publish_pair(federation, "8.x-1.9", "8.x-1.12")
    wait_until_served(federation, "drupal/pathauto", "1.12.0", nodes=["eu"])
    wait_until_held(federation, "eu", [event for event, _ in released])
    eu = federation.nodes["eu"].url
    token = localnet.fetch_p2_versions(eu, "drupal/token")["1.9.0"]
    dist = token["dist"]["url"]
    assert dist.startswith(eu + "/dist/")

    before = dist_answers(eu, "200")
    # The node answers with the zip itself, never a URL of its store.
    status, headers = unfollowed(dist)
    assert (status, headers.get("Location")) == (200, None)
    assert headers["Content-Type"] == "application/zip"

    site = tmp_path / "site-proxy"
    result = localnet.composer_require(site, eu, ["drupal/pathauto"])

    assert result.returncode == 0, result.stderr
    assert_installed(site, released, eu)
    # Both zips came from eu's /dist (not from a mirror after a failure); the third answer
    # is the look above, counted once its handler ends (the client hung up after the headers).
    assert dist_answers(eu, "200") - before == 3


def test_composer_follows_redirects_presigned_for_the_public_endpoint(
    federation: Federation, forwarder: Forwarder, tmp_path: Path
) -> None:
    public = f"http://127.0.0.1:{forwarder.port}"
    node = federation.start_node("pub", options=["--store-public-url", public])
    try:
        released = publish_pair(federation, "8.x-1.10", "8.x-1.13")
        wait_until_served(federation, "drupal/pathauto", "1.13.0", nodes=["pub", "us"])
        for region in ("pub", "us"):
            wait_until_held(federation, region, [event for event, _ in released])
        path = layout.dist_path("drupal/token", "1.10.0", released[0][0].artifact.sha256)

        status, location = redirect_of(node.url + path)
        assert status == 302
        assert location is not None and location.startswith(public + "/")
        # A node without the setting presigns for the store's own endpoint, as before.
        _, internal = redirect_of(federation.nodes["us"].url + path)
        assert internal is not None and not internal.startswith(public)

        site = tmp_path / "site-public"
        result = localnet.composer_require(site, node.url, ["drupal/pathauto"])

        assert result.returncode == 0, result.stderr
        assert_installed(site, released, node.url)
        # Composer fetched the zips through the public endpoint.
        assert forwarder.connections >= 1
    finally:
        federation.nodes.pop("pub").stop()
