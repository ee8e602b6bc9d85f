"""The regional node, complete: replication modes, source fallback, parked fetches, yanks,
expunges and advisories through the real composer, scale-out, and a replay from offset 0."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_producers import Delivered
from connectors.kafka_reading import group_positions, iter_partition
from connectors.kafka_topics import topic_partitions
from connectors.object_store import ObjectStore
from infra import localnet
from infra.devtools.sample_projects import sample_zip
from schemas import layout
from schemas.events import (
    AdvisorySource,
    DownloadCounts,
    ReleaseExpunged,
    ReleaseYanked,
    SecurityAdvisory,
    utc_now,
)
from schemas.signing import seal
from services.publishing.publisher import build_release, next_sequence
from streams.node_settings import group_id
from tests.e2e.harness import (
    RECORD_DELIMITER,
    Federation,
    rejections_of,
    wait_until_served,
)

pytestmark = pytest.mark.e2e

#: Parked fetches are looked at every second here, so that recoveries show within a test.
NODE_OPTIONS = {
    "eu": ["--retry-parked-every", "1"],
    "us": ["--retry-parked-every", "1"],
}
FULL = ("eu", "us")


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.3)


def unfollowed(url: str) -> tuple[int, Message]:
    """Status and headers of a GET whose redirect is not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, exc.headers


def redirect_of(url: str) -> tuple[int, str | None]:
    """Status and Location of a GET that is not followed."""
    status, headers = unfollowed(url)
    return status, headers.get("Location")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return orjson.loads(response.read())


def artifacts_of(store: ObjectStore) -> set[str]:
    return {
        sha
        for key in store.list_keys(layout.ARTIFACT_PREFIX)
        if (sha := layout.artifact_sha256(key))
    }


def publish_at(federation: Federation, value: bytes, package: str) -> Delivered:
    return federation.producer.produce(federation.topics.releases, package.encode(), value)


def test_metadata_only_and_partial_nodes_serve_what_their_policy_says(
    federation: Federation, tmp_path: Path
) -> None:
    meta = federation.start_node("meta", options=["--mode", "metadata-only"])
    partial = federation.start_node("ent", options=["--include", "drupal/token"])
    token, token_zip = federation.release("token", "8.x-1.9")
    pathauto, pathauto_zip = federation.release("pathauto", "8.x-1.12", {"drupal/token": "*"})
    federation.publish(token)
    federation.publish(pathauto)
    wait_until_served(federation, "drupal/token", "1.9.0")
    wait_until_served(federation, "drupal/pathauto", "1.12.0", nodes=[*FULL, "meta"])

    # The enterprise's partial mirror serves its allow-list only, and holds only its zips.
    assert localnet.fetch_p2_versions(partial.url, "drupal/pathauto") == {}
    assert artifacts_of(federation.store("ent")) == {token.artifact.sha256}
    # A metadata-only node holds no zip at all; full mirrors hold both.
    assert artifacts_of(federation.store("meta")) == set()
    for region in FULL:
        assert {token.artifact.sha256, pathauto.artifact.sha256} <= artifacts_of(
            federation.store(region)
        )

    # The metadata-only node sends downloads to a region that announced a verified copy.
    full_urls = tuple(federation.nodes[r].url + "/dist/" for r in (*FULL, "ent"))
    dist = f"{meta.url}{layout.dist_path('drupal/token', '1.9.0', token.artifact.sha256)}"
    status, _ = eventually(
        lambda: (found := redirect_of(dist))[1] and found[1].startswith(full_urls) and found,
        "the metadata-only node redirects to another region's copy",
    )
    assert status == 302

    # Every region lists the other regions that hold copies as Composer dist mirrors.
    def mirrors_of_eu() -> set[str]:
        root = get_json(federation.nodes["eu"].url + "/packages.json")
        return {m["dist-url"].split("/mirror/")[0] for m in root.get("mirrors", [])}

    eventually(
        lambda: {federation.nodes["us"].url, partial.url} <= mirrors_of_eu(),
        "eu lists us and the partial mirror as dist mirrors",
    )

    # The real composer installs through the metadata-only node, byte for byte.
    site = tmp_path / "site-meta"
    result = localnet.composer_require(site, meta.url, ["drupal/pathauto"])
    assert result.returncode == 0, result.stderr
    locked = {p["name"]: p for p in orjson.loads((site / "composer.lock").read_bytes())["packages"]}
    assert locked["drupal/token"]["dist"]["url"].startswith(meta.url + "/dist/")
    for project, zip_path in (("token", token_zip), ("pathauto", pathauto_zip)):
        with zipfile.ZipFile(zip_path) as archive:
            expected = archive.read(f"{project}/{project}.module")
        assert (site / "vendor" / "drupal" / project / f"{project}.module").read_bytes() == expected

    # Composer's install notifications come back as the region's download counts.
    def counted_by_meta() -> dict[str, int]:
        raw = federation.kcat(
            "-C",
            "-t",
            federation.topics.downloads,
            "-o",
            "beginning",
            "-e",
            "-f",
            f"%s{RECORD_DELIMITER}",
        )
        found: dict[str, int] = {}
        for part in raw.split(RECORD_DELIMITER.encode())[:-1]:
            counts = DownloadCounts.from_bytes(part)
            if counts.region == "meta":
                for count in counts.counts:
                    found[count.package] = found.get(count.package, 0) + count.downloads
        return found

    counted = eventually(
        lambda: (found := counted_by_meta()).get("drupal/pathauto") and found,
        "meta produced the install notifications as download counts",
    )
    assert counted == {"drupal/pathauto": 1, "drupal/token": 1}

    for name in ("meta", "ent"):
        federation.nodes.pop(name).stop()


