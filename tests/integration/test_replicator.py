"""streams.replication.ReleaseReplicator end to end: real S3 store, real origin over HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from minio import Minio

from connectors.origin import FetchLimits
from connectors.store import ObjectStore, StoreLocation
from schemas import layout
from schemas.composer import expand
from schemas.errors import ArtifactMismatchError, SignatureError, VersionConflictError
from schemas.events import ReleasePublished
from schemas.signing import SignedEvent, SigningKey, seal
from services.origin_http import origin_app
from services.publisher import build_release
from services.sample_projects import sample_zip
from streams.replication import Applied, PackageState, ReleaseReplicator

pytestmark = pytest.mark.integration

PUBLIC_URL = "http://eu.fairstream.test:8080"
KEY = SigningKey(seed=b"\x11" * 32)
TRUSTED = {KEY.public_key.keyid: KEY.public_key}
LIMITS = FetchLimits(connect_timeout=2.0, read_timeout=2.0)


class RecordingStore(ObjectStore):
    """The real store, remembering every key the replicator writes."""

    def __init__(self, location: StoreLocation, bucket: str) -> None:
        super().__init__(location, bucket)
        self.writes: list[str] = []

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self.writes.append(key)
        super().put_bytes(key, data, content_type=content_type)

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        self.writes.append(key)
        super().put_file(key, path, content_type=content_type)


@pytest.fixture
def store(location: StoreLocation) -> RecordingStore:
    created = RecordingStore(location, f"t-{uuid4().hex[:12]}")
    created.ensure_bucket()
    return created


@pytest.fixture
def origin_root(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    root.mkdir()
    return root


@pytest.fixture
async def origin(origin_root: Path) -> AsyncIterator[TestServer]:
    running = TestServer(origin_app(origin_root))
    await running.start_server()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def replicator(store: RecordingStore, work_dir: Path) -> AsyncIterator[ReleaseReplicator]:
    async with aiohttp.ClientSession() as session:
        yield ReleaseReplicator(
            store=store,
            session=session,
            trusted=TRUSTED,
            public_url=PUBLIC_URL,
            work_dir=work_dir,
            limits=LIMITS,
        )


def release(origin: TestServer, origin_root: Path, drupal_version: str) -> ReleasePublished:
    zip_path = sample_zip(origin_root, "token", drupal_version, {"drupal/core": "^10"})
    return build_release(
        package="drupal/token",
        drupal_version=drupal_version,
        zip_path=zip_path,
        origin_url=str(origin.make_url(f"/{zip_path.name}")),
    )


def bucket_contents(store: ObjectStore) -> dict[str, bytes]:
    """Every object in the store's bucket, listed with a plain S3 client."""
    location = store.location
    client = Minio(
        location.endpoint,
        access_key=location.access_key,
        secret_key=location.secret_key,
        secure=location.secure,
        region=location.region,
    )
    contents = {}
    for item in client.list_objects(store.bucket, recursive=True):
        body = store.get(item.object_name)
        assert body is not None
        contents[item.object_name] = body.data
    return contents


def p2_entries(contents: dict[str, bytes], *, dev: bool = False) -> list[dict[str, Any]]:
    document = orjson.loads(contents[layout.p2_key("drupal/token", dev=dev)])
    assert document["minified"] == "composer/2.0"
    entries: list[dict[str, Any]] = expand(document["packages"]["drupal/token"])
    return entries


async def test_a_signed_release_lands_in_the_bucket(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    work_dir: Path,
) -> None:
    event = release(origin, origin_root, "8.x-1.9")

    applied = await replicator.apply(seal(event.to_bytes(), [KEY]))

    assert applied == Applied("drupal/token", "1.9.0", fetched=True, changed=True)
    # Artifact first, the state (the record that the event was applied) last.
    assert store.writes[0] == layout.artifact_key(event.artifact.sha256)
    assert store.writes[-1] == layout.state_key("drupal/token")
    contents = bucket_contents(store)
    assert set(contents) == {
        layout.artifact_key(event.artifact.sha256),
        layout.state_key("drupal/token"),
        layout.p2_key("drupal/token"),
        layout.p2_key("drupal/token", dev=True),
    }
    zip_bytes = (origin_root / "token-8.x-1.9.zip").read_bytes()
    assert contents[layout.artifact_key(event.artifact.sha256)] == zip_bytes

    state = PackageState.from_json(contents[layout.state_key("drupal/token")])
    assert set(state.versions) == {"1.9.0"}
    assert state.versions["1.9.0"].sha256 == event.artifact.sha256

    [entry] = p2_entries(contents)
    assert entry["name"] == "drupal/token"
    assert entry["version"] == "1.9.0"
    assert entry["require"] == {"drupal/core": "^10"}
    assert entry["dist"]["type"] == "zip"
    assert entry["dist"]["shasum"] == event.artifact.sha1
    assert entry["dist"]["url"] == (
        f"{PUBLIC_URL}/dist/drupal/token/1.9.0/{event.artifact.sha256}.zip"
    )
    assert p2_entries(contents, dev=True) == []
    assert list(work_dir.iterdir()) == []


