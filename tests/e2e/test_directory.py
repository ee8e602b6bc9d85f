"""The directory on the real stack: nodes register and are admitted after a self-test,
heartbeats carry their sync state, a real composer lands on the client's region, and a
stopped node is sent no clients until it answers and catches up again."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from connectors.view_store import LocalView, ViewFollower
from infra import localnet
from schemas.composer import expand
from schemas.events import ReleasePublished, ReleaseYanked, utc_now
from schemas.federation import registration_key, seal_registration, seal_status, status_key
from schemas.signing import SigningKey, seal
from schemas.versions import drupal_to_composer
from services.cli.status import read_node_book
from services.directory.http_app import Directory
from services.directory.registry import ADMITTED, DROPPED, PENDING, RegionMap, Registry
from services.publishing.publisher import next_sequence
from streams.policy import ReplicationPolicy
from streams.sync import registration_of
from tests.drupal_fixtures import DRUPAL_P2
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
            f"{federation.bucket('dir')}-{port}",
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


def token_history() -> list[str]:
    """drupal/token's releases on packages.drupal.org (the repo's fixture), oldest first."""
    document = orjson.loads((DRUPAL_P2 / "token.json").read_bytes())
    entries = expand(document["packages"]["drupal/token"])
    return [str(entry["dist"]["reference"]) for entry in reversed(entries)]


def webform_history() -> list[str]:
    """Hundreds of releases over two majors, as drupal/webform has: 8.x-5.x's long run of
    pre-releases, then semver 6.x, each major with its dev branch."""
    stages = (("alpha", 15), ("beta", 29), ("rc", 29))
    legacy = [f"8.x-5.0-{stage}{n}" for stage, count in stages for n in range(1, count + 1)]
    legacy += [f"8.x-5.{patch}" for patch in range(29)]
    semver = [f"6.0.0-{stage}{n}" for stage, count in stages for n in range(1, count // 3 + 1)]
    semver += [f"6.{minor}.{patch}" for minor in range(10) for patch in range(10)]
    return [*legacy, "8.x-5.x-dev", *semver, "6.x-dev"]


#: Releases by project, in publishing order, shaped like the real catalogue: dev snapshots
#: (served from ``p2/<name>~dev.json``), a young project with nothing but a dev snapshot
#: once its alpha is yanked, a package with hundreds of versions. Each project's last
#: release is a dev snapshot, as on Drupal.org, where they are rebuilt on every commit: the
#: directory's spot checks (of a package's newest version) all land on ``~dev`` documents.
CATALOGUE = {
    "audit_awesome": ["8.x-1.0-alpha1", "8.x-1.x-dev"],
    "token": [*token_history(), "8.x-1.x-dev"],
    "webform": webform_history(),
}
YANKED = {"drupal/audit_awesome": ["1.0.0-alpha1"], "drupal/webform": ["5.0.0-rc13", "6.1.3"]}


def publish_catalogue(federation: Federation) -> dict[tuple[str, str], ReleasePublished]:
    """Publish ``CATALOGUE`` then the yanks of ``YANKED`` (in one batch), and wait until
    every region serves each project's last release. Returns the releases by (package,
    version)."""
    releases: dict[tuple[str, str], ReleasePublished] = {}
    records = []
    for project, drupal_versions in CATALOGUE.items():
        for drupal_version in drupal_versions:
            event, _ = federation.release(project, drupal_version)
            releases[(event.package, event.version)] = event
            records.append((event.package.encode(), seal(event.to_bytes(), [federation.key])))
    for package, versions in YANKED.items():
        for version in versions:
            yank = ReleaseYanked(package, version, next_sequence(), "withdrawn", utc_now())
            records.append((package.encode(), seal(yank.to_bytes(), [federation.key])))
    federation.producer.produce_many(federation.topics.releases, records)
    for project, drupal_versions in CATALOGUE.items():
        wait_until_served(federation, f"drupal/{project}", drupal_to_composer(drupal_versions[-1]))
    return releases


def test_nodes_are_admitted_and_clients_sent_to_their_region(
    federation: Federation, tmp_path: Path
) -> None:
    """On a real-shaped catalogue: the first package (audit_awesome) holds only a dev
    snapshot, so the self-test reads ``~dev`` documents, and so does every spot check."""
    releases = publish_catalogue(federation)
    event = releases[("drupal/token", "1.9.0")]
    directory = start_directory(
        federation, "--region-map", "127.0.0.0/8=us", "--spot-check-every", "1"
    )

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

    # Spot checks (every second, each on a package's newest release: a dev snapshot, read
    # from its ~dev document) pass, and both nodes stay admitted.
    def dev_checks_passed() -> bool:
        log = directory.log_tail(100_000).splitlines()
        return all(
            sum(
                f"({region}, {node.url}) admitted: served drupal/" in line
                and line.rstrip().endswith("-dev with the signed sha1")
                for line in log
            )
            >= 3
            for region, node in federation.nodes.items()
        )

    eventually(dev_checks_passed, "spot checks of dev versions passed", timeout=30)
    assert ") refused: " not in directory.log_tail(100_000)
    nodes = nodes_by_region(directory)
    assert [nodes[r]["admission"] for r in ("eu", "us")] == ["admitted", "admitted"], nodes

    # The directory's own metadata: dev snapshots listed, yanked versions left out.
    serves(directory.url, "drupal/audit_awesome", "1.x-dev")
    yanked = set(YANKED["drupal/webform"])

    def webform_without_yanked() -> dict[str, Any] | None:
        served = localnet.fetch_p2_versions(directory.url, "drupal/webform")
        return served if served and not yanked & served.keys() else None

    webform = eventually(webform_without_yanked, "webform's yanks applied by the directory")
    assert len(webform) == len(CATALOGUE["webform"]) - len(yanked)

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

        # ... and says it is behind, once its next heartbeat has counted (every second;
        # counting a region's lag on this catalogue can take longer than that).
        def frontend_behind() -> bool:
            entry = next(
                n
                for n in get_json(f"{directory.url}/nodes.json")["nodes"]
                if n["base_url"] == frontend.url
            )
            return bool(entry["events_behind"] >= 1 and entry["state"] == "catching-up")

        eventually(frontend_behind, "ap's frontend says ap is catching up", timeout=20)
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    eventually(
        lambda: (redirect_of(directory.url + new_path)[1] or "").startswith(ap_urls),
        "ap sent clients for the new version once it caught up",
        timeout=90,
    )


def directory_in_process(
    federation: Federation, clock: Callable[[], datetime], stale_after: timedelta
) -> tuple[Directory, ViewFollower]:
    """A directory object on the real status topic and eu's real package states (read from
    eu's view topic into a local view, as a frontend does), on a clock the test moves."""
    states = LocalView(None)
    follower = ViewFollower(federation.stack.broker_url, federation.topics.view("eu"), states)
    follower.start()
    follower.catch_up(federation.producer, "directory-in-process", timeout=60)
    directory = Directory(
        broker_url=federation.stack.broker_url,
        status_topic=federation.topics.status,
        states=states,
        registry=Registry(silence_window=timedelta(hours=24), stale_after=stale_after),
        regions=RegionMap(),
        clock=clock,
    )
    directory.start()
    return directory, follower


