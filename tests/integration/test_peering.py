"""streams.peering.PeerFollower end to end: a second embedded Tansu is the peer's cluster, with
its own trust root; a real ReleaseReplicator writes into our S3 bucket, refusals go to our
rejected topic on our broker, and zips come from real origins over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from uuid import uuid4

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.kafka_producers import Delivered, EventProducer
from connectors.kafka_reading import group_positions, read_partition
from connectors.kafka_topics import ensure_topics
from connectors.object_store import ObjectStore
from connectors.origin import FetchLimits
from connectors.store import S3Store, StoreLocation
from infra import devstack
from infra.devtools.origin_http import origin_app
from infra.devtools.sample_projects import sample_zip
from schemas import layout
from schemas.composer import expand
from schemas.events import ReleasePublished, ReleaseRejected, utc_now
from schemas.package_state import PackageState
from schemas.signing import SignedEvent, SigningKey, seal
from services.publishing.publisher import build_release
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.artifacts import ReplicaRegistry
from streams.dead_letter import DeadLetterFile
from streams.peer_config import PeerPolicy, PeerSettings, with_peer_namespaces
from streams.peer_verdict import PEER_NAMESPACE_FORBIDDEN, PEER_REFUSED
from streams.peering import PeerFollower, peer_group
from streams.policy import ReplicationPolicy
from streams.rejections import Rejections
from streams.replication import ReleaseReplicator
from streams.sinks import ProducerSink

pytestmark = pytest.mark.integration

PUBLIC_URL = "http://eu.fairstream.test:8080"
LIMITS = FetchLimits(connect_timeout=2.0, read_timeout=2.0)
SESSION_TIMEOUT = 6.0  # Tansu lets a member join in about half of it

# Our network: drupal.org owns drupal/*.
OUR_ROOT_KEY = SigningKey(seed=b"\x50" * 32)
DRUPAL_KEY = SigningKey(seed=b"\x51" * 32)
OUR_ROOT = build_root(
    version=1,
    root_keys=[OUR_ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[DelegationSpec("drupal/*", "drupal.org", (DRUPAL_KEY.public_key,), 1)],
)

# The TYPO3 network: its root delegates typo3/* to its publisher, and (hostile) drupal/* too.
TYPO3_ROOT_KEY = SigningKey(seed=b"\x60" * 32)
TYPO3_KEY = SigningKey(seed=b"\x61" * 32)
TYPO3_ROOT = build_root(
    version=1,
    root_keys=[TYPO3_ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[
        DelegationSpec("typo3/*", "typo3.org", (TYPO3_KEY.public_key,), 1),
        DelegationSpec("drupal/*", "typo3.org", (TYPO3_KEY.public_key,), 1),
    ],
)

# A third network that mirrors TYPO3's releases: trusted here only as a download source.
MIRROR_ROOT_KEY = SigningKey(seed=b"\x70" * 32)
MIRROR_KEY = SigningKey(seed=b"\x71" * 32)
MIRROR_ROOT = build_root(
    version=1,
    root_keys=[MIRROR_ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[DelegationSpec("typo3/*", "typo3-mirror.example", (MIRROR_KEY.public_key,), 1)],
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def peer_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    """The peer's own cluster: a second embedded Tansu (and S3 server), stopped at the end."""
    data_dir = tmp_path_factory.mktemp("peer-stack")
    started = devstack.up(data_dir)
    try:
        yield started
    finally:
        devstack.down(data_dir)


@pytest.fixture
def peer_producer(peer_stack: devstack.Stack) -> Iterator[EventProducer]:
    created = EventProducer(peer_stack.broker_url, delivery_timeout=10.0)
    try:
        yield created
    finally:
        created.close()


@pytest.fixture
def store(location: StoreLocation) -> ObjectStore:
    created = S3Store(location, unique("peering"))
    created.ensure_bucket()
    return created


class RejectedTopic:
    """Our rejected topic on our broker, recorded to as NodeStream does (``Rejections``,
    durable on return), through a sink on a plain producer instead of the Faust app's."""

    def __init__(self, broker_url: str, dead_letters: Path) -> None:
        self.broker_url = broker_url
        self.name = unique("fair.rejected")
        ensure_topics(broker_url, {self.name: 1})
        self._producer = EventProducer(broker_url, delivery_timeout=10.0)
        self.rejections = Rejections(
            ProducerSink(self._producer, self.name),
            DeadLetterFile(dead_letters),
            region="eu",
            clock=utc_now,
        )

    def read(self) -> list[ReleaseRejected]:
        return [
            ReleaseRejected.from_bytes(value)
            for _, value in read_partition(self.broker_url, self.name, 0)
        ]

    def close(self) -> None:
        self._producer.close()


