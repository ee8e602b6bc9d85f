"""Attacks on the trust chain, through the real stack: a stolen publisher key below the
threshold, a rotation that locks a stolen key out (and a rotation the thief forges), a
frozen stream (the root in force expires). Releases keep flowing around each attack."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from connectors.kafka_producers import Delivered, EventProducer
from schemas.events import ReleasePublished
from schemas.federation import NodeStatus
from schemas.signing import SigningKey
from services.cli.status import read_node_book
from services.publishing.trust_admin import DelegationSpec, build_root
from tests.faults.harness import WORKERS, FaultFederation, Load, Poller, read_p2
from tests.faults.test_delivery import rejections

#: eu-1, eu-2, us and ap heartbeat; the directory does not.
RUNNING_WORKERS = sum(len(names) for names in WORKERS.values())
KEY2 = SigningKey.generate()
KEY3 = SigningKey.generate()


def publish_root(
    federation: FaultFederation,
    version: int,
    keys: tuple[SigningKey, ...],
    threshold: int,
    *,
    signed_by: SigningKey | None = None,
    expires: datetime | None = None,
) -> None:
    root = build_root(
        version=version,
        root_keys=[federation.root_key.public_key],
        root_threshold=1,
        delegations=[
            DelegationSpec("drupal/*", "drupal.org", tuple(k.public_key for k in keys), threshold)
        ],
        expires=expires,
    )
    producer = EventProducer(federation.stack.broker_url)
    try:
        producer.produce(
            federation.topics.trust, b"trust-root", root.sign([signed_by or federation.root_key])
        )
    finally:
        producer.close()


def statuses(federation: FaultFederation) -> list[NodeStatus]:
    """The heartbeats of the last 20 s: one per running worker of the three regions
    (workers of a region share its public URL, so they are told apart by freshness)."""
    book = read_node_book(federation.stack.broker_url, federation.topics.status)
    now = datetime.now(UTC)
    return [s for s in book.statuses.values() if abs((now - s.heartbeat_at).total_seconds()) < 20]


def wait_for_heartbeats(
    federation: FaultFederation, check: Callable[[NodeStatus], bool], what: str
) -> list[NodeStatus]:
    deadline = time.monotonic() + 90
    found: list[NodeStatus] = []
    while time.monotonic() < deadline:
        found = statuses(federation)
        if len(found) == RUNNING_WORKERS and all(check(s) for s in found):
            return found
        time.sleep(1)
    pytest.fail(f"{what}: heartbeats {[(s.region, s.trust_root_version, s.state) for s in found]}")


def attack_release(
    federation: FaultFederation, project: str, version: str, keys: list[SigningKey]
) -> tuple[ReleasePublished, Delivered]:
    event = federation.release_of(project, version)
    return event, federation.produce(event, keys)


def assert_refused_everywhere(
    federation: FaultFederation, package: str, offset: int, reasons: set[str]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        found = [r for r in rejections(federation, package, 0) if r.offset == offset]
        if {r.region for r in found} == federation.verifiers() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {r.region for r in found} == federation.verifiers(), found
    assert {r.reason for r in found} <= reasons, [(r.reason, r.detail) for r in found]


def test_a_stolen_key_below_the_threshold_publishes_nothing(
    fault_federation: FaultFederation,
) -> None:
    federation = fault_federation
    publish_root(federation, 2, (federation.key, KEY2), 2)
    federation.keys = [federation.key, KEY2]
    wait_for_heartbeats(federation, lambda s: s.trust_root_version == 2, "root v2 in force")
    with Load(federation), Poller(federation):
        time.sleep(2)
        event, delivered = attack_release(federation, "alpha", "8.x-9.0", [federation.key])
        time.sleep(4)
    federation.wait_until_quiet()
    verdict = federation.history()
    assert verdict.clean, str(verdict)  # the thief's release would count as never acknowledged
    assert_refused_everywhere(federation, event.package, delivered.offset, {"threshold-not-met"})


def test_a_rotation_locks_a_stolen_key_out_and_a_rotation_the_thief_forges_is_refused(
    fault_federation: FaultFederation,
) -> None:
    federation = fault_federation
    publish_root(federation, 3, (KEY2, KEY3), 2)
    federation.keys = [KEY2, KEY3]
    wait_for_heartbeats(federation, lambda s: s.trust_root_version == 3, "root v3 in force")
    with Load(federation), Poller(federation):
        # The thief signs a root v4 giving drupal/* to its own key.
        publish_root(federation, 4, (federation.key,), 1, signed_by=federation.key)
        event, delivered = attack_release(federation, "beta", "8.x-9.0", [federation.key])
        time.sleep(4)
    federation.wait_until_quiet()
    assert federation.history().clean
    assert_refused_everywhere(
        federation, event.package, delivered.offset, {"undelegated-key", "threshold-not-met"}
    )
    assert all(s.trust_root_version == 3 for s in statuses(federation))


def test_a_frozen_stream_applies_nothing_new_says_why_and_resumes_on_a_new_root(
    fault_federation: FaultFederation,
) -> None:
    federation = fault_federation
    now = datetime.now(UTC)
    expires = now.replace(microsecond=now.microsecond // 1000 * 1000) + timedelta(seconds=8)
    # v4: the forged v4 was refused, so the genuine one is the next version (TUF: N+1).
    publish_root(federation, 4, (KEY2, KEY3), 2, expires=expires)
    wait_for_heartbeats(federation, lambda s: s.trust_root_version == 4, "root v4 in force")
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1)
    with Poller(federation):
        frozen = federation.publish_one("cedar")
        assert frozen is not None
        degraded = wait_for_heartbeats(
            federation, lambda s: s.state == "degraded", "every node says it is frozen"
        )
        assert all("expired" in s.detail and "v4" in s.detail for s in degraded), degraded
        for region in ("eu", "us"):
            url = federation.region_url(region)
            assert url is not None
            served = {e.version for e in read_p2(url, frozen.package)}
            assert frozen.version not in served, f"{region} applied under an expired root"
            assert served, f"{region} stopped serving what it had"
        publish_root(federation, 5, (KEY2, KEY3), 2)
        wait_for_heartbeats(
            federation, lambda s: s.trust_root_version == 5 and s.state != "degraded", "thawed"
        )
    federation.wait_until_quiet()
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    # Waiting is not rejecting: the release held back by the frozen root is not refused.
    assert not [r for r in rejections(federation, frozen.package, 0) if r.reason == "root-expired"]