@pytest.fixture
def stoppable() -> Any:
    started: list[Directory | ViewFollower] = []
    yield started
    for started_one in started:
        started_one.stop()


def admission_of(directory: Directory, base_url: str) -> str | None:
    for entry in directory.registry.nodes.values():
        if entry.registration.base_url == base_url and entry.status is not None:
            return entry.admission
    return None


async def admission_round(directory: Directory) -> None:
    async with aiohttp.ClientSession() as session:
        await directory.check(session)


def test_a_node_silent_past_the_window_is_dropped_and_retested_when_it_returns(
    federation: Federation, stoppable: list[Directory | ViewFollower]
) -> None:
    """Defederation on an injected clock: eu's worker is stopped, the clock moves 24 h, the
    node is dropped; once it is heard again it is admitted only after a new self-test."""
    event, _ = federation.release("admin_toolbar", "8.x-3.4")
    federation.publish(event)
    wait_until_served(federation, "drupal/admin_toolbar", "3.4.0", nodes=["eu"])
    now = [datetime.now(UTC)]
    directory, follower = directory_in_process(federation, lambda: now[0], timedelta(seconds=30))
    stoppable += [directory, follower]
    eu = federation.nodes["eu"]
    eventually(lambda: admission_of(directory, eu.url) == PENDING, "eu registered, pending")
    asyncio.run(admission_round(directory))
    assert admission_of(directory, eu.url) == ADMITTED

    os.kill(eu.process.pid, signal.SIGSTOP)
    try:
        time.sleep(2)  # a heartbeat in flight lands before the clock moves
        now[0] += timedelta(hours=24, seconds=5)
        asyncio.run(admission_round(directory))
        assert admission_of(directory, eu.url) == DROPPED
        entry = next(
            e for e in directory.registry.nodes.values() if e.registration.base_url == eu.url
        )
        assert "silent for more than 24 h" in entry.reason
    finally:
        os.kill(eu.process.pid, signal.SIGCONT)
    eventually(lambda: admission_of(directory, eu.url) == PENDING, "eu heard again: pending")
    asyncio.run(admission_round(directory))
    assert admission_of(directory, eu.url) == ADMITTED


