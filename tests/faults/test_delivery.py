"""Duplicate delivery and poison messages, produced with kcat (not our producer), under load."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from connectors.kafka_connection import bootstrap_servers, client_config
from connectors.kafka_producers import idempotent_producer_settings
from infra import localnet
from schemas.events import REJECTED_PREFIX_BYTES, ReleasePublished, ReleaseRejected
from schemas.signing import MAX_EVENT_BYTES, SignedEvent, SigningKey, seal
from streams.faults import (
    AFTER_VIEW_RECORD,
    BEFORE_LOCAL_WRITE,
    BEFORE_OFFSET_COMMIT,
    REFUSE_REJECTION,
)
from streams.intake import VERIFY_IN_THREADS_FROM
from tests.faults.checker import included
from tests.faults.harness import (
    POLICIES,
    WORKERS,
    FaultFederation,
    Load,
    Poller,
    committed_offsets,
    read_p2,
    region_of,
)

#: Above this, kcat must be told to send larger messages (librdkafka's own default limit).
KCAT_DEFAULT_MAX = 1_000_000
#: The largest record the test sends: Apache Kafka takes 1,048,588 bytes by default; the
#: embedded broker (Tansu) enforces no limit at all (it took 20 MiB when measured).
BROKER_MAX = 32 << 20

DELIMITER = "\n--fault-record--\n"
#: Releases produced at once by the burst test: with the poison among them, enough that each
#: worker of a two-worker region gets batches verified in threads.
BURST = 300


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
    larger = (
        ["-X", f"message.max.bytes={len(value) + 4096}"] if len(value) > KCAT_DEFAULT_MAX else []
    )
    kcat(federation, "-P", *larger, "-t", federation.topics.releases, "-k", key, str(path))


def wait_for_health(url: str, status: int, seconds: float) -> str:
    """Poll ``/health`` until it answers ``status``; its ``status`` field then."""
    deadline = time.monotonic() + seconds
    answered: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                answered = (response.status, orjson.loads(response.read())["status"])
        except urllib.error.HTTPError as error:
            answered = (error.code, orjson.loads(error.read())["status"])
        if answered[0] == status:
            return answered[1]
        time.sleep(0.3)
    raise AssertionError(f"/health of {url} still answers {answered} after {seconds} s")


def served_within(federation: FaultFederation, project: str, seconds: float) -> None:
    """Publish the next release of ``project`` and wait until every region serves it: what
    stood behind a blocked partition would wait for ever."""
    ack = federation.publish_one(project)
    assert ack is not None
    deadline = time.monotonic() + seconds
    waiting = {region for region in WORKERS if included(ack.package, *POLICIES[region])}
    while waiting and time.monotonic() < deadline:
        for region in list(waiting):
            url = federation.region_url(region)
            if url is not None and ack.version in {e.version for e in read_p2(url, ack.package)}:
                waiting.discard(region)
        time.sleep(0.3)
    assert not waiting, f"{ack.package} {ack.version} not served within {seconds} s by {waiting}"


def rejections(
    federation: FaultFederation,
    key: str | Callable[[ReleaseRejected], bool],
    count: int,
) -> list[ReleaseRejected]:
    """The rejections of records with ``key`` (or those ``key`` accepts), waiting up to a
    minute for ``count`` of them."""
    wanted = key if callable(key) else lambda rejection: rejection.key == key
    deadline = time.monotonic() + 60
    while True:
        raw = kcat(
            federation, "-C", "-t", federation.topics.rejected, "-o", "beginning", "-e",
            "-f", f"%s{DELIMITER}",
        )  # fmt: skip
        parts = raw.split(DELIMITER.encode())[:-1]
        found = [r for r in map(ReleaseRejected.from_bytes, parts) if wanted(r)]
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


def release_of_size(federation: FaultFederation, project: str, size: int) -> bytes:
    """A release of ``project`` signed by the federation's key whose envelope is exactly
    ``size`` bytes (its description is padded)."""
    event = federation.release_of(project, "8.x-1.0")

    def sealed(padding: int) -> bytes:
        # Signed as seal does, without its size check: the test needs one byte too many.
        composer = {**event.composer, "description": "x" * padding}
        payload = dataclasses.replace(event, composer=composer).to_bytes()
        return SignedEvent(payload, (federation.key.sign(payload),)).to_bytes()

    base = len(sealed(0))
    padding = size - base
    for _ in range(8):  # the lengths of Avro's varints may grow with the padding: settle
        found = len(sealed(padding))
        if found == size:
            return sealed(padding)
        padding += size - found
    raise AssertionError(f"no padding gives an envelope of exactly {size} bytes")


def test_the_largest_event_the_contract_allows_is_served_and_one_byte_more_is_refused(
    fault_federation: FaultFederation, tmp_path: Path
) -> None:
    """What the production shape must take: the node's consumer reads an event of exactly
    MAX_EVENT_BYTES and applies it; one byte more is refused unread (docs/threat-model.md,
    "Size limits, end to end")."""
    federation = fault_federation
    largest = release_of_size(federation, "largest", MAX_EVENT_BYTES)
    above = release_of_size(federation, "above", MAX_EVENT_BYTES + 1)
    kcat_produce(federation, "drupal/largest", largest, tmp_path)
    kcat_produce(federation, "drupal/above", above, tmp_path)
    deadline = time.monotonic() + 60
    waiting = {"eu", "us"}
    while waiting and time.monotonic() < deadline:
        for region in list(waiting):
            url = federation.region_url(region)
            if url is not None and read_p2(url, "drupal/largest"):
                waiting.discard(region)
        time.sleep(0.3)
    assert not waiting, f"the largest event allowed was not served by {waiting}"
    found = rejections(federation, "drupal/above", len(federation.verifiers()))
    assert {r.region for r in found} == federation.verifiers()
    assert {r.reason for r in found} == {"oversized"}
    assert all(r.record_size == MAX_EVENT_BYTES + 1 for r in found)
    assert rejections(federation, "drupal/largest", 0) == []
    for region in ("eu", "us"):
        url = federation.region_url(region)
        assert url is not None and read_p2(url, "drupal/above") == []


def test_records_of_any_size_are_refused_unread_recorded_bounded_and_block_nothing(
    fault_federation: FaultFederation, tmp_path: Path
) -> None:
    federation = fault_federation
    sizes = {"poison/one-mib": 1_048_300, "poison/five-mib": 5 << 20, "poison/largest": BROKER_MAX}
    values = {key: os.urandom(size) for key, size in sizes.items()}
    long_key = "poison/long-key-" + "k" * 100_000
    with Load(federation), Poller(federation):
        time.sleep(2)
        for key, value in values.items():
            kcat_produce(federation, key, value, tmp_path)
        kcat_produce(federation, long_key, os.urandom(300), tmp_path)
        time.sleep(2)
    # A record of any size stops nothing behind it, on its partition or any other. (Published
    # once the load stopped: two publishers of one package would race their sequences.)
    with Poller(federation):
        for project in ("alpha", "bravo", "cedar"):
            served_within(federation, project, 30)
    federation.wait_until_quiet(timeout=180)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
    for key, value in values.items():
        found = rejections(federation, key, len(federation.verifiers()))
        assert {r.region for r in found} == federation.verifiers(), (key, found)
        for rejection in found:
            assert rejection.reason == "oversized", (key, rejection.detail)
            assert f"{len(value):,} bytes" in rejection.detail
            assert rejection.record == value[:REJECTED_PREFIX_BYTES]
            assert rejection.record_size == len(value)
            assert rejection.record_sha256 == hashlib.sha256(value).hexdigest()
    cut = rejections(
        federation,
        lambda r: bool(r.key and r.key.startswith("poison/long-key-k")),
        len(federation.verifiers()),
    )
    assert {r.region for r in cut} == federation.verifiers()
    assert all(r.key and r.key.endswith("(100,016 characters in all)") for r in cut)


def test_rejections_the_broker_refuses_go_to_the_dead_letter_file_then_to_the_topic(
    fault_federation: FaultFederation, tmp_path: Path
) -> None:
    federation = fault_federation
    # The first rejection is refused 4 times (all its attempts: dead-lettered), the second
    # twice, then it goes through; the dead-letter file is re-sent 30 to 60 s later.
    armed = federation.start_worker("us", ["--fault-point", f"{REFUSE_REJECTION}@6"])
    armed.wait_until_answering("/ready", timeout=120)
    with Load(federation), Poller(federation):
        time.sleep(2)
        kcat_produce(federation, "poison/refused-1", os.urandom(300), tmp_path)
        kcat_produce(federation, "poison/refused-2", os.urandom(300), tmp_path)
        # Its liveness says so while a rejection waits in the dead-letter file (30 s at
        # least), and the releases behind it are served meanwhile.
        assert wait_for_health(armed.url, 503, 60).count("rejections not recorded") == 1
    with Poller(federation):
        for project in ("alpha", "bravo"):
            served_within(federation, project, 60)
        assert wait_for_health(armed.url, 200, 120) == "ok"
    federation.wait_until_quiet(timeout=180)
    assert federation.history().clean
    for key in ("poison/refused-1", "poison/refused-2"):
        found = rejections(federation, lambda r, key=key: r.key == key and r.region == "us", 1)
        assert found, (key, armed.log_tail(40))
        assert {r.reason for r in found} == {"malformed"}, (key, [r.detail for r in found])
    log = armed.log.read_text(errors="replace")
    assert "not recorded after 4 attempts" in log
    assert "dead-letter file: 1 rejections recorded now, 0 still waiting" in log
    federation.start_worker("us")  # unarmed again for the tests after this one


@dataclasses.dataclass
class Burst:
    """``BURST`` releases of new packages produced at once, a poison record and a forged one
    among them; with ``again``, a second release of the first ``again`` packages at the end
    (applied on top of states whose view records may still be in flight)."""

    good: list[ReleasePublished]
    forged: ReleasePublished
    records: list[tuple[str, bytes]]

    @classmethod
    def of(cls, federation: FaultFederation, name: str, again: int = 0) -> Burst:
        good = [federation.release_of(f"{name}{n}", "8.x-1.0") for n in range(BURST)]
        forged = federation.release_of(f"{name}-forged", "8.x-1.0")
        records = [(event.package, seal(event.to_bytes(), [federation.key])) for event in good]
        records.insert(BURST // 3, (f"poison/{name}-garbage", os.urandom(300)))
        stranger = SigningKey.generate()
        records.insert(2 * BURST // 3, (forged.package, seal(forged.to_bytes(), [stranger])))
        second = [federation.release_of(f"{name}{n}", "8.x-1.1") for n in range(again)]
        records += [(event.package, seal(event.to_bytes(), [federation.key])) for event in second]
        return cls(good + second, forged, records)

    def produce(
        self, federation: FaultFederation, records: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Produce ``records`` (default: all of them) at once."""
        producer = Producer(
            {**client_config(federation.stack.broker_url), **idempotent_producer_settings(30, 20)}
        )
        for key, value in self.records if records is None else records:
            producer.produce(federation.topics.releases, key=key.encode(), value=value)
        assert producer.flush(30) == 0

    def wait_served(self, federation: FaultFederation, timeout: float = 240) -> None:
        """Until every copy of ``eu`` and ``us`` serves every good release (the signed zip,
        once) and none serves the forged one."""
        for source, url in federation.copies().items():
            if region_of(source) not in ("eu", "us"):
                continue
            waiting: dict[str, list[str]] = {}
            for event in self.good:
                waiting.setdefault(event.package, []).append(event.artifact.sha1)
            packages = len(waiting)
            deadline = time.monotonic() + timeout
            while waiting and time.monotonic() < deadline:
                for package, sha1s in list(waiting.items()):
                    served = sorted(entry.sha1 for entry in read_p2(url, package))
                    if len(served) >= len(sha1s):
                        assert served == sorted(sha1s), (source, package, served)
                        del waiting[package]
                time.sleep(0.5)
            assert not waiting, (
                f"{source} serves {packages - len(waiting)} of {packages}: {waiting}"
            )
            assert read_p2(url, self.forged.package) == []

    def batch_sizes(self, federation: FaultFederation) -> list[int]:
        """The sizes of the batches the workers of ``eu`` and ``us`` logged."""
        return [
            int(size)
            for name in (*WORKERS["eu"], *WORKERS["us"])
            for size in re.findall(
                r"batch of (\d+) records", federation.workers[name].log.read_text(errors="replace")
            )
        ]