def test_a_zip_gone_from_the_origin_is_fetched_from_a_replica(federation: Federation) -> None:
    event, zip_path = federation.release("ctools", "8.x-3.14")
    federation.publish(event)
    wait_until_served(federation, "drupal/ctools", "3.14.0", nodes=FULL)
    zip_path.unlink()  # the canonical origin loses the file

    late = federation.start_node("late", options=["--retry-parked-every", "1"])
    try:
        wait_until_served(federation, "drupal/ctools", "3.14.0", nodes=["late"])
        store = federation.store("late")
        key = layout.artifact_key(event.artifact.sha256)
        eventually(lambda: store.stat(key), "the late region holds the zip")
        body = store.get(key)
        assert body is not None
        assert hashlib.sha256(body.data).hexdigest() == event.artifact.sha256
        assert "fetched from replica" in late.log_tail(400)
    finally:
        federation.nodes.pop("late").stop()


def test_an_unreachable_zip_is_parked_without_holding_up_its_partition(
    federation: Federation,
) -> None:
    gone, gone_zip = federation.release("metatag", "8.x-1.22")
    aside = gone_zip.with_suffix(".aside")
    gone_zip.rename(aside)  # nowhere to fetch it from: not at the origin, no replica
    at = publish_at(federation, seal(gone.to_bytes(), [federation.key]), gone.package)
    # A release of another package in the same partition, behind the unreachable one.
    behind = None
    # Keys are spread by hash: one of 40 lands in any given partition but for (3/4)^40.
    for project in (f"neighbour{n}" for n in range(40)):
        candidate, _ = federation.release(project, "8.x-2.1")
        where = publish_at(
            federation, seal(candidate.to_bytes(), [federation.key]), candidate.package
        )
        if where.partition == at.partition:
            behind = candidate
            break
    assert behind is not None, "no package landed in the partition of metatag"

    wait_until_served(federation, behind.package, "2.1.0", nodes=FULL)
    wait_until_served(federation, "drupal/metatag", "1.22.0", nodes=FULL)
    for region in FULL:
        store = federation.store(region)
        assert store.stat(layout.pending_key(gone.artifact.sha256)) is not None
        assert behind.artifact.sha256 in artifacts_of(store)
    # Clients asking meanwhile are sent to the origin (the signed sha1 protects them).
    status, location = redirect_of(
        federation.nodes["eu"].url + layout.dist_path(gone.package, "1.22.0", gone.artifact.sha256)
    )
    assert (status, location) == (302, gone.artifact.origin_url)

    aside.rename(gone_zip)  # the origin has it again
    for region in FULL:
        store = federation.store(region)
        eventually(
            lambda store=store: (
                gone.artifact.sha256 in artifacts_of(store)
                and store.stat(layout.pending_key(gone.artifact.sha256)) is None
            ),
            f"{region} fetched the parked zip and cleared it",
        )