def test_a_node_serving_other_bytes_than_signed_is_refused_at_admission(
    federation: Federation, tmp_path: Path
) -> None:
    """A hostile node: registered and heartbeating with a valid key, in sync by its word,
    its p2 copied from eu but its zips other bytes. The self-test refuses it; no client
    is sent there."""
    event, _ = federation.release("metatag", "8.x-1.22")
    federation.publish(event)
    wait_until_served(federation, "drupal/metatag", "1.22.0", nodes=["eu"])
    eu = federation.nodes["eu"]

    port = localnet.free_port()
    base = f"http://127.0.0.1:{port}"

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"PK not the signed zip"
            if "/p2/" in self.path:
                with urllib.request.urlopen(eu.url + self.path, timeout=5) as answer:
                    body = answer.read().replace(eu.url.encode(), base.encode())
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        key = SigningKey.generate()
        registration = registration_of(key, "eu", base, ReplicationPolicy())
        eu_status = next(
            s
            for s in read_node_book(
                federation.stack.broker_url, federation.topics.status
            ).statuses.values()
            if s.base_url == eu.url
        )
        # It claims to have applied everything, and more.
        claim = replace(
            eu_status,
            node_id=key.public_key.keyid,
            base_url=base,
            sequence=0,
            partitions=tuple(
                replace(p, applied_offset=p.applied_offset + 1000) for p in eu_status.partitions
            ),
        )
        federation.producer.produce(
            federation.topics.status,
            registration_key(key.public_key.keyid),
            seal_registration(registration, key),
        )
        federation.producer.produce(
            federation.topics.status, status_key(key.public_key.keyid), seal_status(claim, key)
        )
        directory = start_directory(
            federation, "--region-map", "127.0.0.0/8=eu", "--self-test-package", "drupal/metatag"
        )

        def refused() -> dict[str, Any] | None:
            for node in get_json(f"{directory.url}/nodes.json")["nodes"]:
                if node["base_url"] == base and node["admission"] == "refused":
                    return node  # type: ignore[no-any-return]
            return None

        node = eventually(refused, "the hostile node refused at its self-test")
        assert "sha1" in node["reason"] and event.artifact.sha1 in node["reason"]
        path = f"/dist/drupal/metatag/1.22.0/{event.artifact.sha256}.zip"
        location = redirect_of(directory.url + path)[1]
        assert location is not None and not location.startswith(base)
    finally:
        server.shutdown()
        server.server_close()
