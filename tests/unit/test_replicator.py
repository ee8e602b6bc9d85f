"""streams.replication.ReleaseReplicator's logic on the memory store (whose contract with
the real one ``tests/integration/test_store.py`` checks), a real origin over HTTP on
loopback, events signed by a publisher key that a trust root delegates ``drupal/*`` to.

The node's e2e and fault suites run the same replicator against the real S3 server."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import connectors.origin
import streams.artifact_copy
from connectors.memory_store import MemoryStore
from connectors.object_store import ByteSource, ObjectStore
from connectors.origin import FetchLimits
from infra.devtools.origin_http import origin_app
from infra.devtools.sample_projects import sample_zip
from schemas import layout
from schemas.composer import expand
from schemas.errors import (
    ArtifactMismatchError,
    ArtifactTooLargeError,
    ReplayError,
    RootExpiredError,
    SignatureError,
    UndelegatedKeyError,
    VersionConflictError,
    WrongPackageError,
)
from schemas.events import (
    ReleaseExpunged,
    ReleasePublished,
    ReleaseYanked,
    ReplicaAvailable,
    utc_now,
)
from schemas.package_state import PackageState
from schemas.signing import SignedEvent, SigningKey, seal
from schemas.trust import TrustRoot
from services.publishing.publisher import build_release, next_sequence
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.artifacts import HotStats, ReplicaRegistry
from streams.outcomes import Abandoned, Applied, Skipped, Verified
from streams.policy import JurisdictionPolicy, ReplicationMode, ReplicationPolicy
from streams.replication import ReleaseReplicator

PUBLIC_URL = "http://eu.fairstream.test:8080"
ROOT_KEY = SigningKey(seed=b"\x10" * 32)
KEY = SigningKey(seed=b"\x11" * 32)  # drupal.org's publisher key
ACME_KEY = SigningKey(seed=b"\x13" * 32)  # another publisher's, delegated acme/* only
ROOT = build_root(
    version=1,
    root_keys=[ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[
        DelegationSpec("drupal/*", "drupal.org", (KEY.public_key,), 1),
        DelegationSpec("acme/*", "acme.example", (ACME_KEY.public_key,), 1),
    ],
)
LIMITS = FetchLimits(connect_timeout=2.0, read_timeout=2.0)


def position(offset: int) -> str:
    return f"fair.releases:0:{offset}"


class RecordingStore(MemoryStore):
    """A bucket remembering every key the replicator writes or deletes, in order."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket, space="replicator-tests")
        self.writes: list[str] = []

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self.writes.append(key)
        super().put_bytes(key, data, content_type=content_type)

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        self.writes.append(key)
        super().put_file(key, path, content_type=content_type)

    def put_stream(self, key: str, source: ByteSource, size: int, *, content_type: str) -> None:
        super().put_stream(key, source, size, content_type=content_type)
        self.writes.append(key)  # once stored: a stream that raised stored nothing

    def delete(self, key: str) -> None:
        self.writes.append(f"DELETE {key}")
        super().delete(key)