def test_advisory_yank_and_expunge_reach_the_real_composer(
    federation: Federation, tmp_path: Path
) -> None:
    old, _ = federation.release("search_api", "8.x-1.30")
    new, _ = federation.release("search_api", "8.x-1.31")
    federation.publish(old)
    federation.publish(new)
    wait_until_served(federation, "drupal/search_api", "1.31.0", nodes=FULL)
    eu = federation.nodes["eu"].url
    site = tmp_path / "site"
    result = localnet.composer_require(site, eu, ["drupal/search_api:1.30.0"])
    assert result.returncode == 0, result.stderr

    advisory = SecurityAdvisory(
        package="drupal/search_api",
        sequence=next_sequence(),
        advisory_id="SA-CONTRIB-2026-077",
        affected_versions=">=1.0.0,<1.31.0",
        title="Search API - Critical - Access bypass",
        link="https://www.drupal.org/sa-contrib-2026-077",
        reported_at="2026-11-20 10:00:00",
        sources=(AdvisorySource(name="drupal.org", remote_id="SA-CONTRIB-2026-077"),),
        published_at=utc_now(),
        cve="CVE-2026-40077",
        severity="critical",
    )
    federation.publish_event(advisory)
    eventually(
        lambda: get_json(f"{eu}/api/security-advisories/?packages[]=drupal/search_api")[
            "advisories"
        ].get("drupal/search_api"),
        "the advisory is in eu's security-advisories API",
    )
    audit = localnet.composer(site, "audit", "--format=json")
    assert audit.returncode != 0, audit.stdout  # composer audit fails on a vulnerable lock
    report = orjson.loads(audit.stdout)
    [found] = report["advisories"]["drupal/search_api"]
    assert found["advisoryId"] == "SA-CONTRIB-2026-077"
    assert found["cve"] == "CVE-2026-40077"

    yank = ReleaseYanked(
        package="drupal/search_api",
        version="1.31.0",
        sequence=next_sequence(),
        reason="breaks search indexes",
        yanked_at=utc_now(),
    )
    federation.publish_event(yank)
    for region in FULL:
        node = federation.nodes[region].url
        eventually(
            lambda node=node: "1.31.0" not in localnet.fetch_p2_versions(node, "drupal/search_api"),
            f"{region} stops listing the yanked 1.31.0",
        )
    # A yanked version's zip stays for the lock files that name it.
    assert new.artifact.sha256 in artifacts_of(federation.store("eu"))

    expunge = ReleaseExpunged(
        package="drupal/search_api",
        version="1.30.0",
        sha256=old.artifact.sha256,
        sequence=next_sequence(),
        reason="SA-CONTRIB-2026-077: must not be installed any more",
        expunged_at=utc_now(),
    )
    federation.publish_event(expunge)
    for region in FULL:
        store = federation.store(region)
        eventually(
            lambda store=store: old.artifact.sha256 not in artifacts_of(store),
            f"{region} deletes the expunged zip",
        )
        node = federation.nodes[region].url
        assert localnet.fetch_p2_versions(node, "drupal/search_api") == {}
        dist = node + layout.dist_path("drupal/search_api", "1.30.0", old.artifact.sha256)
        assert redirect_of(dist)[0] == 410


def test_two_workers_share_a_region_and_a_killed_one_loses_nothing(
    federation: Federation,
) -> None:
    first = federation.start_node("pair", name="pair-a")
    second = federation.start_node("pair", name="pair-b")
    # Both are in the group once each was given partitions; that they split them shows
    # below: each applies some of the releases.
    eventually(
        lambda: all("assigned partitions" in worker.log_tail(2000) for worker in (first, second)),
        "both workers joined the group",
    )
    expected: dict[str, set[str]] = {}
    projects = [f"scale{n}" for n in range(10)]
    for project in projects:
        event, _ = federation.release(project, "8.x-1.0")
        federation.publish(event)
        expected[event.package] = {"1.0.0"}
    for package in expected:
        wait_until_served(federation, package, "1.0.0", nodes=["pair-a"])
    assert "ReleasePublished" in first.log_tail(2000)
    assert "ReleasePublished" in second.log_tail(2000)

    first.kill()  # kill -9: no goodbye to the group, no last commit
    federation.nodes.pop("pair-a")
    for project in projects:
        for version in ("8.x-1.1", "8.x-1.2"):
            event, _ = federation.release(project, version)
            federation.publish(event)
            expected[event.package].add(event.version)
    for package in expected:
        wait_until_served(federation, package, "1.2.0", nodes=["pair-b"], timeout=90)
    for package, versions in expected.items():
        document = get_json(f"{second.url}/p2/{package}.json")
        served = [entry["version"] for entry in document["packages"][package]]
        assert sorted(served) == sorted(versions), f"{package}: served {served}"
    # A redelivery after the handover is recognised as such: nothing was refused.
    for package in expected:
        assert rejections_of(federation, package, 0, timeout=0) == []
    federation.nodes.pop("pair-b").stop()


