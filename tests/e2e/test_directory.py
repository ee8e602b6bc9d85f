"""The directory on the real stack: nodes register and are admitted after a self-test,
heartbeats carry their sync state, a real composer lands on the client's region, and a
stopped node is sent no clients until it answers and catches up again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from infra import localnet
from tests.e2e.harness import Federation, wait_until_served
from tests.e2e.test_regional_node import get_json, redirect_of

pytestmark = pytest.mark.e2e

NODE_OPTIONS = {"eu": ["--status-every", "1"], "us": ["--status-every", "1"]}


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.3)


def serves(url: str, package: str, version: str) -> None:
    def listed() -> bool:
        try:
            return version in localnet.fetch_p2_versions(url, package)
        except Exception:
            return False

    eventually(listed, f"{url} lists {package} {version}")


def start_directory(federation: Federation, *options: str) -> localnet.LocalProcess:
    port = localnet.free_port()
    directory = localnet.start_fairstream(
        "directory",
        [
            "directory",
            "serve",
            "--root",
            str(federation.root_file),
            "--broker",
            federation.stack.broker_url,
            "--store",
            federation.stack.store_url,
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(federation.work_dir / "directory"),
            "--topic-prefix",
            federation.topics.releases.removesuffix("fair.releases"),
            "--name",
            f"{federation.bucket('dir')}",
            "--session-timeout",
            "6",
            "--stale-after",
            "3",
            "--check-every",
            "0.5",
            *options,
        ],
        url=f"http://127.0.0.1:{port}",
        log=federation.work_dir / "logs" / "directory.log",
    )
    federation.processes.append(directory)
    directory.wait_until_answering("/health")
    return directory


def nodes_by_region(directory: localnet.LocalProcess) -> dict[str, dict[str, Any]]:
    return {n["region"]: n for n in get_json(f"{directory.url}/nodes.json")["nodes"]}


def test_nodes_are_admitted_and_clients_sent_to_their_region(
    federation: Federation, tmp_path: Path
) -> None:
    event, _ = federation.release("token", "8.x-1.9")
    federation.publish(event)
    wait_until_served(federation, "drupal/token", "1.9.0")
    directory = start_directory(federation, "--region-map", "127.0.0.0/8=us")

    def admitted() -> dict[str, dict[str, Any]] | None:
        nodes = nodes_by_region(directory)
        ok = {"eu", "us"} <= nodes.keys() and all(
            nodes[r]["admission"] == "admitted" for r in ("eu", "us")
        )
        return nodes if ok else None

    nodes = eventually(admitted, "both regions admitted after their self-test")
    assert "signed sha1" in nodes["eu"]["reason"]
    assert nodes["eu"]["state"] == "in-sync" and nodes["eu"]["events_behind"] == 0

    # The directory's own metadata, and a dist answered by the client's region.
    serves(directory.url, "drupal/token", "1.9.0")
    url = f"/dist/drupal/token/1.9.0/{event.artifact.sha256}.zip"
    status, location = redirect_of(directory.url + url)
    assert status == 302 and location == federation.nodes["us"].url + url
    # An explicit choice (a header composer can send) wins over the address.
    request_headers = {"X-Fairstream-Region": "eu"}
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(urllib.request.Request(directory.url + url, headers=request_headers))
    except urllib.error.HTTPError as exc:
        assert exc.code == 302 and exc.headers["Location"] == federation.nodes["eu"].url + url

    # A real composer through the directory lands on its region (127.0.0.0/8 is us).
    before = nodes_by_region(directory)
    result = localnet.composer_require(tmp_path / "site", directory.url, ["drupal/token:^1.9"])
    assert result.returncode == 0, result.stderr
    assert (
        (tmp_path / "site" / "vendor" / "drupal" / "token").is_dir()
        or (tmp_path / "site" / "web" / "modules" / "contrib" / "token").exists()
        or "Installing drupal/token" in result.stderr
    )
    after = nodes_by_region(directory)
    assert after["us"]["served"] > before["us"]["served"]
    assert after["eu"]["served"] == before["eu"]["served"]

    # fairstream status prints every node from its heartbeat.
    table = localnet.run_fairstream(
        [
            "status",
            "--broker",
            federation.stack.broker_url,
            "--topic-prefix",
            federation.topics.releases.removesuffix("fair.releases"),
            "--directory",
            directory.url,
        ]
    )
    assert "in sync" in table.stdout and "admitted" in table.stdout
    assert federation.nodes["eu"].url in table.stdout


def start_frontend(federation: Federation, region: str) -> localnet.LocalProcess:
    """``fairstream node serve``: the region's bucket over HTTP, without a worker."""
    port = localnet.free_port()
    frontend = localnet.start_fairstream(
        f"frontend {region}",
        [
            "node",
            "serve",
            "--region",
            region,
            "--root",
            str(federation.root_file),
            "--broker",
            federation.stack.broker_url,
            "--store",
            federation.stack.store_url,
            "--listen",
            f"127.0.0.1:{port}",
            "--bucket",
            federation.bucket(region),
            "--data-dir",
            str(federation.work_dir / f"frontend-{region}"),
            "--topic-prefix",
            federation.topics.releases.removesuffix("fair.releases"),
            "--status-every",
            "1",
        ],
        url=f"http://127.0.0.1:{port}",
        log=federation.work_dir / "logs" / f"frontend-{region}.log",
    )
    federation.processes.append(frontend)
    frontend.wait_until_answering("/health")
    return frontend