@pytest.fixture
def store() -> RecordingStore:
    created = RecordingStore(f"t-{uuid4().hex[:12]}")
    created.ensure_bucket()
    return created


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """An empty directory for downloads, to check that nothing is left behind."""
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def origin_root(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    root.mkdir()
    return root


@pytest.fixture
def origin_requests() -> list[str]:
    """The paths the origin was asked for, in order."""
    return []


@pytest.fixture
async def origin(origin_root: Path, origin_requests: list[str]) -> AsyncIterator[TestServer]:
    app = origin_app(origin_root)

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        origin_requests.append(request.path)

    app.on_response_prepare.append(record)
    running = TestServer(app)
    await running.start_server()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as created:
        yield created


@pytest.fixture
def make_replicator(
    store: RecordingStore, work_dir: Path, session: aiohttp.ClientSession
) -> Callable[..., ReleaseReplicator]:
    """A replicator under ROOT; keyword arguments override its settings."""

    def make(**overrides: Any) -> ReleaseReplicator:
        settings: dict[str, Any] = {
            "store": store,
            "session": session,
            "root": lambda: ROOT,
            "public_url": PUBLIC_URL,
            "work_dir": work_dir,
            "limits": LIMITS,
            **overrides,
        }
        return ReleaseReplicator(**settings)

    return make


@pytest.fixture
def replicator(make_replicator: Callable[..., ReleaseReplicator]) -> ReleaseReplicator:
    return make_replicator()


def release(
    origin: TestServer, origin_root: Path, drupal_version: str, *, project: str = "token"
) -> ReleasePublished:
    zip_path = sample_zip(origin_root, project, drupal_version, {"drupal/core": "^10"})
    return build_release(
        package=f"drupal/{project}",
        drupal_version=drupal_version,
        zip_path=zip_path,
        origin_url=str(origin.make_url(f"/{zip_path.name}")),
    )


def signed(event: ReleasePublished | ReleaseYanked | ReleaseExpunged, *keys: SigningKey) -> bytes:
    return seal(event.to_bytes(), keys or (KEY,))


def yank(version: str) -> ReleaseYanked:
    return ReleaseYanked(
        package="drupal/token",
        version=version,
        sequence=next_sequence(),
        reason="breaks the update path from 1.9",
        yanked_at=utc_now(),
    )


def expunge(version: str, sha256: str, package: str = "drupal/token") -> ReleaseExpunged:
    return ReleaseExpunged(
        package=package,
        version=version,
        sha256=sha256,
        sequence=next_sequence(),
        reason="SA-CONTRIB-2025-042: remote code execution",
        expunged_at=utc_now(),
    )


def bucket_contents(store: ObjectStore) -> dict[str, bytes]:
    """Every object in the store's bucket."""
    contents = {}
    for key in store.list_keys(""):
        body = store.get(key)
        assert body is not None
        contents[key] = body.data
    return contents


def p2_entries(
    contents: dict[str, bytes], *, dev: bool = False, package: str = "drupal/token"
) -> list[dict[str, Any]]:
    document = orjson.loads(contents[layout.p2_key(package, dev=dev)])
    assert document["minified"] == "composer/2.0"
    entries: list[dict[str, Any]] = expand(document["packages"][package])
    return entries


def parked_record(store: ObjectStore, sha256: str) -> dict[str, Any]:
    """The parked fetch of the zip ``sha256`` (it must be parked)."""
    parked = store.get(layout.pending_key(sha256))
    assert parked is not None
    record: dict[str, Any] = orjson.loads(parked.data)
    return record


def provenance_record(store: ObjectStore, sha256: str) -> dict[str, Any]:
    """Where the stored zip ``sha256`` came from (it must be recorded)."""
    proof = store.get(layout.provenance_key(sha256))
    assert proof is not None
    record: dict[str, Any] = orjson.loads(proof.data)
    return record


class Announcements:
    """The copies a replicator announced, in order: pass it ``announce=announced.announce``."""

    def __init__(self) -> None:
        self.copies: list[ReplicaAvailable] = []

    async def announce(self, copy: ReplicaAvailable) -> None:
        self.copies.append(copy)


# ---------------------------------------------------------------------------
# Releases
# ---------------------------------------------------------------------------


async def test_a_signed_release_lands_in_the_bucket(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
    work_dir: Path,
) -> None:
    event = release(origin, origin_root, "8.x-1.9")

    applied = await replicator.apply(signed(event), position(0))

    assert applied == Applied(
        "drupal/token", "ReleasePublished", event.sequence, fetched=True, changed=True
    )
    assert origin_requests == ["/token-8.x-1.9.zip"]
    # Artifact first (and where it came from), then the state (a new object per sequence),
    # then the p2 it derives.
    state_key = layout.state_key("drupal/token", event.sequence)
    provenance_key = layout.provenance_key(event.artifact.sha256)
    assert store.writes[:3] == [
        layout.artifact_key(event.artifact.sha256),
        provenance_key,
        state_key,
    ]
    contents = bucket_contents(store)
    came_from = orjson.loads(contents[provenance_key])
    assert (came_from["from"], came_from["url"], came_from["region"]) == (
        "origin",
        event.artifact.origin_url,
        "local",
    )
    assert came_from["jurisdiction"] is None
    assert set(contents) == {
        layout.artifact_key(event.artifact.sha256),
        provenance_key,
        state_key,
        layout.p2_key("drupal/token"),
        layout.p2_key("drupal/token", dev=True),
    }
    zip_bytes = (origin_root / "token-8.x-1.9.zip").read_bytes()
    assert contents[layout.artifact_key(event.artifact.sha256)] == zip_bytes

    state = PackageState.from_json(contents[state_key])
    assert set(state.versions) == {"1.9.0"}
    assert state.versions["1.9.0"].sha256 == event.artifact.sha256
    assert state.sequence == event.sequence
    assert list(state.applied.values()) == [position(0)]

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


async def test_a_redelivery_at_the_same_position_changes_nothing(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
    work_dir: Path,
) -> None:
    event = release(origin, origin_root, "8.x-1.9")
    value = signed(event)
    await replicator.apply(value, position(0))
    before = bucket_contents(store)
    store.writes.clear()
    origin_requests.clear()
    # Were the origin asked again, it would now fail: nothing may be fetched.
    (origin_root / "token-8.x-1.9.zip").unlink()

    again = await replicator.apply(value, position(0))

    assert again == Applied(
        "drupal/token", "ReleasePublished", event.sequence, fetched=False, changed=False
    )
    assert bucket_contents(store) == before  # documents byte-identical
    assert store.writes == []  # not even rewritten with the same bytes
    assert origin_requests == []
    assert list(work_dir.iterdir()) == []


async def test_a_replay_at_another_position_is_refused_and_writes_nothing(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    value = signed(release(origin, origin_root, "8.x-1.9"))
    await replicator.apply(value, position(0))
    before = bucket_contents(store)
    store.writes.clear()
    origin_requests.clear()

    with pytest.raises(ReplayError) as raised:
        await replicator.apply(value, position(7))

    assert position(0) in str(raised.value)
    assert position(7) in str(raised.value)
    assert store.writes == []
    assert bucket_contents(store) == before
    assert origin_requests == []


async def test_a_second_version_keeps_the_first(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    first = release(origin, origin_root, "8.x-1.9")
    second = release(origin, origin_root, "8.x-1.10")
    dev = release(origin, origin_root, "8.x-1.x-dev")

    for offset, event in enumerate((first, second, dev)):
        applied = await replicator.apply(signed(event), position(offset))
        assert applied.changed and applied.fetched

    contents = bucket_contents(store)
    for event in (first, second, dev):
        assert layout.artifact_key(event.artifact.sha256) in contents
    state = PackageState.from_json(contents[layout.state_key("drupal/token", dev.sequence)])
    assert set(state.versions) == {"1.9.0", "1.10.0", "1.x-dev"}
    assert state.sequence == dev.sequence
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
        await replicator.apply(signed(event), position(0))

    assert store.writes == []
    assert bucket_contents(store) == {}
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("path", ["streamed", "through a file"])
async def test_a_zip_of_another_project_is_refused_and_not_stored(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    work_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    origin_requests: list[str],
    path: str,
) -> None:
    if path == "through a file":
        # A central directory larger than the streamed end (64-byte chunks, 64 kept)
        # sends the zip through a temporary file, where it is checked the same way.
        monkeypatch.setattr(streams.artifact_copy, "TAIL_BYTES", 64)
        monkeypatch.setattr(connectors.origin, "STREAM_CHUNK_SIZE", 64)
    # pathauto's zip, signed as drupal/token 8.x-1.9 with its true digests: only the
    # zip's top directory tells it is another project.
    # The publisher refuses such a zip (build_release checks the top directory), so a
    # hostile publisher's event is made by hand: token's metadata, pathauto's digests.
    pathauto = sample_zip(tmp_path / "other", "pathauto", "8.x-1.9")
    token = sample_zip(tmp_path / "token", "token", "8.x-1.9")
    (origin_root / "token-8.x-1.9.zip").write_bytes(pathauto.read_bytes())
    genuine = build_release(
        package="drupal/token",
        drupal_version="8.x-1.9",
        zip_path=token,
        origin_url=str(origin.make_url("/token-8.x-1.9.zip")),
    )
    data = pathauto.read_bytes()
    event = dataclasses.replace(
        genuine,
        artifact=dataclasses.replace(
            genuine.artifact,
            sha256=hashlib.sha256(data).hexdigest(),
            sha1=hashlib.sha1(data).hexdigest(),
            size=len(data),
        ),
        composer={
            **genuine.composer,
            "dist": {**genuine.composer["dist"], "shasum": hashlib.sha1(data).hexdigest()},
        },
    )

    with pytest.raises(WrongPackageError, match=r"\['pathauto'\], not one token/ directory"):
        await replicator.apply(signed(event), position(0))

    assert store.writes == []
    assert bucket_contents(store) == {}
    assert list(work_dir.iterdir()) == []
    # Streamed once; through a file, fetched a second time into it.
    assert len(origin_requests) == (1 if path == "streamed" else 2)


async def test_a_zip_is_streamed_into_the_bucket_without_a_temporary_file(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_temporary_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("the zip went through a temporary file")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temporary_file)
    event = release(origin, origin_root, "8.x-1.9")

    applied = await replicator.apply(signed(event), position(0))

    assert applied.fetched
    stored = store.get(layout.artifact_key(event.artifact.sha256))
    assert stored is not None
    assert hashlib.sha256(stored.data).hexdigest() == event.artifact.sha256


async def test_a_zip_whose_central_directory_is_larger_than_the_streamed_end_goes_through_a_file(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
    work_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The sample zip's central directory (three names) is far larger than 64 bytes, and
    # the stream keeps whole chunks: 64 bytes each here.
    monkeypatch.setattr(streams.artifact_copy, "TAIL_BYTES", 64)
    monkeypatch.setattr(connectors.origin, "STREAM_CHUNK_SIZE", 64)
    caplog.set_level(logging.INFO, logger="streams.artifact_copy")
    event = release(origin, origin_root, "8.x-1.9")

    applied = await replicator.apply(signed(event), position(0))

    assert applied.fetched
    # Streamed once (its upload abandoned at the check), then fetched into a file.
    assert origin_requests == ["/token-8.x-1.9.zip", "/token-8.x-1.9.zip"]
    assert "fetching it again through a temporary file" in caplog.text
    stored = store.get(layout.artifact_key(event.artifact.sha256))
    assert stored is not None
    assert hashlib.sha256(stored.data).hexdigest() == event.artifact.sha256
    assert list(work_dir.iterdir()) == []


async def test_a_tampered_envelope_writes_nothing(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    event = release(origin, origin_root, "8.x-1.9")
    signature = KEY.sign(event.to_bytes())
    # Redirect nodes to another zip, keeping the publisher's signature.
    evil = dataclasses.replace(
        event,
        artifact=dataclasses.replace(event.artifact, origin_url="http://127.0.0.1:1/evil.zip"),
    )
    tampered = SignedEvent(payload=evil.to_bytes(), signatures=(signature,)).to_bytes()

    with pytest.raises(SignatureError) as raised:
        await replicator.apply(tampered, position(0))
    assert type(raised.value) is SignatureError
    with pytest.raises(SignatureError):
        await replicator.apply(signed(event, SigningKey(seed=b"\x12" * 32)), position(1))

    assert store.writes == []
    assert bucket_contents(store) == {}
    assert origin_requests == []


async def test_a_conflicting_version_is_refused_before_fetching(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
    tmp_path: Path,
) -> None:
    await replicator.apply(signed(release(origin, origin_root, "8.x-1.9")), position(0))
    before = bucket_contents(store)
    store.writes.clear()
    origin_requests.clear()
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
        await replicator.apply(signed(conflicting), position(1))

    assert store.writes == []
    assert bucket_contents(store) == before
    assert origin_requests == []


# ---------------------------------------------------------------------------
# Yank and expunge
# ---------------------------------------------------------------------------


async def two_versions_applied(
    replicator: ReleaseReplicator, origin: TestServer, origin_root: Path
) -> tuple[ReleasePublished, ReleasePublished]:
    """drupal/token 8.x-1.9 and 8.x-1.10, applied at positions 0 and 1."""
    first = release(origin, origin_root, "8.x-1.9")
    second = release(origin, origin_root, "8.x-1.10")
    await replicator.apply(signed(first), position(0))
    await replicator.apply(signed(second), position(1))
    return first, second


async def test_a_yank_removes_the_version_from_the_p2_served(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    _, second = await two_versions_applied(replicator, origin, origin_root)
    store.writes.clear()
    origin_requests.clear()
    withdrawal = yank("1.10.0")

    applied = await replicator.apply(signed(withdrawal), position(2))

    assert applied == Applied(
        "drupal/token", "ReleaseYanked", withdrawal.sequence, fetched=False, changed=True
    )
    contents = bucket_contents(store)
    assert [entry["version"] for entry in p2_entries(contents)] == ["1.9.0"]
    # Lock files that name 1.10.0 still install it: the artifact stays.
    assert layout.artifact_key(second.artifact.sha256) in contents
    state_key = layout.state_key("drupal/token", withdrawal.sequence)
    state = PackageState.from_json(contents[state_key])
    assert state.versions["1.10.0"].yanked == "breaks the update path from 1.9"
    # Only the stable document changed: the dev one keeps its bytes and its Last-Modified.
    assert store.writes == [state_key, layout.p2_key("drupal/token")]
    assert origin_requests == []


async def test_an_expunge_deletes_the_artifact(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    first, second = await two_versions_applied(replicator, origin, origin_root)
    store.writes.clear()
    removal = expunge("1.9.0", first.artifact.sha256)

    applied = await replicator.apply(signed(removal), position(2))

    assert applied == Applied(
        "drupal/token", "ReleaseExpunged", removal.sequence, fetched=False, changed=True
    )
    key = layout.artifact_key(first.artifact.sha256)
    assert store.stat(key) is None
    contents = bucket_contents(store)
    assert key not in contents
    assert layout.artifact_key(second.artifact.sha256) in contents
    assert [entry["version"] for entry in p2_entries(contents)] == ["1.10.0"]
    state_key = layout.state_key("drupal/token", removal.sequence)
    state = PackageState.from_json(contents[state_key])
    assert set(state.versions) == {"1.10.0"}
    assert state.expunged == {"1.9.0": first.artifact.sha256}
    # The zip goes last: a crash before leaves an orphan zip, never a version without one.
    assert store.writes[0] == state_key
    assert store.writes[-4:] == [
        f"DELETE {key}",
        f"DELETE {layout.provenance_key(first.artifact.sha256)}",
        *(f"DELETE {parked}" for parked in layout.pending_keys(first.artifact.sha256)),
    ]

    # And the expunged version never comes back, not even with its original bytes.
    store.writes.clear()
    origin_requests.clear()
    again = build_release(
        package="drupal/token",
        drupal_version="8.x-1.9",
        zip_path=origin_root / "token-8.x-1.9.zip",
        origin_url=first.artifact.origin_url,
    )
    with pytest.raises(VersionConflictError, match="was expunged"):
        await replicator.apply(signed(again), position(3))
    assert store.writes == []
    assert origin_requests == []
    assert store.stat(key) is None


async def test_an_expunge_from_another_namespace_deletes_no_artifact_of_ours(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    # acme's genuine key may expunge acme's packages; naming drupal/token's zip in an
    # expunge of acme/foo must not delete it: artifacts are shared by content address.
    token = release(origin, origin_root, "8.x-1.9")
    await replicator.apply(signed(token), position(0))
    store.writes.clear()

    await replicator.apply(
        signed(expunge("1.0.0", token.artifact.sha256, package="acme/foo"), ACME_KEY),
        position(1),
    )

    assert not any(write.startswith("DELETE") for write in store.writes)
    assert store.stat(layout.artifact_key(token.artifact.sha256)) is not None


# ---------------------------------------------------------------------------
# The trust root and the node's limits
# ---------------------------------------------------------------------------


async def test_an_event_signed_by_a_key_not_delegated_for_drupal_writes_nothing(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    # acme's key is genuine and in the root, but for acme/* only: namespace squatting.
    event = release(origin, origin_root, "8.x-1.9")

    with pytest.raises(UndelegatedKeyError) as raised:
        await replicator.apply(signed(event, ACME_KEY), position(0))

    assert "delegated for acme/*" in str(raised.value)
    assert store.writes == []
    assert bucket_contents(store) == {}
    assert origin_requests == []


@pytest.mark.parametrize("after", [timedelta(0), timedelta(days=30)], ids=["at-expiry", "later"])
async def test_an_expired_root_refuses_every_event(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
    after: timedelta,
) -> None:
    expired_at: datetime = ROOT.expires + after
    replicator = make_replicator(clock=lambda: expired_at)
    event = release(origin, origin_root, "8.x-1.9")

    with pytest.raises(RootExpiredError, match="trust root v1 expired"):
        await replicator.apply(signed(event), position(0))

    assert store.writes == []
    assert bucket_contents(store) == {}
    assert origin_requests == []
    # A moment before expiry, the same event is applied.
    before = make_replicator(clock=lambda: ROOT.expires - timedelta(seconds=1))
    assert (await before.apply(signed(event), position(0))).changed


async def test_an_artifact_over_the_size_limit_is_refused_before_any_fetch(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
    work_dir: Path,
) -> None:
    event = release(origin, origin_root, "8.x-1.9")
    replicator = make_replicator(max_artifact_size=event.artifact.size - 1)

    with pytest.raises(
        ArtifactTooLargeError, match=f"over this node's limit of {event.artifact.size - 1}"
    ):
        await replicator.apply(signed(event), position(0))

    assert origin_requests == []
    assert store.writes == []
    assert bucket_contents(store) == {}
    assert list(work_dir.iterdir()) == []
    # At exactly the limit it is fetched.
    at_limit = make_replicator(max_artifact_size=event.artifact.size)
    assert (await at_limit.apply(signed(event), position(0))).fetched
    assert origin_requests == ["/token-8.x-1.9.zip"]


async def test_each_event_is_verified_against_the_root_in_force(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    new_key = SigningKey(seed=b"\x14" * 32)
    rotated = build_root(
        version=2,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (new_key.public_key,), 1)],
    )
    in_force: list[TrustRoot] = [ROOT]
    replicator = make_replicator(root=lambda: in_force[-1])
    await replicator.apply(signed(release(origin, origin_root, "8.x-1.9")), position(0))

    in_force.append(rotated)  # the publisher's old key is revoked by the rotation
    with pytest.raises(UndelegatedKeyError):
        await replicator.apply(signed(release(origin, origin_root, "8.x-1.10")), position(1))
    applied = await replicator.apply(
        signed(release(origin, origin_root, "8.x-1.10"), new_key), position(2)
    )

    assert applied.changed
    state = store.get(layout.state_key("drupal/token", applied.sequence))
    assert state is not None
    assert set(PackageState.from_json(state.data).versions) == {"1.9.0", "1.10.0"}


# ---------------------------------------------------------------------------
# Batches, modes, sources, parked fetches, quota
# ---------------------------------------------------------------------------


def verified_batch(
    replicator: ReleaseReplicator, events: list[ReleasePublished], first_offset: int = 0
) -> list[Verified]:
    return [
        replicator.verify(signed(event), position(first_offset + n))
        for n, event in enumerate(events)
    ]


async def test_a_batch_writes_each_package_once(
    replicator: ReleaseReplicator,
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    token = [release(origin, origin_root, f"8.x-1.{n}") for n in range(1, 6)]
    pathauto = [release(origin, origin_root, f"8.x-1.{n}", project="pathauto") for n in range(1, 4)]
    batch = verified_batch(replicator, [*token, *pathauto])

    outcomes = await replicator.apply_batch(batch)

    assert [type(o) for o in outcomes] == [Applied] * 8
    # One state object per package for the whole batch, not one per release.
    states = [key for key in store.writes if key.startswith("state/")]
    assert sorted(states) == sorted(
        [
            layout.state_key("drupal/token", token[-1].sequence),
            layout.state_key("drupal/pathauto", pathauto[-1].sequence),
        ]
    )
    documents = [key for key in store.writes if key.startswith("p2/")]
    assert sorted(documents) == sorted(
        [
            layout.p2_key(p, dev=d)
            for p in ("drupal/token", "drupal/pathauto")
            for d in (False, True)
        ]
    )
    contents = bucket_contents(store)
    assert len(p2_entries(contents)) == 5
    assert len(p2_entries(contents, package="drupal/pathauto")) == 3


async def test_a_metadata_only_region_fetches_nothing(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    replicator = make_replicator(policy=ReplicationPolicy(mode=ReplicationMode.METADATA_ONLY))
    event = release(origin, origin_root, "8.x-1.9")

    applied = await replicator.apply(signed(event), position(0))

    assert applied.changed and not applied.fetched
    assert origin_requests == []
    contents = bucket_contents(store)
    assert not any(key.startswith("artifacts/") for key in contents)
    [entry] = p2_entries(contents)
    assert entry["dist"]["shasum"] == event.artifact.sha1


async def test_a_package_outside_the_allow_list_is_skipped(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    replicator = make_replicator(policy=ReplicationPolicy(include=("drupal/token",)))
    token = release(origin, origin_root, "8.x-1.9")
    pathauto = release(origin, origin_root, "8.x-1.12", project="pathauto")

    outcomes = await replicator.apply_batch(verified_batch(replicator, [token, pathauto]))

    assert isinstance(outcomes[0], Applied)
    assert outcomes[1] == Skipped("drupal/pathauto")
    assert not any("pathauto" in key for key in store.writes)


def unreachable_release(
    make_replicator: Callable[..., ReleaseReplicator], origin: TestServer, origin_root: Path
) -> tuple[ReleaseReplicator, list[datetime], ReleasePublished, Path]:
    """A replicator on a settable clock and a release whose zip the origin does not serve
    (moved aside: rename the path back to serve it)."""
    now = [datetime(2026, 11, 22, 12, 0, tzinfo=UTC)]
    replicator = make_replicator(clock=lambda: now[0])
    event = release(origin, origin_root, "8.x-1.9")
    zip_path = origin_root / "token-8.x-1.9.zip"
    aside = zip_path.with_suffix(".aside")
    zip_path.rename(aside)
    return replicator, now, event, aside


async def test_an_unreachable_zip_is_parked_then_fetched_when_due(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    replicator, now, event, aside = unreachable_release(make_replicator, origin, origin_root)

    applied = await replicator.apply(signed(event), position(0))

    assert applied.changed and applied.parked and not applied.fetched
    parked = parked_record(store, event.artifact.sha256)
    assert (parked["package"], parked["version"], parked["attempts"]) == (
        "drupal/token",
        "1.9.0",
        0,
    )
    assert "404" in parked["last_error"]
    # The version is served meanwhile: its dist is answered by a redirect elsewhere.
    assert [e["version"] for e in p2_entries(bucket_contents(store))] == ["1.9.0"]

    # Not due yet: nothing is tried.
    assert (await replicator.retry_pending()).retried == 0
    now[0] += timedelta(minutes=1)
    still = await replicator.retry_pending()
    assert (still.retried, still.recovered, still.still_pending) == (1, 0, 1)
    assert parked_record(store, event.artifact.sha256)["attempts"] == 1

    aside.rename(origin_root / "token-8.x-1.9.zip")
    now[0] += timedelta(hours=2)
    report = await replicator.retry_pending()
    assert (report.retried, report.recovered, report.still_pending) == (1, 1, 0)
    assert store.stat(layout.pending_key(event.artifact.sha256)) is None
    assert store.stat(layout.artifact_key(event.artifact.sha256)) is not None


async def test_a_fetch_parked_under_the_flat_key_of_an_older_bucket_is_retried_and_cleared(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    """Buckets written before the sharding hold ``pending/<sha256>.json``: such a fetch is
    still retried, a refetch request does not park it twice, and it is deleted once fetched."""
    replicator, now, event, aside = unreachable_release(make_replicator, origin, origin_root)
    applied = await replicator.apply(signed(event), position(0))
    assert applied.parked
    sharded, flat = layout.pending_keys(event.artifact.sha256)
    assert sharded == f"pending/{event.artifact.sha256[:2]}/{event.artifact.sha256}.json"
    # As an older node left it: moved to the flat key.
    parked = store.get(sharded)
    assert parked is not None
    store.put_bytes(flat, parked.data, content_type="application/json")
    store.delete(sharded)

    record = (await replicator.view.load("drupal/token")).versions["1.9.0"]  # type: ignore[union-attr]
    replicator.request_refetch("drupal/token", "1.9.0", record)
    await asyncio.gather(*replicator._background)
    assert store.stat(sharded) is None  # already parked: not parked a second time

    aside.rename(origin_root / "token-8.x-1.9.zip")
    now[0] += timedelta(hours=2)
    report = await replicator.retry_pending()
    assert (report.retried, report.recovered, report.still_pending) == (1, 1, 0)
    assert store.stat(flat) is None and store.stat(sharded) is None
    assert store.stat(layout.artifact_key(event.artifact.sha256)) is not None


async def serve_copy(root: Path, event: ReleasePublished, name: str) -> TestServer:
    """Another region's copy of ``event``'s zip, served over HTTP (started; close it)."""
    folder = root / name
    folder.mkdir()
    (folder / event.artifact.sha256).write_bytes(
        (root / "origin" / "token-8.x-1.9.zip").read_bytes()
    )
    server = TestServer(origin_app(folder))
    await server.start_server()
    return server


def copy_of(
    event: ReleasePublished, region: str, server: TestServer, jurisdiction: str | None
) -> ReplicaAvailable:
    return ReplicaAvailable(
        node_id=region,
        region=region,
        package="drupal/token",
        version="1.9.0",
        sha256=event.artifact.sha256,
        size=event.artifact.size,
        url=str(server.make_url(f"/{event.artifact.sha256}")),
        verified_at=utc_now(),
        jurisdiction=jurisdiction,
    )


@pytest.mark.parametrize("jurisdiction", [None, "US"], ids=["undeclared", "US"])
async def test_a_replica_is_used_when_the_origin_fails_and_copies_are_announced(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    tmp_path: Path,
    jurisdiction: str | None,
) -> None:
    """A region without a jurisdiction policy fetches from any source: region us's copy,
    whether us declares no jurisdiction or US."""
    event = release(origin, origin_root, "8.x-1.9")
    replica = await serve_copy(tmp_path, event, "us")
    (origin_root / "token-8.x-1.9.zip").unlink()  # the origin fails: only the replica has it
    registry = ReplicaRegistry("eu")
    registry.add(copy_of(event, "us", replica, jurisdiction))
    announced = Announcements()
    try:
        replicator = make_replicator(region="eu", replicas=registry, announce=announced.announce)
        applied = await replicator.apply(signed(event), position(0))
    finally:
        await replica.close()

    assert applied.fetched and not applied.parked
    assert store.stat(layout.artifact_key(event.artifact.sha256)) is not None
    [copy] = announced.copies
    assert (copy.region, copy.sha256) == ("eu", event.artifact.sha256)
    assert copy.url == PUBLIC_URL + layout.dist_path("drupal/token", "1.9.0", copy.sha256)


async def test_a_sovereign_region_never_fetches_from_outside_its_jurisdictions(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
    tmp_path: Path,
) -> None:
    """The origin (US) and region us (US) hold the zip, a region that did not declare its
    jurisdiction too: an EU-only region parks it, asks none of them, and says why; once an
    EU region announces a copy, the parked fetch takes it from there."""
    event = release(origin, origin_root, "8.x-1.9")
    us = await serve_copy(tmp_path, event, "us")
    anywhere = await serve_copy(tmp_path, event, "anywhere")
    de = await serve_copy(tmp_path, event, "de")
    registry = ReplicaRegistry("eu")
    registry.add(copy_of(event, "us", us, "US"))
    registry.add(copy_of(event, "anywhere", anywhere, None))
    now = [datetime(2026, 12, 6, 12, 0, tzinfo=UTC)]
    announced = Announcements()
    sovereign = ReplicationPolicy(
        jurisdictions=JurisdictionPolicy.restricting(["EU"], own="EU", origin="US")
    )
    replicator = make_replicator(
        region="eu",
        replicas=registry,
        policy=sovereign,
        announce=announced.announce,
        clock=lambda: now[0],
    )
    try:
        applied = await replicator.apply(signed(event), position(0))

        assert applied.parked and not applied.fetched
        assert origin_requests == []
        reason = parked_record(store, event.artifact.sha256)["last_error"]
        assert "no source in an allowed jurisdiction" in reason
        assert "fetches from EU only" in reason
        for named in ("origin (US)", "us (US)", "anywhere (jurisdiction not declared)"):
            assert named in reason
        assert store.stat(layout.artifact_key(event.artifact.sha256)) is None

        de_copy = copy_of(event, "de", de, "EU")
        registry.add(de_copy)
        now[0] += timedelta(hours=2)
        report = await replicator.retry_pending()
    finally:
        for server in (us, anywhere, de):
            await server.close()

    assert (report.retried, report.recovered, report.still_pending) == (1, 1, 0)
    assert store.stat(layout.artifact_key(event.artifact.sha256)) is not None
    assert origin_requests == []
    came_from = provenance_record(store, event.artifact.sha256)
    assert (came_from["from"], came_from["jurisdiction"], came_from["region"]) == ("de", "EU", "eu")
    assert came_from["url"] == de_copy.url
    # Its own copy is announced with its jurisdiction, for other sovereign regions.
    assert [(copy.region, copy.jurisdiction) for copy in announced.copies] == [("eu", "EU")]


async def test_a_peer_release_is_fetched_from_its_origin_in_the_peer_jurisdiction(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    """A release read from peer typo3 (position ``peer/typo3/...``) has its zip at typo3's
    origin, declared CH: an EU-only region whose own origin is EU parks it (also when the
    parked fetch is retried) rather than take it for its own origin; a region that allows
    CH fetches it when the parked fetch is retried, and records typo3's origin and CH as
    where it came from."""
    event = release(origin, origin_root, "8.x-1.9")
    at_typo3 = "peer/typo3/fair.releases:0:4"
    now = [datetime(2026, 12, 6, 12, 0, tzinfo=UTC)]
    eu_only = ReplicationPolicy(
        jurisdictions=JurisdictionPolicy(
            own="EU",
            origin="EU",
            fetch=frozenset({"EU"}),
            redirect=frozenset({"EU"}),
            route=frozenset({"EU"}),
            peer_origins=(("typo3", "CH"),),
        )
    )
    replicator = make_replicator(region="eu", policy=eu_only, clock=lambda: now[0])

    applied = await replicator.apply(signed(event), at_typo3)

    assert applied.parked and not applied.fetched
    assert origin_requests == []
    for attempt in range(2):
        reason = parked_record(store, event.artifact.sha256)["last_error"]
        assert "does not fetch from peer:typo3 (CH)" in reason, attempt
        assert "origin (EU)" not in reason
        now[0] += timedelta(hours=2)
        report = await replicator.retry_pending()
        assert (report.retried, report.recovered) == (1, 0)
    assert origin_requests == []

    with_ch = replace(
        eu_only, jurisdictions=replace(eu_only.jurisdictions, fetch=frozenset({"CH"}))
    )
    now[0] += timedelta(hours=4)
    report = await make_replicator(
        region="eu", policy=with_ch, clock=lambda: now[0]
    ).retry_pending()

    assert (report.retried, report.recovered, report.still_pending) == (1, 1, 0)
    assert origin_requests != []
    came_from = provenance_record(store, event.artifact.sha256)
    assert (came_from["from"], came_from["jurisdiction"]) == ("peer:typo3", "CH")
    assert came_from["url"] == event.artifact.origin_url


async def test_the_quota_evicts_the_coldest_zips(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
) -> None:
    events = [release(origin, origin_root, f"8.x-1.{n}") for n in range(1, 4)]
    sizes = [event.artifact.size for event in events]
    hot = HotStats("eu")
    replicator = make_replicator(
        region="eu", hot=hot, policy=ReplicationPolicy(quota_bytes=sizes[0] + sizes[1] + 10)
    )
    await replicator.apply(signed(events[0]), position(0))
    await replicator.apply(signed(events[1]), position(1))
    # The first is downloaded now and again; the second never.
    hot.add(events[0].artifact.sha256, 2, datetime.now(UTC) - timedelta(hours=3))

    await replicator.apply(signed(events[2]), position(2))

    held = {
        sha
        for key in store.list_keys(layout.ARTIFACT_PREFIX)
        if (sha := layout.artifact_sha256(key))
    }
    assert held == {events[0].artifact.sha256, events[2].artifact.sha256}
    assert replicator.store_bytes() == sizes[0] + sizes[2]
    # The evicted version stays in the metadata: its dist redirects until it is fetched again.
    assert len(p2_entries(bucket_contents(store))) == 3


async def test_a_redelivery_repairs_documents_a_crash_cut_short(
    replicator: ReleaseReplicator, store: RecordingStore, origin: TestServer, origin_root: Path
) -> None:
    event = release(origin, origin_root, "8.x-1.9")
    value = signed(event)
    await replicator.apply(value, position(0))
    store.delete(layout.p2_key("drupal/token"))  # the crash came between state and p2
    replicator.forget_cached_states()  # a restarted worker knows nothing
    store.writes.clear()

    again = await replicator.apply(value, position(0))

    assert not again.changed
    assert store.writes == [layout.p2_key("drupal/token")]
    assert [e["version"] for e in p2_entries(bucket_contents(store))] == ["1.9.0"]


async def test_a_partition_revoked_mid_batch_writes_nothing(
    make_replicator: Callable[..., ReleaseReplicator],
    store: RecordingStore,
    origin: TestServer,
    origin_root: Path,
    origin_requests: list[str],
) -> None:
    asked: list[str] = []

    def owns(at: str) -> bool:
        # Owned when the batch starts, revoked by the time its effects would be written.
        asked.append(at)
        return len(asked) == 1

    replicator = make_replicator(owns=owns)
    event = release(origin, origin_root, "8.x-1.9")
    item = replicator.verify(signed(event), position(0))

    outcomes = await replicator.apply_batch([item])

    assert outcomes == [Abandoned("drupal/token")]
    assert origin_requests == ["/token-8.x-1.9.zip"]  # the zip (content addressed) is kept
    assert not any(key.startswith(("state/", "p2/")) for key in store.writes)
    # Revoked before the batch: not even fetched.
    origin_requests.clear()
    assert await replicator.apply_batch([item]) == [Abandoned("drupal/token")]
    assert origin_requests == []
