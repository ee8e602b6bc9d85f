"""The pure parts of replication: apply_release, render_documents, verify_release; build_release."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.composer import expand
from schemas.errors import (
    InvalidVersionError,
    MalformedEventError,
    SignatureError,
    UnknownSchemaError,
    VersionConflictError,
)
from schemas.events import ReleasePublished
from schemas.signing import PublicKey, SignedEvent, SigningKey, seal
from services.publisher import PublishInputError, build_release, inspect_zip
from services.sample_projects import sample_zip
from streams.replication import (
    PackageState,
    VersionRecord,
    apply_release,
    render_documents,
    verify_release,
)

PUBLIC_URL = "https://eu.fairstream.example"
ORIGIN = "https://ftp.drupal.org/files/projects"
KEY = SigningKey(seed=b"\x07" * 32)
TRUSTED = {KEY.public_key.keyid: KEY.public_key}


def make_release(
    tmp_path: Path, drupal_version: str = "8.x-1.9", **kwargs: Any
) -> ReleasePublished:
    project = kwargs.pop("project", "token")
    zip_path = sample_zip(tmp_path / "zips", project, drupal_version, kwargs.pop("require", None))
    return build_release(
        package=f"drupal/{project}",
        drupal_version=drupal_version,
        zip_path=zip_path,
        origin_url=f"{ORIGIN}/{zip_path.name}",
        **kwargs,
    )


def p2_versions(documents: dict[str, bytes], key: str, package: str) -> list[dict[str, Any]]:
    document = orjson.loads(documents[key])
    assert document["minified"] == "composer/2.0"
    versions: list[dict[str, Any]] = expand(document["packages"][package])
    return versions


# ---------------------------------------------------------------------------
# build_release
# ---------------------------------------------------------------------------


def test_build_release_describes_the_zip(tmp_path: Path) -> None:
    event = make_release(tmp_path, require={"drupal/core": "^10"})
    data = (tmp_path / "zips" / "token-8.x-1.9.zip").read_bytes()

    assert event.package == "drupal/token"
    assert event.version == "1.9.0"
    assert event.drupal_version == "8.x-1.9"
    assert event.artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert event.artifact.sha1 == hashlib.sha1(data).hexdigest()
    assert event.artifact.size == len(data)
    assert event.artifact.origin_url == f"{ORIGIN}/token-8.x-1.9.zip"
    assert event.composer["name"] == "drupal/token"
    assert event.composer["version"] == "1.9.0"
    assert event.composer["dist"]["shasum"] == event.artifact.sha1
    assert event.composer["dist"]["reference"] == "8.x-1.9"
    assert "url" not in event.composer["dist"]  # each node adds its own
    assert event.composer["require"] == {"drupal/core": "^10"}
    assert event.composer["license"] == "GPL-2.0-or-later"
    # The event survives its own encoding.
    assert ReleasePublished.from_bytes(event.to_bytes()) == event


def test_sample_zips_are_reproducible(tmp_path: Path) -> None:
    first = sample_zip(tmp_path / "a", "token", "8.x-1.9").read_bytes()
    second = sample_zip(tmp_path / "b", "token", "8.x-1.9").read_bytes()

    assert first == second
    assert inspect_zip(tmp_path / "a" / "token-8.x-1.9.zip").top_directory == "token"


def test_build_release_refuses_two_top_directories(tmp_path: Path) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("token/token.module", "<?php")
        archive.writestr("pathauto/pathauto.module", "<?php")

    with pytest.raises(
        PublishInputError, match=r"exactly one top directory.*\['pathauto', 'token'\]"
    ):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


def test_build_release_refuses_files_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "flat.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("token.module", "<?php")

    with pytest.raises(PublishInputError, match="exactly one top directory"):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


def test_build_release_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "token-8.x-1.9.zip"
    path.write_bytes(b"this is a tarball, honest")

    with pytest.raises(PublishInputError, match="is not a zip file"):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


def test_build_release_refuses_a_missing_zip(tmp_path: Path) -> None:
    with pytest.raises(PublishInputError, match="does not exist"):
        build_release(
            package="drupal/token",
            drupal_version="8.x-1.9",
            zip_path=tmp_path / "nope.zip",
            origin_url=ORIGIN,
        )


@pytest.mark.parametrize("package", ["token", "Drupal/token", "drupal/tok en", "drupal/", ""])
def test_build_release_refuses_a_bad_package_name(tmp_path: Path, package: str) -> None:
    zip_path = sample_zip(tmp_path, "token", "8.x-1.9")

    with pytest.raises(PublishInputError, match="not a Composer package name"):
        build_release(
            package=package, drupal_version="8.x-1.9", zip_path=zip_path, origin_url=ORIGIN
        )


def test_build_release_refuses_a_non_http_origin(tmp_path: Path) -> None:
    zip_path = sample_zip(tmp_path, "token", "8.x-1.9")

    with pytest.raises(PublishInputError, match="must be http:// or https://"):
        build_release(
            package="drupal/token",
            drupal_version="8.x-1.9",
            zip_path=zip_path,
            origin_url="file:///srv/token.zip",
        )


def test_build_release_refuses_a_bad_drupal_version(tmp_path: Path) -> None:
    with pytest.raises(InvalidVersionError, match=re.escape("8.x-1.09")):
        make_release(tmp_path, drupal_version="8.x-1.09")


def test_build_release_refuses_a_broken_composer_json(tmp_path: Path) -> None:
    path = tmp_path / "token.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("token/composer.json", "{broken")

    with pytest.raises(PublishInputError, match=re.escape("composer.json is not JSON")):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


# ---------------------------------------------------------------------------
# apply_release
# ---------------------------------------------------------------------------


def test_apply_release_adds_the_version(tmp_path: Path) -> None:
    event = make_release(tmp_path)

    state = apply_release(PackageState("drupal/token"), event)

    assert state is not None
    assert state.package == "drupal/token"
    assert state.versions == {
        "1.9.0": VersionRecord(
            drupal_version="8.x-1.9",
            sha256=event.artifact.sha256,
            sha1=event.artifact.sha1,
            size=event.artifact.size,
            composer=event.composer,
        )
    }


def test_apply_release_twice_is_a_no_op(tmp_path: Path) -> None:
    event = make_release(tmp_path)
    state = apply_release(PackageState("drupal/token"), event)
    assert state is not None

    assert apply_release(state, event) is None
    # Also after the state went through its JSON document, as the replicator stores it.
    assert apply_release(PackageState.from_json(state.to_json()), event) is None


def test_apply_release_keeps_earlier_versions(tmp_path: Path) -> None:
    first = make_release(tmp_path, "8.x-1.9")
    second = make_release(tmp_path, "8.x-1.10")
    state = apply_release(PackageState("drupal/token"), first)
    assert state is not None

    both = apply_release(state, second)

    assert both is not None
    assert set(both.versions) == {"1.9.0", "1.10.0"}
    assert set(state.versions) == {"1.9.0"}  # the old state is not modified


def test_apply_release_refuses_other_bytes_for_a_published_version(tmp_path: Path) -> None:
    event = make_release(tmp_path)
    state = apply_release(PackageState("drupal/token"), event)
    assert state is not None
    other_sha256 = hashlib.sha256(b"other zip").hexdigest()
    other = dataclasses.replace(
        event, artifact=dataclasses.replace(event.artifact, sha256=other_sha256)
    )

    with pytest.raises(VersionConflictError) as raised:
        apply_release(state, other)

    message = str(raised.value)
    assert "drupal/token 1.9.0" in message
    assert event.artifact.sha256 in message
    assert other_sha256 in message
    assert raised.value.reason == "version-conflict"


def test_apply_release_refuses_another_size_or_sha1(tmp_path: Path) -> None:
    event = make_release(tmp_path)
    state = apply_release(PackageState("drupal/token"), event)
    assert state is not None

    with pytest.raises(VersionConflictError):
        apply_release(
            state,
            dataclasses.replace(event, artifact=dataclasses.replace(event.artifact, size=1)),
        )
    with pytest.raises(VersionConflictError):
        apply_release(
            state,
            dataclasses.replace(event, artifact=dataclasses.replace(event.artifact, sha1="0" * 40)),
        )


def test_package_state_json_round_trips(tmp_path: Path) -> None:
    state = apply_release(PackageState("drupal/token"), make_release(tmp_path))
    assert state is not None

    assert PackageState.from_json(state.to_json()) == state


# ---------------------------------------------------------------------------
# render_documents
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("public_url", [PUBLIC_URL, PUBLIC_URL + "/"])
def test_render_documents_points_dist_at_this_node(tmp_path: Path, public_url: str) -> None:
    event = make_release(tmp_path)
    state = apply_release(PackageState("drupal/token"), event)
    assert state is not None

    documents = render_documents(state, public_url)

    assert set(documents) == {"p2/drupal/token.json", "p2/drupal/token~dev.json"}
    [entry] = p2_versions(documents, "p2/drupal/token.json", "drupal/token")
    assert entry["version"] == "1.9.0"
    assert entry["dist"] == {
        "type": "zip",
        "url": f"{PUBLIC_URL}/dist/drupal/token/1.9.0/{event.artifact.sha256}.zip",
        "reference": "8.x-1.9",
        "shasum": event.artifact.sha1,
    }
    assert p2_versions(documents, "p2/drupal/token~dev.json", "drupal/token") == []


def test_render_documents_splits_dev_versions_and_sorts(tmp_path: Path) -> None:
    state: PackageState | None = PackageState("drupal/token")
    for drupal_version in ("8.x-1.9", "8.x-1.x-dev", "8.x-1.10"):
        assert state is not None
        state = apply_release(state, make_release(tmp_path, drupal_version))
    assert state is not None

    documents = render_documents(state, PUBLIC_URL)

    stable = p2_versions(documents, "p2/drupal/token.json", "drupal/token")
    dev = p2_versions(documents, "p2/drupal/token~dev.json", "drupal/token")
    assert [entry["version"] for entry in stable] == ["1.10.0", "1.9.0"]
    assert [entry["version"] for entry in dev] == ["1.x-dev"]
    sha256 = state.versions["1.x-dev"].sha256
    assert dev[0]["dist"]["url"] == f"{PUBLIC_URL}/dist/drupal/token/1.x-dev/{sha256}.zip"


def test_render_documents_does_not_depend_on_application_order(tmp_path: Path) -> None:
    first, second = make_release(tmp_path, "8.x-1.9"), make_release(tmp_path, "8.x-1.10")
    one = apply_release(PackageState("drupal/token"), first)
    other = apply_release(PackageState("drupal/token"), second)
    assert one is not None and other is not None
    one, other = apply_release(one, second), apply_release(other, first)
    assert one is not None and other is not None

    assert render_documents(one, PUBLIC_URL) == render_documents(other, PUBLIC_URL)


# ---------------------------------------------------------------------------
# verify_release
# ---------------------------------------------------------------------------


def test_verify_release_returns_the_signed_event(tmp_path: Path) -> None:
    event = make_release(tmp_path)

    assert verify_release(seal(event.to_bytes(), [KEY]), TRUSTED) == event


def test_verify_release_refuses_a_version_that_does_not_match_the_drupal_version(
    tmp_path: Path,
) -> None:
    event = make_release(tmp_path)
    lying = dataclasses.replace(
        event, version="2.0.0", composer={**event.composer, "version": "2.0.0"}
    )

    with pytest.raises(MalformedEventError) as raised:
        verify_release(seal(lying.to_bytes(), [KEY]), TRUSTED)

    assert "Drupal version 8.x-1.9 maps to 1.9.0, the event says 2.0.0" in str(raised.value)


def test_verify_release_refuses_an_invalid_drupal_version(tmp_path: Path) -> None:
    event = dataclasses.replace(make_release(tmp_path), drupal_version="8.x-1.9-final")

    with pytest.raises(InvalidVersionError, match=re.escape("8.x-1.9-final")):
        verify_release(seal(event.to_bytes(), [KEY]), TRUSTED)


def test_verify_release_refuses_a_bad_signature(tmp_path: Path) -> None:
    payload = make_release(tmp_path).to_bytes()
    signature = KEY.sign(payload)
    tampered = bytearray(payload)
    tampered[-1] ^= 0x01
    envelope = SignedEvent(payload=bytes(tampered), signatures=(signature,)).to_bytes()

    with pytest.raises(SignatureError):
        verify_release(envelope, TRUSTED)


def test_verify_release_refuses_an_untrusted_publisher(tmp_path: Path) -> None:
    stranger = SigningKey(seed=b"\x09" * 32)

    with pytest.raises(SignatureError):
        verify_release(seal(make_release(tmp_path).to_bytes(), [stranger]), TRUSTED)


def test_verify_release_refuses_a_signed_payload_that_is_no_release() -> None:
    other = SignedEvent(payload=b"x", signatures=()).to_bytes()

    with pytest.raises(UnknownSchemaError):
        verify_release(seal(other, [KEY]), TRUSTED)


def test_verify_release_trusts_only_the_given_keys(tmp_path: Path) -> None:
    sealed = seal(make_release(tmp_path).to_bytes(), [KEY])
    empty: dict[str, PublicKey] = {}

    with pytest.raises(SignatureError, match="trusted: none"):
        verify_release(sealed, empty)
