"""A disconnected network fed by signed bundles (issue 19): the connected federation exports
its log (releases, a yank, an advisory) and zips, then a second bundle after a trust-root
rotation; a second, separate embedded stack with no link to the first (the origin is
stopped) imports them in order, its node verifies every record against its pinned root as
online (following the rotation, refusing the revoked key), and a real composer installs
the same bytes from it."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from connectors.kafka_reading import read_partition
from infra import devstack, localnet
from schemas.events import (
    AdvisorySource,
    ReleaseRejected,
    ReleaseYanked,
    SecurityAdvisory,
    utc_now,
)
from schemas.signing import SigningKey
from services.publishing.publisher import next_sequence
from services.publishing.trust_admin import write_key_pair
from tests.e2e.harness import Federation, wait_until_served
from tests.e2e.test_regional_node import artifacts_of, eventually, get_json

pytestmark = pytest.mark.e2e


@pytest.fixture
def island(tmp_path: Path) -> Iterator[devstack.Stack]:
    """A second embedded stack: the disconnected network's own broker and store."""
    data_dir = tmp_path / "island-stack"
    started = devstack.up(data_dir)
    try:
        yield started
    finally:
        devstack.down(data_dir)


def fairstream(*args: str) -> dict[str, object]:
    result = localnet.run_fairstream([*args, "--json"])
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = orjson.loads(result.stdout)
    return summary


def export(federation: Federation, key_file: Path, out: Path, since: Path | None = None) -> Path:
    """``fairstream bundle export`` of region eu, after ``since`` if given."""
    fairstream(
        "bundle", "export", "--region", "eu", "--bucket", federation.bucket("eu"),
        "--root", str(federation.root_file), "--key", str(key_file), "--out", str(out),
        *(["--since", str(since)] if since else []),
        "--broker", federation.stack.broker_url, "--store", federation.stack.store_url,
        "--topic-prefix", federation.topics.releases.removesuffix("fair.releases"),
    )  # fmt: skip
    return out


def carry(bundle: Path, island: devstack.Stack, key_file: Path) -> dict[str, object]:
    """``fairstream bundle import`` on the island: region island, the exporter's key pinned."""
    return fairstream(
        "bundle", "import", str(bundle), "--region", "island",
        "--exporter", str(key_file.with_suffix(".pub")),
        "--broker", island.broker_url, "--store", island.store_url,
    )  # fmt: skip


def rotate(federation: Federation, tmp_path: Path) -> SigningKey:
    """Root v2 delegates drupal/* to a new key only, published on the trust topic."""
    new_key = SigningKey.generate()
    write_key_pair(federation.root_key, tmp_path / "root.key")
    new_public = write_key_pair(new_key, tmp_path / "drupal-2026.key")
    localnet.run_fairstream(
        [
            "trust", "rotate", str(federation.root_file), str(tmp_path / "root-v2.avro"),
            "--root-key", str(tmp_path / "root.pub"),
            "--delegate", f"drupal/*=drupal.org:{new_public}",
            "--sign", str(tmp_path / "root.key"),
        ]
    ).check_returncode()  # fmt: skip
    localnet.run_fairstream(
        [
            "trust", "publish", str(tmp_path / "root-v2.avro"),
            "--broker", federation.stack.broker_url,
            "--topic-prefix", federation.topics.releases.removesuffix("fair.releases"),
        ]
    ).check_returncode()  # fmt: skip
    return new_key