@pytest.fixture
def rejected(stack: devstack.Stack, tmp_path: Path) -> Iterator[RejectedTopic]:
    created = RejectedTopic(stack.broker_url, tmp_path / "dead-letter-eu.jsonl")
    try:
        yield created
    finally:
        created.close()


@pytest.fixture
def origin_root(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    root.mkdir()
    return root


@pytest.fixture
def mirror_root(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    root.mkdir()
    return root


@pytest.fixture
def requests() -> list[str]:
    """Paths asked of the origin and the mirror, as ``origin:/x.zip`` / ``mirror:/x.zip``."""
    return []


async def _serve(root: Path, label: str, requests: list[str]) -> TestServer:
    app = origin_app(root)

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        requests.append(f"{label}:{request.path}")

    app.on_response_prepare.append(record)
    running = TestServer(app)
    await running.start_server()
    return running


@pytest.fixture
async def origin(origin_root: Path, requests: list[str]) -> AsyncIterator[TestServer]:
    running = await _serve(origin_root, "origin", requests)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def mirror(mirror_root: Path, requests: list[str]) -> AsyncIterator[TestServer]:
    running = await _serve(mirror_root, "mirror", requests)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as created:
        yield created


@pytest.fixture
def registry() -> ReplicaRegistry:
    return ReplicaRegistry("eu")


@pytest.fixture
def make_peer(peer_stack: devstack.Stack) -> Callable[..., PeerSettings]:
    """A peer on the peer cluster, with a topic of its own (created with ``partitions``)."""

    def make(
        name: str,
        policy: PeerPolicy,
        *,
        root: bytes = b"",
        namespaces: tuple[str, ...] = (),
        partitions: int = 2,
    ) -> PeerSettings:
        topic = unique(f"{name}.releases")
        ensure_topics(peer_stack.broker_url, {topic: partitions})
        return PeerSettings(name, peer_stack.broker_url, topic, root, policy, namespaces)

    return make


@pytest.fixture
def typo3(make_peer: Callable[..., PeerSettings]) -> PeerSettings:
    return make_peer(
        "typo3",
        PeerPolicy.CANONICAL,
        root=TYPO3_ROOT.sign([TYPO3_ROOT_KEY]),
        namespaces=("typo3/*",),
    )


@pytest.fixture
def make_follower(
    store: ObjectStore,
    session: aiohttp.ClientSession,
    work_dir: Path,
    registry: ReplicaRegistry,
    rejected: RejectedTopic,
) -> Callable[..., tuple[PeerFollower, ReleaseReplicator]]:
    """A follower of ``peer`` feeding a real replicator of region eu (of this test's group),
    with the test's replica registry unless given another (a restarted worker's)."""
    region_group = unique("fairstream-node-eu")

    def make(
        peer: PeerSettings,
        *,
        serves: Sequence[PeerSettings] = (),
        sources: ReplicaRegistry = registry,
    ) -> tuple[PeerFollower, ReleaseReplicator]:
        replicator = ReleaseReplicator(
            store=store,
            session=session,
            root=lambda: OUR_ROOT,
            public_url=PUBLIC_URL,
            work_dir=work_dir,
            region="eu",
            policy=with_peer_namespaces(ReplicationPolicy(), [peer, *serves]),
            limits=LIMITS,
            replicas=sources,
            # As NodeStream._owns answers for peer positions.
            owns=lambda position: position.startswith("peer/"),
        )
        follower = PeerFollower(
            peer,
            group=peer_group(region_group, peer.name),
            replicator=replicator,
            our_root=lambda: OUR_ROOT,
            sources=sources,
            reject=rejected.rejections.record,
            session_timeout=SESSION_TIMEOUT,
        )
        return follower, replicator

    return make


def typo3_release(
    server: TestServer, root: Path, project: str, version: str = "1.2.0"
) -> ReleasePublished:
    zip_path = sample_zip(root, project, version, {"typo3/cms-core": "^12"})
    return build_release(
        package=f"typo3/{project}",
        drupal_version=version,
        zip_path=zip_path,
        origin_url=str(server.make_url(f"/{zip_path.name}")),
    )


def publish(
    producer: EventProducer, peer: PeerSettings, records: Sequence[tuple[str, bytes]]
) -> list[Delivered]:
    return producer.produce_many(peer.topic, [(key.encode(), value) for key, value in records])


async def follow_until_committed(
    follower: PeerFollower, delivered: Sequence[Delivered], *, timeout: float = 60.0
) -> None:
    """Run the follower until it committed every delivered record, then stop it."""
    ends: dict[int, int] = {}
    for record in delivered:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(timeout):
            while any(follower.committed.get(p, 0) < end for p, end in ends.items()):
                assert not task.done(), "the follower returned before it was stopped"
                await asyncio.sleep(0.1)
    finally:
        follower.stop()
        await asyncio.wait_for(task, 15)


def p2_versions(store: ObjectStore, package: str) -> dict[str, dict[str, object]]:
    body = store.get(layout.p2_key(package))
    assert body is not None, f"no p2 document for {package}"
    document = orjson.loads(body.data)
    return {entry["version"]: entry for entry in expand(document["packages"][package])}


# ---------------------------------------------------------------------------
# Canonical peers
# ---------------------------------------------------------------------------


async def test_a_canonical_peer_publishes_its_namespace_and_never_drupal(
    typo3: PeerSettings,
    make_follower: Callable[..., tuple[PeerFollower, ReleaseReplicator]],
    peer_producer: EventProducer,
    peer_stack: devstack.Stack,
    store: ObjectStore,
    rejected: RejectedTopic,
    origin: TestServer,
    origin_root: Path,
    requests: list[str],
) -> None:
    news = typo3_release(origin, origin_root, "news")
    blog = typo3_release(origin, origin_root, "blog", "2.0.1")
    token_zip = sample_zip(origin_root, "token", "8.x-1.9", {"drupal/core": "^10"})
    # Validly signed under the peer's root, which delegates drupal/* to its key.
    hostile = build_release(
        package="drupal/token",
        drupal_version="8.x-1.9",
        zip_path=token_zip,
        origin_url=str(origin.make_url(f"/{token_zip.name}")),
    )
    hostile_value = seal(hostile.to_bytes(), [TYPO3_KEY])
    delivered = publish(
        peer_producer,
        typo3,
        [
            ("typo3/news", seal(news.to_bytes(), [TYPO3_KEY])),
            ("drupal/token", hostile_value),
            ("typo3/blog", seal(blog.to_bytes(), [TYPO3_KEY])),
        ],
    )
    follower, _ = make_follower(typo3)

    await follow_until_committed(follower, delivered)

    # The typo3 packages are ours to serve now, zips fetched into our bucket.
    for event in (news, blog):
        [entry] = p2_versions(store, event.package).values()
        assert entry["version"] == event.version
        dist = entry["dist"]
        assert isinstance(dist, dict)
        assert dist["shasum"] == event.artifact.sha1
        assert dist["url"] == (
            f"{PUBLIC_URL}/dist/{event.package}/{event.version}/{event.artifact.sha256}.zip"
        )
        assert store.stat(layout.artifact_key(event.artifact.sha256)) is not None
        state = store.get(layout.state_key(event.package, event.sequence))
        assert state is not None
        [applied_at] = PackageState.from_json(state.data).applied.values()
        assert applied_at.startswith(f"peer/typo3/{typo3.topic}:")
    # drupal/token from the peer: refused, never fetched, never in our metadata.
    assert store.get(layout.p2_key("drupal/token")) is None
    assert store.list_keys(layout.state_prefix("drupal/token")) == []
    assert f"origin:/{token_zip.name}" not in requests
    [refusal] = rejected.read()
    assert refusal.reason == PEER_NAMESPACE_FORBIDDEN
    assert refusal.topic == f"peer:typo3/{typo3.topic}"
    assert (refusal.partition, refusal.offset) == (delivered[1].partition, delivered[1].offset)
    assert refusal.key == "drupal/token"
    assert refusal.record == hostile_value
    assert "no peer can speak for" in refusal.detail
    assert follower.counts == {"applied": 2, PEER_NAMESPACE_FORBIDDEN: 1}
    # The region's group on the peer's cluster committed past every record.
    positions = group_positions(peer_stack.broker_url, follower.group, typo3.topic)
    committed = {p.partition: p.committed for p in positions}
    for record in delivered:
        assert (committed[record.partition] or 0) > record.offset


async def test_a_bad_record_from_a_peer_does_not_stop_the_ones_behind_it(
    make_peer: Callable[..., PeerSettings],
    make_follower: Callable[..., tuple[PeerFollower, ReleaseReplicator]],
    peer_producer: EventProducer,
    store: ObjectStore,
    rejected: RejectedTopic,
    origin: TestServer,
    origin_root: Path,
) -> None:
    peer = make_peer(
        "typo3",
        PeerPolicy.CANONICAL,
        root=TYPO3_ROOT.sign([TYPO3_ROOT_KEY]),
        namespaces=("typo3/*",),
        partitions=1,
    )
    news = typo3_release(origin, origin_root, "news")
    good = seal(news.to_bytes(), [TYPO3_KEY])
    envelope = SignedEvent.from_bytes(good)
    # Altered after signing: the signatures no longer cover the payload.
    altered = dataclasses.replace(news, composer={**news.composer, "description": "backdoored"})
    tampered = SignedEvent(altered.to_bytes(), envelope.signatures).to_bytes()
    outsider = seal(news.to_bytes(), [SigningKey(seed=b"\x99" * 32)])
    delivered = publish(
        peer_producer,
        peer,
        [
            ("typo3/news", b"\x00 not an event at all"),
            ("typo3/news", tampered),
            ("typo3/news", outsider),
            ("typo3/news", good),
        ],
    )
    follower, _ = make_follower(peer)

    await follow_until_committed(follower, delivered)

    assert [(r.offset, r.reason) for r in rejected.read()] == [
        (delivered[0].offset, "malformed"),
        (delivered[1].offset, "bad-signature"),
        (delivered[2].offset, "undelegated-key"),
    ]
    assert list(p2_versions(store, "typo3/news")) == ["1.2.0"]
    assert follower.counts["applied"] == 1


# ---------------------------------------------------------------------------
# Source peers
# ---------------------------------------------------------------------------


@pytest.fixture
def typo3_mirror(make_peer: Callable[..., PeerSettings]) -> PeerSettings:
    return make_peer("mirror", PeerPolicy.SOURCE, root=MIRROR_ROOT.sign([MIRROR_ROOT_KEY]))


async def test_a_source_peer_delivers_a_zip_the_origin_no_longer_has(
    typo3: PeerSettings,
    typo3_mirror: PeerSettings,
    make_follower: Callable[..., tuple[PeerFollower, ReleaseReplicator]],
    peer_producer: EventProducer,
    store: ObjectStore,
    registry: ReplicaRegistry,
    rejected: RejectedTopic,
    origin: TestServer,
    origin_root: Path,
    mirror: TestServer,
    mirror_root: Path,
    requests: list[str],
) -> None:
    news = typo3_release(origin, origin_root, "news")
    zip_name = f"news-{news.drupal_version}.zip"
    (mirror_root / zip_name).write_bytes((origin_root / zip_name).read_bytes())
    (origin_root / zip_name).unlink()  # gone from the canonical origin
    mirrored = dataclasses.replace(
        news,
        artifact=dataclasses.replace(
            news.artifact, origin_url=str(mirror.make_url(f"/{zip_name}"))
        ),
    )
    mirrored_delivered = publish(
        peer_producer, typo3_mirror, [("typo3/news", seal(mirrored.to_bytes(), [MIRROR_KEY]))]
    )
    source_follower, _ = make_follower(typo3_mirror, serves=[typo3])

    await follow_until_committed(source_follower, mirrored_delivered)

    # A source changes no metadata; its URL is one more place to fetch that sha256 from,
    # never a URL clients are redirected to.
    assert store.list_keys("") == []
    assert registry.sources(news.artifact.sha256) == [mirrored.artifact.origin_url]
    assert registry.urls(news.artifact.sha256) == []
    assert source_follower.counts == {"sources": 1}

    # A restarted worker (empty registry, the group's offsets past the record) reads the
    # sources back before it joins the group.
    restarted = ReplicaRegistry("eu")
    again, _ = make_follower(typo3_mirror, serves=[typo3], sources=restarted)
    task = asyncio.create_task(again.run())
    async with asyncio.timeout(30):
        while not restarted.sources(news.artifact.sha256):
            await asyncio.sleep(0.1)
    again.stop()
    await asyncio.wait_for(task, 15)
    assert restarted.sources(news.artifact.sha256) == [mirrored.artifact.origin_url]
    assert again.counts == {}  # nothing re-read in the group: the offsets held

    canonical_delivered = publish(
        peer_producer, typo3, [("typo3/news", seal(news.to_bytes(), [TYPO3_KEY]))]
    )
    canonical_follower, _ = make_follower(typo3)
    await follow_until_committed(canonical_follower, canonical_delivered)

    assert requests == [f"origin:/{zip_name}", f"mirror:/{zip_name}"]
    stored = store.get(layout.artifact_key(news.artifact.sha256))
    assert stored is not None
    assert stored.data == (mirror_root / zip_name).read_bytes()
    assert list(p2_versions(store, "typo3/news")) == ["1.2.0"]
    assert store.stat(layout.pending_key(news.artifact.sha256)) is None
    assert rejected.read() == []


async def test_a_source_peer_with_other_bytes_is_not_taken(
    typo3: PeerSettings,
    typo3_mirror: PeerSettings,
    make_follower: Callable[..., tuple[PeerFollower, ReleaseReplicator]],
    peer_producer: EventProducer,
    store: ObjectStore,
    origin: TestServer,
    origin_root: Path,
    mirror: TestServer,
    mirror_root: Path,
    requests: list[str],
) -> None:
    news = typo3_release(origin, origin_root, "news")
    zip_name = f"news-{news.drupal_version}.zip"
    (origin_root / zip_name).unlink()
    # The mirror signs the right sha256 but serves other bytes under it.
    other = sample_zip(mirror_root / "other", "news", "6.6.6")
    (mirror_root / zip_name).write_bytes(other.read_bytes())
    lying = dataclasses.replace(
        news,
        artifact=dataclasses.replace(
            news.artifact, origin_url=str(mirror.make_url(f"/{zip_name}"))
        ),
    )
    source_follower, _ = make_follower(typo3_mirror, serves=[typo3])
    await follow_until_committed(
        source_follower,
        publish(
            peer_producer, typo3_mirror, [("typo3/news", seal(lying.to_bytes(), [MIRROR_KEY]))]
        ),
    )
    canonical_follower, _ = make_follower(typo3)

    await follow_until_committed(
        canonical_follower,
        publish(peer_producer, typo3, [("typo3/news", seal(news.to_bytes(), [TYPO3_KEY]))]),
    )

    assert requests == [f"origin:/{zip_name}", f"mirror:/{zip_name}"]
    # No bytes but the signed ones are ever stored: the version is published, its zip
    # parked for a retry (the origin may come back).
    assert store.stat(layout.artifact_key(news.artifact.sha256)) is None
    assert store.stat(layout.pending_key(news.artifact.sha256)) is not None
    assert list(p2_versions(store, "typo3/news")) == ["1.2.0"]


# ---------------------------------------------------------------------------
# Refused peers, and a peer that is down
# ---------------------------------------------------------------------------


async def test_a_refused_peer_changes_nothing_and_its_records_are_recorded(
    make_peer: Callable[..., PeerSettings],
    make_follower: Callable[..., tuple[PeerFollower, ReleaseReplicator]],
    peer_producer: EventProducer,
    store: ObjectStore,
    registry: ReplicaRegistry,
    rejected: RejectedTopic,
    origin: TestServer,
    origin_root: Path,
    requests: list[str],
) -> None:
    hostile = make_peer("hostile", PeerPolicy.REFUSE)
    news = typo3_release(origin, origin_root, "news")
    values = [
        ("typo3/news", seal(news.to_bytes(), [TYPO3_KEY])),
        ("drupal/token", b"whatever it is"),
    ]
    delivered = publish(peer_producer, hostile, values)
    follower, _ = make_follower(hostile)

    await follow_until_committed(follower, delivered)

    assert store.list_keys("") == []
    assert registry.sources(news.artifact.sha256) == []
    assert requests == []
    refusals = sorted(rejected.read(), key=lambda r: r.key or "")
    assert [(r.key, r.reason, r.topic) for r in refusals] == [
        ("drupal/token", PEER_REFUSED, f"peer:hostile/{hostile.topic}"),
        ("typo3/news", PEER_REFUSED, f"peer:hostile/{hostile.topic}"),
    ]
    assert {r.record for r in refusals} == {value for _, value in values}


async def test_a_peer_cluster_that_is_down_only_logs_warnings(
    make_follower: Callable[..., tuple[PeerFollower, ReleaseReplicator]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = PeerSettings(
        "typo3",
        f"kafka://127.0.0.1:{port}",
        "fair.releases",
        TYPO3_ROOT.sign([TYPO3_ROOT_KEY]),
        PeerPolicy.CANONICAL,
        ("typo3/*",),
    )
    follower, _ = make_follower(down)
    caplog.set_level(logging.WARNING, logger="streams.peering")

    task = asyncio.create_task(follower.run())
    await asyncio.sleep(5)

    assert not task.done()
    warnings = [r for r in caplog.records if r.name == "streams.peering"]
    assert warnings
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert "following again" in warnings[0].getMessage()
    follower.stop()
    await asyncio.wait_for(task, 15)
