"""The shipped nginx front on the real stack: a region's node behind Debian's nginx configured
by ``fairstream node nginx-config``, the real composer installing through it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from infra import localnet
from tests.e2e.harness import Federation, wait_until_served

pytestmark = pytest.mark.e2e


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture(scope="module")
def fronted(federation: Federation) -> Iterator[tuple[localnet.LocalProcess, str]]:
    """Region ``edge``: a full mirror keeping its view in its view topic (ADR 5), whose public
    URL is its nginx front."""
    front_port = localnet.free_port()
    public = f"http://127.0.0.1:{front_port}"
    node = federation.start_node("edge", options=["--public-url", public, "--view", "topic"])
    front = localnet.start_nginx_front(
        "edge",
        node_url=node.url,
        data_dir=federation.work_dir / "node-edge",
        port=front_port,
    )
    try:
        yield front, node.url
    finally:
        front.stop()


def test_composer_installs_through_the_nginx_front(
    federation: Federation, fronted: tuple[localnet.LocalProcess, str], tmp_path: Path
) -> None:
    front, node_url = fronted
    token, token_zip = federation.release("token", "8.x-1.9")
    pathauto, _ = federation.release("pathauto", "8.x-1.12", {"drupal/token": "*"})
    federation.publish(token)
    federation.publish(pathauto)
    wait_until_served(federation, "drupal/pathauto", "1.12.0", nodes=["edge"])
    assert "1.12.0" in localnet.fetch_p2_versions(front.url, "drupal/pathauto")

    site = tmp_path / "site"
    result = localnet.composer_require(site, front.url, ["drupal/pathauto"])
    assert result.returncode == 0, f"composer through nginx failed:\n{result.stderr}"
    lock = orjson.loads((site / "composer.lock").read_bytes())
    locked = {p["name"]: p for p in lock["packages"]}
    assert locked["drupal/token"]["dist"]["url"].startswith(front.url + "/dist/")
    assert locked["drupal/token"]["dist"]["shasum"] == token.artifact.sha1
    with zipfile.ZipFile(token_zip) as archive:
        published = archive.read("token/token.module")
    assert (site / "vendor/drupal/token/token.module").read_bytes() == published

    # nginx answered p2 from the node's docroot: the node's own answer, byte for byte.
    status, body, headers = get(front.url + "/p2/drupal/token.json")
    own_status, own_body, own_headers = get(node_url + "/p2/drupal/token.json")
    assert (status, own_status) == (200, 200)
    assert body == own_body
    assert headers["Last-Modified"] == own_headers["Last-Modified"]
    assert "nginx" in headers.get("Server", "")


def test_the_front_revalidates_exactly_and_a_new_release_is_dated_later(
    federation: Federation, fronted: tuple[localnet.LocalProcess, str]
) -> None:
    front, _ = fronted
    first, _ = federation.release("metatag", "8.x-1.20")
    federation.publish(first)
    wait_until_served(federation, "drupal/metatag", "1.20.0", nodes=["edge"])
    status, body, headers = get(front.url + "/p2/drupal/metatag.json")
    assert status == 200
    since = headers["Last-Modified"]
    assert get(front.url + "/p2/drupal/metatag.json", {"If-Modified-Since": since})[0] == 304

    # Published at once: within the same second, the rewritten document is dated later.
    second, _ = federation.release("metatag", "8.x-1.21")
    federation.publish(second)
    wait_until_served(federation, "drupal/metatag", "1.21.0", nodes=["edge"])
    status, newer, headers = get(
        front.url + "/p2/drupal/metatag.json", {"If-Modified-Since": since}
    )
    assert status == 200 and newer != body
    assert headers["Last-Modified"] != since

    # Names outside the region's patterns are nginx's own 404, as are unknown names.
    assert get(front.url + "/p2/symfony/console.json")[0] == 404
    assert get(front.url + "/p2/drupal/no_such_project.json")[0] == 404
    # Everything else reaches the node.
    status, root, _ = get(front.url + "/packages.json")
    assert status == 200
    assert orjson.loads(root)["metadata-url"] == front.url + "/p2/%package%.json"


def test_a_frontend_follows_the_view_topic_and_serves_what_the_worker_serves(
    federation: Federation, fronted: tuple[localnet.LocalProcess, str], tmp_path: Path
) -> None:
    """``node serve --view topic``: no worker, no p2 read from the bucket; its own local view
    restored from the region's view topic, then kept current."""
    _, node_url = fronted
    before, _ = federation.release("ctools", "8.x-3.14")
    federation.publish(before)
    wait_until_served(federation, "drupal/ctools", "3.14.0", nodes=["edge"])
    port = localnet.free_port()
    args = [
            "node", "serve", "--view", "topic", "--region", "edge",
            "--root", str(federation.root_file),
            "--broker", federation.stack.broker_url, "--store", federation.stack.store_url,
            "--listen", f"127.0.0.1:{port}", "--bucket", federation.bucket("edge"),
            "--data-dir", str(tmp_path / "frontend"),
            "--topic-prefix", federation.topics.releases.removesuffix("fair.releases"),
    ]  # fmt: skip
    frontend = localnet.start_fairstream(
        "frontend edge",
        args,
        url=f"http://127.0.0.1:{port}",
        log=tmp_path / "frontend.log",
    )
    try:
        frontend.wait_until_answering("/health")
        # Restored from the topic before it answered: the worker's bytes and dates.
        for path in ("/p2/drupal/ctools.json", "/p2/drupal/ctools~dev.json"):
            ours = get(frontend.url + path)
            worker = get(node_url + path)
            assert ours[0] == worker[0] == 200
            assert ours[1] == worker[1]
            assert ours[2]["Last-Modified"] == worker[2]["Last-Modified"]
        # Followed: a release applied by the worker after the frontend started.
        after, _ = federation.release("ctools", "8.x-3.15")
        federation.publish(after)
        wait_until_served(federation, "drupal/ctools", "3.15.0", nodes=["edge"])
        deadline = time.monotonic() + 30
        while "3.15.0" not in localnet.fetch_p2_versions(frontend.url, "drupal/ctools"):
            assert time.monotonic() < deadline, frontend.log_tail(30)
            time.sleep(0.2)
        docroot_files = list((tmp_path / "frontend").rglob("docroot/p2/drupal/ctools.json"))
        assert len(docroot_files) == 1, "the frontend wrote no docroot"
    finally:
        frontend.stop()