def bucket_snapshot(store: ObjectStore) -> dict[str, tuple[int, str, Any]]:
    """Every object: size, etag and modification time (a rewrite with equal bytes shows)."""
    return {
        key: (stored.size, stored.etag, stored.last_modified)
        for key, stored in store.list_objects("")
    }


def assert_unchanged(before: dict[str, Any], after: dict[str, Any], what: str = "bucket") -> None:
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()}
    changed = {k: v for k, v in changed.items() if v[0] != v[1]}
    assert not changed, f"{what}: written again or changed: {changed}"


def forget_group_offsets(federation: Federation, group: str) -> None:
    """Delete the (stopped) region's consumer group, so that its workers start again from
    offset 0 (``auto.offset.reset=earliest``). On Tansu this is the way: it refuses an
    offset reset from outside the group (UNKNOWN_MEMBER_ID) once Faust workers used it."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers(federation.stack.broker_url)})
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.delete_consumer_groups([group])[group].result(30)
            return
        except KafkaException as exc:
            # The stopped worker's membership may outlive it until its session times out.
            assert time.monotonic() < deadline, f"group {group} not deleted: {exc}"
            time.sleep(1)


def test_a_replay_from_offset_zero_and_a_rebuild_change_nothing(federation: Federation) -> None:
    for version in ("8.x-2.0", "8.x-2.1", "8.x-2.x-dev"):
        event, _ = federation.release("replayed", version)
        federation.publish(event)
    federation.publish_event(
        ReleaseYanked(
            package="drupal/replayed",
            version="2.0.0",
            sequence=next_sequence(),
            reason="superseded",
            yanked_at=utc_now(),
        )
    )
    wait_until_served(federation, "drupal/replayed", "2.1.0", nodes=FULL)
    eu = federation.nodes["eu"]
    eventually(
        lambda: "2.0.0" not in localnet.fetch_p2_versions(eu.url, "drupal/replayed"),
        "eu applied the yank",
    )
    topic = federation.topics.releases
    group = group_id("eu", federation.topics)
    store = federation.store("eu")
    eventually(lambda: not store.list_keys(layout.PENDING_PREFIX), "eu has nothing parked")

    def committed() -> dict[int, int | None]:
        return {
            p.partition: p.committed
            for p in group_positions(federation.stack.broker_url, group, topic)
        }

    settled = committed()
    time.sleep(3)
    while (now := committed()) != settled:
        settled = now
        time.sleep(3)
    # What eu's metadata is: its view topic, its worker's docroot (bytes, Last-Modified,
    # inode: a rewrite of equal bytes shows), and its bucket (zips, trust, region.json).
    view_topic = federation.topics.view("eu")

    def snapshot() -> tuple[Any, ...]:
        return (
            view_snapshot(federation, view_topic),
            docroot_snapshot(federation.work_dir / "node-eu"),
            bucket_snapshot(store),
        )

    before = snapshot()
    assert any(name.startswith("p2/drupal/replayed") for name in before[1])
    assert before[0], "eu wrote no view record"

    port = urlsplit(eu.url).port
    eu.stop()
    forget_group_offsets(federation, group)
    after_reset = committed()
    assert all(offset in (0, None) for offset in after_reset.values()), after_reset

    federation.start_node("eu", port=port)
    eventually(lambda: committed() == settled, "eu re-applies the whole topic", timeout=120)
    time.sleep(2)  # a last batch's writes, if any, would land now

    for what, old, new in zip(("view topic", "docroot", "bucket"), before, snapshot(), strict=True):
        assert_unchanged(old, new, what)

    result = localnet.run_fairstream(
        [
            "node",
            "rebuild",
            "--region",
            "eu",
            "--root",
            str(federation.root_file),
            "--public-url",
            federation.nodes["eu"].url,
            "--bucket",
            federation.bucket("eu"),
            "--broker",
            federation.stack.broker_url,
            "--store",
            federation.stack.store_url,
            "--topic-prefix",
            topic.removesuffix("fair.releases"),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "0 states and 0 p2 documents written" in result.stdout, result.stdout
    time.sleep(2)  # eu's follower would hold (and write out) a record the rebuild wrote
    for what, old, new in zip(("view topic", "docroot", "bucket"), before, snapshot(), strict=True):
        assert_unchanged(old, new, what)


def view_snapshot(federation: Federation, topic: str) -> dict[str, str]:
    """Every view record of the topic (read-barrier markers aside): (partition, offset) ->
    sha256 of its bytes. A replay that writes a record again, even an equal one, shows."""
    found = {}
    for partition in topic_partitions(federation.stack.broker_url, topic):
        for offset, value in iter_partition(federation.stack.broker_url, topic, partition):
            if value:
                found[f"{partition}:{offset}"] = hashlib.sha256(value).hexdigest()
    return found


def docroot_snapshot(data_dir: Path) -> dict[str, tuple[str, int, int]]:
    """Every file of the node's docroot: sha256, mtime (its Last-Modified) and inode (a
    document is replaced by renaming a new file over it)."""
    (docroot,) = data_dir.glob("nodes/*/view-*/docroot")
    return {
        str(path.relative_to(docroot)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            int(path.stat().st_mtime),
            path.stat().st_ino,
        )
        for path in sorted(docroot.rglob("*.json"))
    }


def test_a_dev_release_takes_each_new_build_and_composer_update_installs_it(
    federation: Federation, tmp_path: Path
) -> None:
    """Drupal.org rebuilds a -dev zip on every commit: each build is a new signed event that
    names the build it replaces; a tagged version stays immutable; an old build never
    comes back."""
    first, zip_path = federation.release("devbuild", "8.x-1.x-dev")
    federation.publish(first)
    wait_until_served(federation, "drupal/devbuild", "1.x-dev", nodes=FULL)
    eu = federation.nodes["eu"].url
    site = tmp_path / "site"
    result = localnet.composer_require(site, eu, ["drupal/devbuild:1.x-dev"])
    assert result.returncode == 0, result.stderr
    module = site / "vendor" / "drupal" / "devbuild" / "devbuild.module"
    assert "// build" not in module.read_text()

    # The next commit: the origin's zip is rebuilt in place, as ftp.drupal.org does.
    sample_zip(zip_path.parent, "devbuild", "8.x-1.x-dev", build="2")
    second = build_release(
        package="drupal/devbuild",
        drupal_version="8.x-1.x-dev",
        zip_path=zip_path,
        origin_url=first.artifact.origin_url,
        rebuild_of=first.artifact.sha256,
    )
    assert second.artifact.sha256 != first.artifact.sha256
    federation.publish(second)
    for region in FULL:
        node = federation.nodes[region].url
        eventually(
            lambda node=node: (
                localnet.fetch_p2_versions(node, "drupal/devbuild")
                .get("1.x-dev", {})
                .get("dist", {})
                .get("shasum")
                == second.artifact.sha1
            ),
            f"{region} serves the second build of 1.x-dev",
        )
    update = localnet.composer(site, "update", "drupal/devbuild")
    assert update.returncode == 0, update.stderr
    assert "// build 2" in module.read_text()
    lock = orjson.loads((site / "composer.lock").read_bytes())
    [locked] = [p for p in lock["packages"] if p["name"] == "drupal/devbuild"]
    assert locked["dist"]["shasum"] == second.artifact.sha1

    # An old build cannot come back: its signed event again is a replay, re-signed with an
    # older sequence a rollback, a build naming another predecessor a version conflict.
    federation.publish_event(first)
    stale = dataclasses.replace(
        first, sequence=first.sequence + 1, rebuild_of=second.artifact.sha256
    )
    federation.publish_event(stale)
    forked = dataclasses.replace(second, sequence=next_sequence(), rebuild_of=first.artifact.sha256)
    federation.publish_event(
        dataclasses.replace(forked, artifact=first.artifact, composer=first.composer)
    )
    # A tagged version never takes other bytes, even when the event says "rebuild".
    tagged, tagged_zip = federation.release("devbuild", "8.x-1.0")
    federation.publish(tagged)
    wait_until_served(federation, "drupal/devbuild", "1.0.0", nodes=FULL)
    sample_zip(tagged_zip.parent, "devbuild", "8.x-1.0", build="2")
    retagged = build_release(
        package="drupal/devbuild",
        drupal_version="8.x-1.0",
        zip_path=tagged_zip,
        origin_url=tagged.artifact.origin_url,
        rebuild_of=tagged.artifact.sha256,
    )
    federation.publish(retagged)
    found = rejections_of(federation, "drupal/devbuild", 4 * len(FULL), timeout=60)
    reasons = {(r.region, r.reason) for r in found}
    for region in FULL:
        assert {(region, "replay"), (region, "rollback")} <= reasons, found
        assert sum(1 for r in found if (r.region, r.reason) == (region, "version-conflict")) >= 2
    for region in FULL:
        served = localnet.fetch_p2_versions(federation.nodes[region].url, "drupal/devbuild")
        assert served["1.x-dev"]["dist"]["shasum"] == second.artifact.sha1
        assert served["1.0.0"]["dist"]["shasum"] == tagged.artifact.sha1
