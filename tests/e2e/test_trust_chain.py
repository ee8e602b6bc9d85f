"""The trust chain wired into running nodes: rotation, revocation, replay, restart."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra import localnet
from schemas.signing import SigningKey, seal
from services.publishing.trust_admin import DelegationSpec, build_root, write_key_pair
from tests.e2e.harness import REGIONS, Federation, rejections_of, wait_until_served

pytestmark = pytest.mark.e2e


def fairstream(*args: str) -> str:
    """Run the fairstream CLI as an operator would; returns its output."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_rotation_revokes_a_key_and_the_nodes_follow_it_across_a_restart(
    federation: Federation, tmp_path: Path
) -> None:
    first, _ = federation.release("token", "8.x-1.9")
    federation.publish(first)
    wait_until_served(federation, "drupal/token", "1.9.0")

    # The publisher's key is retired: root v2 delegates drupal/* to a new key only.
    new_key = SigningKey.generate()
    write_key_pair(federation.root_key, tmp_path / "root.key")
    new_public = write_key_pair(new_key, tmp_path / "drupal-2026.key")
    fairstream(
        "trust",
        "rotate",
        str(federation.root_file),
        str(tmp_path / "root-v2.avro"),
        "--root-key",
        str(tmp_path / "root.pub"),
        "--delegate",
        f"drupal/*=drupal.org:{new_public}",
        "--sign",
        str(tmp_path / "root.key"),
    )
    topic_prefix = federation.topics.releases.removesuffix("fair.releases")
    fairstream(
        "trust",
        "publish",
        str(tmp_path / "root-v2.avro"),
        "--broker",
        federation.stack.broker_url,
        "--topic-prefix",
        topic_prefix,
    )

    # Nodes read fair.trust every few seconds; revocation holds from the moment they have.
    wait_until(
        lambda: all(
            localnet.node_health(n.url)["trust_root"]["version"] == 2
            for n in federation.nodes.values()
        ),
        "every node follows root v2",
    )

    # Signed by the revoked key: refused everywhere.
    revoked, _ = federation.release("token", "8.x-1.10")
    federation.publish(revoked)
    # Signed by the new key: served.
    current, _ = federation.release("token", "8.x-1.11")
    federation.publish(current, [new_key])
    wait_until_served(federation, "drupal/token", "1.11.0")

    refused = rejections_of(federation, "drupal/token", len(REGIONS))
    assert sorted(r.region for r in refused) == sorted(REGIONS)
    assert {r.reason for r in refused} == {"undelegated-key"}
    for region, node in federation.nodes.items():
        served = localnet.fetch_p2_versions(node.url, "drupal/token")
        assert set(served) == {"1.9.0", "1.11.0"}, f"{region} serves {sorted(served)}"

    # The same signed event produced again, by anyone: a replay, refused.
    replayed = tmp_path / "replayed.avro"
    replayed.write_bytes(seal(current.to_bytes(), [new_key]))
    # A fresh signature over the same payload: same payload digest, new position.
    federation.kcat("-P", "-t", federation.topics.releases, "-k", "drupal/token", str(replayed))
    refused = rejections_of(federation, "drupal/token", 2 * len(REGIONS))
    assert sorted(r.reason for r in refused).count("replay") == len(REGIONS)

    # A restarted node keeps its trust root (v2, from its bucket) and its sequences.
    federation.nodes["eu"].stop()
    restarted = federation.start_node("eu")
    later, _ = federation.release("token", "8.x-1.12")
    federation.publish(later, [new_key])
    wait_until_served(federation, "drupal/token", "1.12.0")
    served = localnet.fetch_p2_versions(restarted.url, "drupal/token")
    assert set(served) == {"1.9.0", "1.11.0", "1.12.0"}
    assert localnet.node_health(restarted.url)["trust_root"]["version"] == 2
    # Redelivered records after the restart are recognised, not refused again.
    assert len(rejections_of(federation, "drupal/token", 2 * len(REGIONS))) == 2 * len(REGIONS)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.3)


def test_a_forged_root_on_the_trust_topic_is_recorded_by_every_region(
    federation: Federation, tmp_path: Path
) -> None:
    attacker = SigningKey.generate()
    forged_root = build_root(
        version=federation_root_version(federation) + 1,
        root_keys=[attacker.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "attacker", (attacker.public_key,), 1)],
    )
    forged = tmp_path / "forged-root.avro"
    forged.write_bytes(forged_root.sign([attacker]))
    # One node reads it while running, the other when it starts.
    federation.nodes["us"].stop()
    federation.kcat("-P", "-t", federation.topics.trust, "-k", "trust-root", str(forged))
    federation.start_node("us")

    refused = rejections_of(federation, "trust-root", len(REGIONS), timeout=45.0)

    assert sorted(r.region for r in refused) == sorted(REGIONS)
    assert {r.reason for r in refused} == {"bad-root-rotation"}
    assert {r.topic for r in refused} == {federation.topics.trust}
    assert all(r.record == forged.read_bytes() for r in refused)
    for node in federation.nodes.values():
        assert localnet.node_health(node.url)["trust_root"]["version"] < forged_root.version


def federation_root_version(federation: Federation) -> int:
    versions = {
        localnet.node_health(n.url)["trust_root"]["version"] for n in federation.nodes.values()
    }
    assert len(versions) == 1
    return int(versions.pop())
