"""The whole path on the real stack: publish, two regions, the real composer and kcat."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from infra import localnet
from infra.devtools.sample_projects import sample_zip
from schemas.events import Artifact
from schemas.signing import SignedEvent, seal
from tests.e2e.harness import REGIONS, Federation, rejections_of, wait_until_served

pytestmark = pytest.mark.e2e


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
