"""Duplicate delivery and poison messages, produced with kcat (not our producer), under load."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

from connectors.kafka import bootstrap_servers
from infra import localnet
from schemas.events import ReleaseRejected
from schemas.signing import seal
from tests.faults.harness import (
    FaultFederation,
    Load,
    Poller,
    committed_offsets,
    read_p2,
)

DELIMITER = "\n--fault-record--\n"


def kcat(federation: FaultFederation, *args: str) -> bytes:
    result = subprocess.run(
        ["kcat", "-b", bootstrap_servers(federation.stack.broker_url), *args],
        capture_output=True,
        timeout=60,
        check=False,
        env=localnet.kcat_environment(federation.stack.data_dir),
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def kcat_produce(federation: FaultFederation, key: str, value: bytes, tmp_path: Path) -> None:
    """One record with kcat: the file is sent whole as the message value."""
    path = tmp_path / f"record-{time.monotonic_ns()}"
    path.write_bytes(value)
    kcat(federation, "-P", "-t", federation.topics.releases, "-k", key, str(path))


def rejections(federation: FaultFederation, key: str, count: int) -> list[ReleaseRejected]:
    deadline = time.monotonic() + 60
    while True:
        raw = kcat(
            federation, "-C", "-t", federation.topics.rejected, "-o", "beginning", "-e",
            "-f", f"%s{DELIMITER}",
        )  # fmt: skip
        parts = raw.split(DELIMITER.encode())[:-1]
        found = [r for r in map(ReleaseRejected.from_bytes, parts) if r.key == key]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_region_replayed_from_offset_zero_applies_everything_again_and_doubles_nothing(
    fault_federation: FaultFederation,
) -> None:
    federation = fault_federation
    with Load(federation), Poller(federation):
        time.sleep(4)
        federation.replay("eu")
        time.sleep(4)
    federation.wait_until_quiet(timeout=180)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    # Applied again from 0 and committed to the end: every offset was delivered twice.
    assert sum(committed_offsets(federation, "eu").values()) >= len(federation.acknowledged)


def test_the_same_event_produced_twice_by_a_fresh_producer_is_served_once(
    fault_federation: FaultFederation, tmp_path: Path
) -> None:
    federation = fault_federation
    event = federation.release_of("echo", "8.x-2.0")
    delivered = federation.produce(event, [federation.key])
    raw = kcat(
        federation, "-C", "-t", federation.topics.releases, "-p", str(delivered.partition),
        "-o", str(delivered.offset), "-c", "1", "-f", "%s",
    )  # fmt: skip
    assert raw.startswith(b"\xc3\x01")
    with Poller(federation):
        kcat_produce(federation, "drupal/echo", raw, tmp_path)
        kcat_produce(federation, "drupal/echo", raw, tmp_path)
        time.sleep(3)
    deadline = time.monotonic() + 60
    for region in ("eu", "us"):
        url = federation.region_url(region)
        assert url is not None
        while time.monotonic() < deadline and not read_p2(url, "drupal/echo"):
            time.sleep(0.3)
        entries = read_p2(url, "drupal/echo")
        assert [e.version for e in entries] == [event.version], (region, entries)
        assert entries[0].sha1 == event.artifact.sha1
    # The copies sit at other positions of the log: recorded as replays, never applied.
    found = rejections(federation, "drupal/echo", 4)
    assert {r.reason for r in found} == {"replay"}, [(r.reason, r.detail) for r in found]
    for region in ("eu", "us"):
        copies = {r.offset for r in found if r.region == region}
        assert len(copies) == 2 and delivered.offset not in copies, (region, copies)
    assert federation.history().clean


def test_poison_messages_from_kcat_are_recorded_with_their_reason_and_block_nothing(
    fault_federation: FaultFederation, tmp_path: Path
) -> None:
    federation = fault_federation
    huge = federation.release_of("foxtrot", "8.x-1.0")
    huge = dataclasses.replace(huge, artifact=dataclasses.replace(huge.artifact, size=2 << 30))
    ghost = federation.release_of("ghost", "8.x-1.0", zip_dir=tmp_path)  # never on the origin
    with Load(federation), Poller(federation):
        time.sleep(2)
        kcat_produce(federation, "poison/garbage", os.urandom(300), tmp_path)
        kcat_produce(
            federation, "poison/fingerprint", b"\xc3\x01" + os.urandom(8) + b"\x00" * 40, tmp_path
        )
        kcat_produce(
            federation, "drupal/foxtrot", seal(huge.to_bytes(), [federation.key]), tmp_path
        )
        kcat_produce(federation, "drupal/ghost", seal(ghost.to_bytes(), [federation.key]), tmp_path)
        time.sleep(6)
    federation.wait_until_quiet(timeout=180)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    expected = {
        "poison/garbage": "malformed",
        "poison/fingerprint": "unknown-schema",
        "drupal/foxtrot": "too-large",
    }
    for key, reason in expected.items():
        # recorded once by each region (eu, us, ap: ap does not even serve foxtrot,
        # verification comes before the policy) and by the directory, which verifies too
        found = rejections(federation, key, len(federation.verifiers()))
        assert {r.region for r in found} == federation.verifiers(), (key, found)
        assert {r.reason for r in found} == {reason}, (key, [(r.reason, r.detail) for r in found])
        assert all(r.detail for r in found)
    for region in ("eu", "us"):
        url = federation.region_url(region)
        assert url is not None
        assert read_p2(url, "drupal/foxtrot") == []
        # A zip no source has is parked, not rejected: it may come back (ODI's "artifact
        # still to fetch"). Whatever the region lists for it must never be other bytes.
        for entry in read_p2(url, "drupal/ghost"):
            assert entry.sha1 == ghost.artifact.sha1
    assert rejections(federation, "drupal/ghost", 0) == []
