"""streams.rebuild.rebuild_region on the real broker and store: a damaged region is repaired,
a healthy one is left byte for byte, and a revoked key adds nothing through a rebuild."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import ensure_topics
from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.store import S3Store, StoreLocation
from infra import devstack
from infra.devtools.origin_http import origin_app
from infra.devtools.sample_projects import sample_zip
from schemas import layout
from schemas.events import ReleasePublished, ReleaseYanked, utc_now
from schemas.package_state import PackageState, render_documents
from schemas.signing import SigningKey, seal
from schemas.trust import TrustRoot
from services.publishing.publisher import build_release, next_sequence
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.policy import ReplicationPolicy
from streams.rebuild import BucketTarget, log_partitions, rebuild_region
from streams.replication import ReleaseReplicator

pytestmark = pytest.mark.integration

PUBLIC_URL = "http://eu.fairstream.test"
ROOT_KEY = SigningKey(seed=b"\x20" * 32)
OLD_KEY = SigningKey(seed=b"\x21" * 32)
NEW_KEY = SigningKey(seed=b"\x22" * 32)


def root_delegating(key: SigningKey, version: int = 1) -> TrustRoot:
    return build_root(
        version=version,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (key.public_key,), 1)],
    )


@pytest.fixture
def store(location: StoreLocation) -> ObjectStore:
    created = S3Store(location, f"rb-{uuid4().hex[:12]}")
    created.ensure_bucket()
    return created


@pytest.fixture
def topic(stack: devstack.Stack) -> str:
    name = f"rebuild-{uuid4().hex[:10]}.fair.releases"
    ensure_topics(stack.broker_url, {name: 2})
    return name


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[tuple[TestServer, Path]]:
    root = tmp_path / "origin"
    root.mkdir()
    server = TestServer(origin_app(root))
    await server.start_server()
    try:
        yield server, root
    finally:
        await server.close()


class LiveRegion:
    """Events produced to the real topic and applied as a node would, at their real positions."""

    def __init__(
        self,
        stack: devstack.Stack,
        topic: str,
        replicator: ReleaseReplicator,
        origin: tuple[TestServer, Path],
    ) -> None:
        self.producer = EventProducer(stack.broker_url)
        self.topic = topic
        self.replicator = replicator
        self.server, self.root = origin

    def release(self, project: str, version: str) -> ReleasePublished:
        zip_path = sample_zip(self.root, project, version, {})
        return build_release(
            package=f"drupal/{project}",
            drupal_version=version,
            zip_path=zip_path,
            origin_url=str(self.server.make_url(f"/{zip_path.name}")),
        )

    async def publish(self, event: Any, key: SigningKey, *, apply: bool = True) -> None:
        value = seal(event.to_bytes(), [key])
        delivered = self.producer.produce(self.topic, event.package.encode(), value)
        if apply:
            position = f"{delivered.topic}:{delivered.partition}:{delivered.offset}"
            await self.replicator.apply(value, position)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as created:
        yield created


@pytest.fixture
def make_region(
    stack: devstack.Stack,
    topic: str,
    store: ObjectStore,
    session: aiohttp.ClientSession,
    origin: tuple[TestServer, Path],
    work_dir: Path,
) -> Callable[[TrustRoot], LiveRegion]:
    def make(root: TrustRoot) -> LiveRegion:
        replicator = ReleaseReplicator(
            store=store,
            session=session,
            root=lambda: root,
            public_url=PUBLIC_URL,
            work_dir=work_dir,
            region="eu",
        )
        return LiveRegion(stack, topic, replicator, origin)

    return make


def rebuild(stack: devstack.Stack, topic: str, store: ObjectStore, root: TrustRoot) -> Any:
    return rebuild_region(
        topic,
        log_partitions(stack.broker_url, topic),
        store=store,
        states=BucketTarget(
            store, PackageStates(store, render=lambda state: render_documents(state, PUBLIC_URL))
        ),
        root=root,
        policy=ReplicationPolicy(),
    )


def snapshot(store: ObjectStore) -> dict[str, tuple[int, str, Any]]:
    return {key: (o.size, o.etag, o.last_modified) for key, o in store.list_objects("")}


async def test_a_healthy_region_is_left_as_it_is_and_a_damaged_one_repaired(
    stack: devstack.Stack,
    topic: str,
    store: ObjectStore,
    make_region: Callable[[TrustRoot], LiveRegion],
) -> None:
    root = root_delegating(OLD_KEY)
    region = make_region(root)
    token = [region.release("token", f"8.x-1.{n}") for n in (9, 10)]
    for event in [*token, region.release("pathauto", "8.x-1.12")]:
        await region.publish(event, OLD_KEY)
    await region.publish(
        ReleaseYanked(
            package="drupal/token",
            version="1.10.0",
            sequence=next_sequence(),
            reason="broken",
            yanked_at=utc_now(),
        ),
        OLD_KEY,
    )
    healthy = snapshot(store)
    p2 = store.get(layout.p2_key("drupal/token"))
    assert p2 is not None

    report = rebuild(stack, topic, store, root)

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

    repaired = rebuild(stack, topic, store, root)

    assert repaired.removed == ["drupal/ghost"]
    assert repaired.documents_written == 1
    assert repaired.fetches_parked == 1
    restored = store.get(layout.p2_key("drupal/token"))
    assert restored is not None and restored.data == p2.data
    assert store.stat(layout.pending_key(token[0].artifact.sha256)) is not None
    assert store.list_keys("state/drupal/ghost/") == []
    assert store.stat(layout.p2_key("drupal/ghost")) is None


async def test_a_revoked_key_adds_nothing_through_a_rebuild(
    stack: devstack.Stack,
    topic: str,
    store: ObjectStore,
    make_region: Callable[[TrustRoot], LiveRegion],
) -> None:
    old_root = root_delegating(OLD_KEY)
    region = make_region(old_root)
    applied = region.release("token", "8.x-1.9")
    await region.publish(applied, OLD_KEY)
    # Produced after the rotation revoked OLD_KEY: a live node would refuse it.
    sneaked = region.release("token", "8.x-1.10")
    await region.publish(sneaked, OLD_KEY, apply=False)
    new_root = root_delegating(NEW_KEY, version=2)

    report = rebuild(stack, topic, store, new_root)

    assert report.kept_from_earlier_roots == 1
    assert report.refused == {"undelegated-key": 1}
    states = PackageStates(store, render=lambda state: render_documents(state, PUBLIC_URL))
    state = states.load("drupal/token")
    assert state is not None and set(state.versions) == {"1.9.0"}