async def test_applying_the_same_record_again_changes_nothing(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    work_dir: Path,
) -> None:
    value = seal(release(origin, origin_root, "8.x-1.9").to_bytes(), [KEY])
    await replicator.apply(value)
    before = bucket_contents(store)
    store.writes.clear()
    # Were the origin asked again, it would now fail: the artifact must come from the bucket.
    (origin_root / "token-8.x-1.9.zip").unlink()

    again = await replicator.apply(value)

    assert again == Applied("drupal/token", "1.9.0", fetched=False, changed=False)
    assert bucket_contents(store) == before
    assert store.writes == []  # not even rewritten with the same bytes
    assert list(work_dir.iterdir()) == []


async def test_a_second_version_keeps_the_first(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    first = release(origin, origin_root, "8.x-1.9")
    second = release(origin, origin_root, "8.x-1.10")
    dev = release(origin, origin_root, "8.x-1.x-dev")

    for event in (first, second, dev):
        applied = await replicator.apply(seal(event.to_bytes(), [KEY]))
        assert applied.changed and applied.fetched

    contents = bucket_contents(store)
    for event in (first, second, dev):
        assert layout.artifact_key(event.artifact.sha256) in contents
    state = PackageState.from_json(contents[layout.state_key("drupal/token")])
    assert set(state.versions) == {"1.9.0", "1.10.0", "1.x-dev"}
    stable = p2_entries(contents)
    assert [(e["version"], e["dist"]["shasum"]) for e in stable] == [
        ("1.10.0", second.artifact.sha1),
        ("1.9.0", first.artifact.sha1),
    ]
    for entry, event in zip(stable, (second, first), strict=True):
        assert entry["dist"]["url"] == (
            f"{PUBLIC_URL}/dist/drupal/token/{event.version}/{event.artifact.sha256}.zip"
        )
    [dev_entry] = p2_entries(contents, dev=True)
    assert dev_entry["version"] == "1.x-dev"
    assert dev_entry["dist"]["shasum"] == dev.artifact.sha1


async def test_other_bytes_at_the_origin_write_nothing(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    work_dir: Path,
) -> None:
    event = release(origin, origin_root, "8.x-1.9")
    genuine = (origin_root / "token-8.x-1.9.zip").read_bytes()
    (origin_root / "token-8.x-1.9.zip").write_bytes(bytes(len(genuine)))  # same size

    with pytest.raises(ArtifactMismatchError, match="differs from the signed one"):
        await replicator.apply(seal(event.to_bytes(), [KEY]))

    assert store.writes == []
    assert bucket_contents(store) == {}
    assert list(work_dir.iterdir()) == []


async def test_a_tampered_envelope_writes_nothing(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    event = release(origin, origin_root, "8.x-1.9")
    signature = KEY.sign(event.to_bytes())
    # Redirect nodes to another zip, keeping the publisher's signature.
    evil = dataclasses.replace(
        event,
        artifact=dataclasses.replace(event.artifact, origin_url="http://127.0.0.1:1/evil.zip"),
    )
    tampered = SignedEvent(payload=evil.to_bytes(), signatures=(signature,)).to_bytes()

    with pytest.raises(SignatureError):
        await replicator.apply(tampered)
    with pytest.raises(SignatureError):
        await replicator.apply(seal(event.to_bytes(), [SigningKey(seed=b"\x12" * 32)]))

    assert store.writes == []
    assert bucket_contents(store) == {}


async def test_a_conflicting_version_is_refused_before_fetching(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    tmp_path: Path,
) -> None:
    await replicator.apply(seal(release(origin, origin_root, "8.x-1.9").to_bytes(), [KEY]))
    before = bucket_contents(store)
    store.writes.clear()
    # Another zip, published again as 8.x-1.9.
    other_zip = sample_zip(tmp_path / "other", "token", "8.x-1.9", {"drupal/core": "^11"})
    (origin_root / "token-8.x-1.9.zip").write_bytes(other_zip.read_bytes())
    conflicting = build_release(
        package="drupal/token",
        drupal_version="8.x-1.9",
        zip_path=other_zip,
        origin_url=str(origin.make_url("/token-8.x-1.9.zip")),
    )

    with pytest.raises(VersionConflictError, match="already published"):
        await replicator.apply(seal(conflicting.to_bytes(), [KEY]))

    assert store.writes == []
    assert bucket_contents(store) == before
