"""The whole path on the real stack: publish, two regions, the real composer and kcat."""

from __future__ import annotations

import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import uuid4

import orjson
import pytest

from connectors.kafka import EventProducer, Topics, bootstrap_servers, ensure_topics
from infra import devstack, localnet
from schemas.events import Artifact, ReleasePublished, ReleaseRejected
from schemas.signing import SignedEvent, SigningKey, seal
from services.demo import write_key_pair
from services.publisher import build_release, publish_release
from services.sample_projects import sample_zip

pytestmark = pytest.mark.e2e

REGIONS = ("eu", "us")
RECORD_DELIMITER = "\n--fairstream-test-record--\n"


@dataclass
class Federation:
    stack: devstack.Stack
    topics: Topics
    key: SigningKey
    origin: localnet.LocalProcess
    origin_root: Path
    nodes: dict[str, localnet.LocalProcess]
    producer: EventProducer

    def release(
        self, project: str, drupal_version: str, require: dict[str, str] | None = None
    ) -> tuple[ReleasePublished, Path]:
        zip_path = sample_zip(self.origin_root / "files", project, drupal_version, require or {})
        event = build_release(
            package=f"drupal/{project}",
            drupal_version=drupal_version,
            zip_path=zip_path,
            origin_url=f"{self.origin.url}/files/{zip_path.name}",
        )
        return event, zip_path

    def publish(self, event: ReleasePublished) -> None:
        publish_release(event, [self.key], self.producer, self.topics.releases)

    def kcat(self, *args: str) -> bytes:
        """Run Debian's kcat against the federation's broker."""
        broker = bootstrap_servers(self.stack.broker_url)
        result = subprocess.run(
            ["kcat", "-b", broker, *args],
            capture_output=True,
            timeout=60,
            check=False,
            env=localnet.kcat_environment(self.stack.data_dir),
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout


@pytest.fixture(scope="module")
def federation(
    stack: devstack.Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federation")
    prefix = f"e2e-{uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    ensure_topics(stack.broker_url, {topics.releases: 4, topics.rejected: 1})
    key = SigningKey.generate()
    public_key = write_key_pair(key, root / "keys" / "drupal.key")
    origin_root = root / "origin"
    (origin_root / "files").mkdir(parents=True)
    processes: list[localnet.LocalProcess] = []
    try:
        origin = localnet.start_origin(origin_root, log=root / "logs" / "origin.log")
        processes.append(origin)
        nodes = {}
        for region in REGIONS:
            nodes[region] = localnet.start_node(
                region,
                broker_url=stack.broker_url,
                store_url=stack.store_url,
                trust=[public_key],
                data_dir=root / f"node-{region}",
                topic_prefix=prefix,
                bucket=f"{prefix.strip('.')}-{region}",
            )
            processes.append(nodes[region])
        producer = EventProducer(stack.broker_url)
        yield Federation(stack, topics, key, origin, origin_root, nodes, producer)
        producer.close()
    finally:
        for process in processes:
            process.stop()


def wait_until_served(
    federation: Federation, package: str, version: str, timeout: float = 60.0
) -> None:
    """Until every region serves ``version`` of ``package`` (its p2, as Composer reads it)."""
    deadline = time.monotonic() + timeout
    missing = set(federation.nodes)
    while missing and time.monotonic() < deadline:
        for region in sorted(missing):
            if version in localnet.fetch_p2_versions(federation.nodes[region].url, package):
                missing.discard(region)
        time.sleep(0.2)
    if missing:
        logs = {r: federation.nodes[r].log_tail(30) for r in missing}
        pytest.fail(f"{package} {version} not served by {sorted(missing)} in {timeout} s:\n{logs}")


def rejections_of(
    federation: Federation, key: str, count: int, timeout: float = 30.0
) -> list[ReleaseRejected]:
    """The rejected topic's records for ``key``, read with kcat until ``count`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        raw = federation.kcat(
            "-C",
            "-t",
            federation.topics.rejected,
            "-o",
            "beginning",
            "-e",
            "-f",
            f"%s{RECORD_DELIMITER}",
        )
        parts = raw.split(RECORD_DELIMITER.encode())
        assert parts[-1] == b""
        found = [r for r in map(ReleaseRejected.from_bytes, parts[:-1]) if r.key == key]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def zip_member(zip_path: Path, name: str) -> bytes:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.read(name)


def test_composer_installs_pathauto_and_token_from_each_region(
    federation: Federation, tmp_path: Path
) -> None:
    token, token_zip = federation.release("token", "8.x-1.9")
    pathauto, pathauto_zip = federation.release("pathauto", "8.x-1.12", {"drupal/token": "*"})
    federation.publish(token)
    federation.publish(pathauto)
    wait_until_served(federation, "drupal/token", "1.9.0")
    wait_until_served(federation, "drupal/pathauto", "1.12.0")

    for region, node in federation.nodes.items():
        site = tmp_path / f"site-{region}"
        result = localnet.composer_require(site, node.url, ["drupal/pathauto"])
        assert result.returncode == 0, f"composer against {region} failed:\n{result.stderr}"

        lock = orjson.loads((site / "composer.lock").read_bytes())
        locked = {p["name"]: p for p in lock["packages"]}
        assert set(locked) == {"drupal/pathauto", "drupal/token"}
        assert locked["drupal/token"]["version"] == "1.9.0"
        assert locked["drupal/pathauto"]["version"] == "1.12.0"
        assert locked["drupal/token"]["dist"]["shasum"] == token.artifact.sha1
        assert locked["drupal/pathauto"]["dist"]["shasum"] == pathauto.artifact.sha1
        assert locked["drupal/token"]["dist"]["url"].startswith(node.url + "/dist/")

        for project, zip_path in (("token", token_zip), ("pathauto", pathauto_zip)):
            installed = site / "vendor" / "drupal" / project
            for member in (f"{project}.module", f"{project}.info.yml", "composer.json"):
                assert (installed / member).read_bytes() == zip_member(
                    zip_path, f"{project}/{member}"
                ), f"{region}: {project}/{member} differs from the published zip"


def test_tampered_event_is_rejected_and_later_events_are_served(
    federation: Federation, tmp_path: Path
) -> None:
    genuine, _ = federation.release("redirect", "8.x-1.8")
    envelope = SignedEvent.from_bytes(seal(genuine.to_bytes(), [federation.key]))
    # The attacker keeps the publisher's signature and points the event at other bytes.
    forged_event = replace(
        genuine,
        artifact=Artifact(
            sha256="0" * 64, sha1="0" * 40, size=10, origin_url="http://127.0.0.1:9/evil.zip"
        ),
    )
    forged = SignedEvent(payload=forged_event.to_bytes(), signatures=envelope.signatures)
    forged_bytes = forged.to_bytes()
    forged_file = tmp_path / "forged.avro"
    forged_file.write_bytes(forged_bytes)
    # Produced with kcat, not our producer: the node must not depend on who wrote the
    # record. A file argument is sent as one message, whatever bytes it holds.
    federation.kcat(
        "-P", "-t", federation.topics.releases, "-k", "drupal/redirect", str(forged_file)
    )
    later, _ = federation.release("redirect", "8.x-1.9")
    federation.publish(later)  # same key, same partition: queued behind the forged record

    wait_until_served(federation, "drupal/redirect", "1.9.0")
    for region, node in federation.nodes.items():
        served = localnet.fetch_p2_versions(node.url, "drupal/redirect")
        assert set(served) == {"1.9.0"}, f"{region} serves {sorted(served)}"

    refused = rejections_of(federation, "drupal/redirect", len(REGIONS))
    assert sorted(r.region for r in refused) == sorted(REGIONS)
    for record in refused:
        assert record.reason == "bad-signature"
        assert "signature" in record.detail
        assert record.record == forged_bytes
        assert record.topic == federation.topics.releases


def test_artifact_that_differs_from_the_signed_one_is_rejected(federation: Federation) -> None:
    signed, zip_path = federation.release("ctools", "8.x-3.13")
    # The origin now serves other bytes than the publisher signed (a compromised mirror).
    other = sample_zip(zip_path.parent / "other", "ctools", "8.x-3.13-evil")
    zip_path.write_bytes(other.read_bytes())
    federation.publish(signed)
    later, _ = federation.release("ctools", "8.x-3.14")
    federation.publish(later)

    wait_until_served(federation, "drupal/ctools", "3.14.0")
    for region, node in federation.nodes.items():
        served = localnet.fetch_p2_versions(node.url, "drupal/ctools")
        assert set(served) == {"3.14.0"}, f"{region} serves {sorted(served)}"
    refused = rejections_of(federation, "drupal/ctools", len(REGIONS))
    assert sorted(r.region for r in refused) == sorted(REGIONS)
    for record in refused:
        assert record.reason == "artifact-mismatch"
        assert signed.artifact.sha256 in record.detail