def test_a_burst_verified_in_threads_serves_every_release_and_records_every_poison_record(
    fault_federation: FaultFederation,
) -> None:
    """Hundreds of records at once: a worker verifies a large batch in threads while the one
    before it lands. Poison records in the middle are recorded with their reason, the records
    after them are judged in order, and every release of the burst is served."""
    federation = fault_federation
    burst = Burst.of(federation, "burst")
    burst.produce(federation)
    burst.wait_served(federation)
    garbage = next(key for key, _ in burst.records if key.startswith("poison/"))
    expected = {garbage: "malformed", burst.forged.package: "undelegated-key"}
    for key, reason in expected.items():
        found = rejections(federation, key, len(federation.verifiers()))
        assert {r.region for r in found} == federation.verifiers(), (key, found)
        assert {r.reason for r in found} == {reason}, (key, [(r.reason, r.detail) for r in found])
    # The burst did reach the workers as batches large enough to be verified in threads.
    sizes = burst.batch_sizes(federation)
    assert max(sizes) >= VERIFY_IN_THREADS_FROM, sizes
    verdict = federation.history()
    assert verdict.clean, str(verdict)


@pytest.mark.parametrize("point", [AFTER_VIEW_RECORD, BEFORE_LOCAL_WRITE, BEFORE_OFFSET_COMMIT])
def test_a_worker_killed_while_its_batches_overlap_loses_and_doubles_nothing(
    fault_federation: FaultFederation, point: str
) -> None:
    """A batch is applied while the previous one's view records are still in flight (its
    documents dated after theirs, its states built on theirs): kill -9 in that window, in the
    middle of a burst, and the restarted worker and its region serve every release once."""
    federation = fault_federation
    log = federation.workers["eu-1"].log
    before = log.stat().st_size  # the log goes on from the previous eu-1's
    armed = federation.start_worker("eu-1", ["--fault-point", f"{point}@2"])
    deadline = time.monotonic() + 60
    while "assigned partitions" not in log.read_bytes()[before:].decode(errors="replace"):
        assert time.monotonic() < deadline, armed.log_tail(30)
        time.sleep(0.2)
    burst = Burst.of(federation, f"overlap-{point}", again=BURST // 2)
    # In two halves: eu-1 takes at least two batches, the second while the first lands.
    half = len(burst.records) // 2
    burst.produce(federation, burst.records[:half])
    time.sleep(0.3)
    burst.produce(federation, burst.records[half:])
    deadline = time.monotonic() + 120
    while armed.alive():
        assert time.monotonic() < deadline, f"eu-1 never reached {point}:\n{armed.log_tail(40)}"
        time.sleep(0.2)
    assert armed.process.returncode == -signal.SIGKILL, armed.log_tail(30)
    assert f"fault point {point} reached" in log.read_text(errors="replace")
    federation.start_worker("eu-1")
    burst.wait_served(federation)
    verdict = federation.history()
    assert verdict.clean, str(verdict)