def test_a_disconnected_network_installs_the_same_bytes_from_a_bundle(
    federation: Federation, island: devstack.Stack, tmp_path: Path
) -> None:
    token, _ = federation.release("token", "8.x-1.9")
    withdrawn, _ = federation.release("token", "8.x-1.10")
    federation.publish(token)
    federation.publish(withdrawn)
    federation.publish_event(
        ReleaseYanked("drupal/token", "1.10.0", next_sequence(), "broken", utc_now())
    )
    federation.publish_event(
        SecurityAdvisory(
            package="drupal/token",
            sequence=next_sequence(),
            advisory_id="SA-CONTRIB-2026-101",
            affected_versions="<1.0.0",
            title="Token - Moderately critical - Information disclosure",
            link="https://www.drupal.org/sa-contrib-2026-101",
            reported_at="2026-12-01 10:00:00",
            sources=(AdvisorySource(name="drupal.org", remote_id="SA-CONTRIB-2026-101"),),
            published_at=utc_now(),
        )
    )
    wait_until_served(federation, "drupal/token", "1.9.0", nodes=["eu"])
    eventually(
        lambda: token.artifact.sha256 in artifacts_of(federation.store("eu")),
        "eu holds the zip",
    )
    key_file = tmp_path / "upstream.key"
    write_key_pair(SigningKey.generate(), key_file)
    bundle = export(federation, key_file, tmp_path / "bundle-0001.tar")
    with tarfile.open(bundle) as carried:
        assert f"zips/{token.artifact.sha256}.zip" in carried.getnames()

    # The publisher's key is retired (root v2) and a release follows under the new key: the
    # second bundle carries both. A release under the revoked key, once the nodes follow v2
    # (as online: a node refuses what it verifies after it read the rotation), the third.
    new_key = rotate(federation, tmp_path)
    eventually(
        lambda: localnet.node_health(federation.nodes["eu"].url)["trust_root"]["version"] == 2,
        "eu follows root v2",
    )
    current, current_zip = federation.release("token", "8.x-1.11")
    federation.publish(current, [new_key])
    wait_until_served(federation, "drupal/token", "1.11.0", nodes=["eu"])
    eventually(
        lambda: current.artifact.sha256 in artifacts_of(federation.store("eu")),
        "eu holds the new zip",
    )
    second = export(federation, key_file, tmp_path / "bundle-0002.tar", since=bundle)
    revoked, _ = federation.release("token", "8.x-1.10-rc1")
    federation.publish(revoked)
    third = export(federation, key_file, tmp_path / "bundle-0003.tar", since=second)

    # Nothing of the connected network is reachable from here on: not even its origin.
    federation.origin.stop()
    imported = carry(bundle, island, key_file)
    assert imported["imported"] is True and imported["zips"] >= 1  # type: ignore[operator]
    node = localnet.start_node(
        "island",
        broker_url=island.broker_url,
        store_url=island.store_url,
        root=federation.root_file,
        data_dir=tmp_path / "island-node",
    )
    try:
        eventually(
            lambda: localnet.fetch_p2_versions(node.url, "drupal/token").keys() == {"1.9.0"},
            "the island serves token 1.9.0, and not the yanked 1.10.0",
            timeout=90,
        )
        advisories = get_json(f"{node.url}/api/security-advisories/?packages[]=drupal/token")
        [advisory] = advisories["advisories"]["drupal/token"]
        assert advisory["advisoryId"] == "SA-CONTRIB-2026-101"

        # The second bundle: the island follows the rotation; the third: it refuses the
        # revoked key, and records why, as online.
        assert carry(second, island, key_file)["imported"] is True
        eventually(
            lambda: (
                localnet.fetch_p2_versions(node.url, "drupal/token").keys() == {"1.9.0", "1.11.0"}
            ),
            "the island serves 1.11.0, signed under root v2",
            timeout=90,
        )
        assert localnet.node_health(node.url)["trust_root"]["version"] == 2
        assert carry(third, island, key_file)["imported"] is True
        refused = eventually(
            lambda: [
                ReleaseRejected.from_bytes(value)
                for _, value in read_partition(island.broker_url, "fair.rejected")
            ],
            "the island records the revoked key's release as refused",
        )
        assert [(r.key, r.reason) for r in refused] == [("drupal/token", "undelegated-key")]
        assert localnet.fetch_p2_versions(node.url, "drupal/token").keys() == {"1.9.0", "1.11.0"}

        site = tmp_path / "site"
        result = localnet.composer_require(site, node.url, ["drupal/token:^1.9"])
        assert result.returncode == 0, result.stderr
    finally:
        node.stop()

    installed = next(p for p in site.rglob("token.info.yml")).parent
    with zipfile.ZipFile(current_zip) as original:
        for name in original.namelist():
            if name.endswith("/"):
                continue
            relative = name.split("/", 1)[1]
            assert (installed / relative).read_bytes() == original.read(name), name