def test_a_stopped_region_keeps_the_versions_it_has_and_gets_new_ones_once_caught_up(
    federation: Federation,
) -> None:
    """Three regions; ap's worker is stopped (SIGSTOP) while releases keep coming. Its
    frontend keeps serving what ap applied; new versions go to eu or us until ap catches up."""
    worker = federation.start_node("ap", options=["--status-every", "1"])
    old, _ = federation.release("ctools", "8.x-3.1")
    federation.publish(old)
    wait_until_served(federation, "drupal/ctools", "3.1.0", nodes=["eu", "us", "ap"])
    frontend = start_frontend(federation, "ap")
    directory = start_directory(federation, "--region-map", "127.0.0.0/8=ap")

    def admitted(url: str) -> bool:
        nodes = get_json(f"{directory.url}/nodes.json")["nodes"]
        return any(n["base_url"] == url and n["admission"] == "admitted" for n in nodes)

    for url in (frontend.url, federation.nodes["eu"].url, federation.nodes["us"].url):
        eventually(partial(admitted, url), f"{url} admitted")
    serves(directory.url, "drupal/ctools", "3.1.0")
    old_path = f"/dist/drupal/ctools/3.1.0/{old.artifact.sha256}.zip"
    ap_urls = (frontend.url, worker.url)
    assert (redirect_of(directory.url + old_path)[1] or "").startswith(ap_urls)

    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        new, _ = federation.release("ctools", "8.x-3.2")
        federation.publish(new)
        wait_until_served(federation, "drupal/ctools", "3.2.0", nodes=["eu", "us"])
        serves(directory.url, "drupal/ctools", "3.2.0")
        new_path = f"/dist/drupal/ctools/3.2.0/{new.artifact.sha256}.zip"
        others = (federation.nodes["eu"].url, federation.nodes["us"].url)
        # Once eu's and us's heartbeats show it applied (about a second), they get it.
        eventually(
            lambda: (redirect_of(directory.url + new_path)[1] or "").startswith(others),
            "the new version sent to an in-sync region while ap's worker is stopped",
            timeout=20,
        )
        # The version ap has stays with ap's frontend, which still answers.
        eventually(
            lambda: redirect_of(directory.url + old_path)[1] == frontend.url + old_path,
            "the old version sent to ap's frontend while its worker is stopped",
            timeout=20,
        )
        # ap advertises nothing it has not applied.
        assert "3.2.0" not in localnet.fetch_p2_versions(frontend.url, "drupal/ctools")
        behind = next(
            n
            for n in get_json(f"{directory.url}/nodes.json")["nodes"]
            if n["base_url"] == frontend.url
        )
        assert behind["events_behind"] >= 1 and behind["state"] == "catching-up"
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    eventually(
        lambda: (redirect_of(directory.url + new_path)[1] or "").startswith(ap_urls),
        "ap sent clients for the new version once it caught up",
        timeout=90,
    )
