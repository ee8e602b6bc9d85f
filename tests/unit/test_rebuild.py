"""streams.rebuild's logic on the memory store, over a log held in the test: a rebuild of an
empty region comes out byte-identical to the live one, a healthy region is left as it is, a
damaged one repaired, and nothing the root in force refuses gets in.

The same rebuild reading the real broker and writing the real S3 server:
``tests/integration/test_rebuild.py``."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from connectors.memory_store import MemoryStore
from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from infra.devtools.origin_http import origin_app
from infra.devtools.sample_projects import sample_zip
from schemas import layout
from schemas.events import ReleaseExpunged, ReleasePublished, ReleaseYanked, utc_now
from schemas.package_state import PackageState, render_documents
from schemas.signing import SigningKey, seal
from schemas.trust import TrustRoot
from services.publishing.publisher import build_release, next_sequence
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.policy import ReplicationMode, ReplicationPolicy
from streams.rebuild import BucketTarget, RebuildReport, rebuild_region
from streams.replication import ReleaseReplicator

PUBLIC_URL = "http://eu.fairstream.test"
TOPIC = "fair.releases"
PARTITIONS = 2
ROOT_KEY = SigningKey(seed=b"\x30" * 32)
OLD_KEY = SigningKey(seed=b"\x31" * 32)
NEW_KEY = SigningKey(seed=b"\x32" * 32)


def root_delegating(key: SigningKey, version: int = 1) -> TrustRoot:
    return build_root(
        version=version,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (key.public_key,), 1)],
    )


def render(state: PackageState) -> dict[str, bytes]:
    return render_documents(state, PUBLIC_URL)


def new_bucket() -> MemoryStore:
    created = MemoryStore(f"rb-{uuid4().hex[:12]}", space="rebuild-tests")
    created.ensure_bucket()
    return created


class Region:
    """A log kept in the test (a package always in the same partition, as keyed records
    are) and a region whose replicator applies each record at its position, as a node."""

    def __init__(self, store: ObjectStore, replicator: ReleaseReplicator, origin: Path) -> None:
        self.store = store
        self.replicator = replicator
        self.origin = origin
        self.log: dict[int, list[bytes]] = {partition: [] for partition in range(PARTITIONS)}
        self.server: TestServer | None = None

    def release(self, project: str, version: str) -> ReleasePublished:
        assert self.server is not None
        zip_path = sample_zip(self.origin, project, version, {})
        return build_release(
            package=f"drupal/{project}",
            drupal_version=version,
            zip_path=zip_path,
            origin_url=str(self.server.make_url(f"/{zip_path.name}")),
        )

    async def publish(self, event: Any, key: SigningKey, *, apply: bool = True) -> None:
        value = seal(event.to_bytes(), [key])
        partition = zlib.crc32(event.package.encode()) % PARTITIONS
        self.log[partition].append(value)
        if apply:
            position = f"{TOPIC}:{partition}:{len(self.log[partition]) - 1}"
            await self.replicator.apply(value, position)

    def rebuild(
        self,
        root: TrustRoot,
        *,
        into: ObjectStore | None = None,
        policy: ReplicationPolicy = ReplicationPolicy(),
    ) -> RebuildReport:
        store = into or self.store
        return rebuild_region(
            TOPIC,
            ((partition, enumerate(values)) for partition, values in self.log.items()),
            store=store,
            states=BucketTarget(store, PackageStates(store, render=render)),
            root=root,
            policy=policy,
        )


@pytest.fixture
async def region(tmp_path: Path) -> AsyncIterator[Region]:
    origin = tmp_path / "origin"
    origin.mkdir()
    work_dir = tmp_path / "downloads"
    work_dir.mkdir()
    store = new_bucket()
    async with aiohttp.ClientSession() as session:
        replicator = ReleaseReplicator(
            store=store,
            session=session,
            root=lambda: root_delegating(OLD_KEY),
            public_url=PUBLIC_URL,
            work_dir=work_dir,
            region="eu",
        )
        built = Region(store, replicator, origin)
        server = TestServer(origin_app(origin))
        await server.start_server()
        built.server = server
        try:
            yield built
        finally:
            await server.close()


def snapshot(store: ObjectStore) -> dict[str, tuple[int, str, Any]]:
    return {key: (o.size, o.etag, o.last_modified) for key, o in store.list_objects("")}


def metadata(store: ObjectStore) -> dict[str, bytes]:
    """The bytes of every p2 document in the bucket and of each package's newest state (the
    live region keeps a few older ones too)."""
    found = {}
    for key in store.list_keys("p2/"):
        body = store.get(key)
        assert body is not None
        found[key] = body.data
    states = PackageStates(store, render=render)
    for package in states.packages():
        newest = states.load(package)
        assert newest is not None
        found[package] = newest.to_json()
    return found


async def publish_a_history(region: Region) -> list[ReleasePublished]:
    """Two versions of token (the second yanked) and one of pathauto."""
    token = [region.release("token", f"8.x-1.{n}") for n in (9, 10)]
    for event in [*token, region.release("pathauto", "8.x-1.12")]:
        await region.publish(event, OLD_KEY)
    yanked = ReleaseYanked(
        package="drupal/token",
        version="1.10.0",
        sequence=next_sequence(),
        reason="broken",
        yanked_at=utc_now(),
    )
    await region.publish(yanked, OLD_KEY)
    return token


async def test_a_rebuild_of_an_empty_region_is_byte_identical_to_the_live_one(
    region: Region,
) -> None:
    await publish_a_history(region)
    empty = new_bucket()

    report = region.rebuild(root_delegating(OLD_KEY), into=empty)

    assert (report.records, report.packages, report.states_written) == (4, 2, 2)
    rebuilt = metadata(empty)
    assert rebuilt == metadata(region.store)
    assert {"drupal/token", "drupal/pathauto", layout.p2_key("drupal/token")} <= set(rebuilt)
    # The new region has no zip yet: a fetch is parked for each of the three.
    assert report.fetches_parked == 3
    assert len(empty.list_keys("pending/")) == 3


async def test_a_healthy_region_is_left_as_it_is_and_a_damaged_one_repaired(
    region: Region,
) -> None:
    token = await publish_a_history(region)
    store = region.store
    healthy = snapshot(store)
    p2 = store.get(layout.p2_key("drupal/token"))
    assert p2 is not None

    report = region.rebuild(root_delegating(OLD_KEY))

    assert (report.records, report.packages) == (4, 2)
    assert (report.states_written, report.documents_written, report.fetches_parked) == (0, 0, 0)
    assert report.removed == [] and not report.refused
    assert snapshot(store) == healthy

    # Damage: a lost p2, a lost zip, a package that the log never gave.
    store.delete(layout.p2_key("drupal/token"))
    store.delete(layout.artifact_key(token[0].artifact.sha256))
    ghost = PackageState("drupal/ghost", sequence=5)
    store.put_bytes(layout.state_key("drupal/ghost", 5), ghost.to_json(), content_type="x/y")
    store.put_bytes(layout.p2_key("drupal/ghost"), b"{}", content_type="application/json")

    repaired = region.rebuild(root_delegating(OLD_KEY))

    assert repaired.removed == ["drupal/ghost"]
    assert repaired.documents_written == 1
    assert repaired.fetches_parked == 1
    restored = store.get(layout.p2_key("drupal/token"))
    assert restored is not None and restored.data == p2.data
    assert store.stat(layout.pending_key(token[0].artifact.sha256)) is not None
    assert store.list_keys("state/drupal/ghost/") == []
    assert store.stat(layout.p2_key("drupal/ghost")) is None


async def test_a_revoked_key_adds_nothing_through_a_rebuild(region: Region) -> None:
    applied = region.release("token", "8.x-1.9")
    await region.publish(applied, OLD_KEY)
    # Produced after the rotation revoked OLD_KEY: a live node would refuse it.
    sneaked = region.release("token", "8.x-1.10")
    await region.publish(sneaked, OLD_KEY, apply=False)
    # A record of a package the live node never applied, signed by the revoked key.
    await region.publish(region.release("pathauto", "8.x-1.12"), OLD_KEY, apply=False)

    report = region.rebuild(root_delegating(NEW_KEY, version=2))

    assert report.kept_from_earlier_roots == 1
    assert report.refused == {"undelegated-key": 2}
    states = PackageStates(region.store, render=render)
    state = states.load("drupal/token")
    assert state is not None and set(state.versions) == {"1.9.0"}
    assert states.load("drupal/pathauto") is None


async def test_a_package_the_policy_no_longer_serves_is_removed(region: Region) -> None:
    await publish_a_history(region)

    report = region.rebuild(
        root_delegating(OLD_KEY), policy=ReplicationPolicy(include=("drupal/token",))
    )

    assert report.removed == ["drupal/pathauto"]
    assert report.packages == 1
    assert region.store.list_keys("state/drupal/pathauto/") == []
    assert region.store.stat(layout.p2_key("drupal/pathauto")) is None
    assert region.store.stat(layout.p2_key("drupal/token")) is not None


async def test_a_zip_an_expunge_left_behind_is_deleted_and_none_is_parked_for_it(
    region: Region,
) -> None:
    token = await publish_a_history(region)
    gone = token[0].artifact.sha256
    await region.publish(
        ReleaseExpunged(
            package="drupal/token",
            version="1.9.0",
            sha256=gone,
            sequence=next_sequence(),
            reason="SA-CONTRIB-2026-001",
            expunged_at=utc_now(),
        ),
        OLD_KEY,
    )
    # The live delete was lost (a crash): the zip is back in the bucket.
    region.store.put_bytes(layout.artifact_key(gone), b"zip", content_type="application/zip")

    report = region.rebuild(root_delegating(OLD_KEY))

    assert region.store.stat(layout.artifact_key(gone)) is None
    assert report.fetches_parked == 0
    assert region.store.list_keys("pending/") == []


async def test_a_metadata_only_region_parks_no_fetch(region: Region) -> None:
    await publish_a_history(region)
    empty = new_bucket()

    report = region.rebuild(
        root_delegating(OLD_KEY),
        into=empty,
        policy=ReplicationPolicy(mode=ReplicationMode.METADATA_ONLY),
    )

    assert report.states_written == 2
    assert report.fetches_parked == 0
    assert empty.list_keys("pending/") == [] and empty.list_keys("artifacts/") == []
