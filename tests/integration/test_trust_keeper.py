"""streams.trust_keeper.TrustKeeper against the real embedded broker (Tansu) and S3 store:
pinned root, rotations read from the trust topic, roots kept in the bucket."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import orjson
import pytest

from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import ensure_topics
from connectors.object_store import ObjectStore
from connectors.store import S3Store, StoreLocation
from infra import devstack
from schemas import layout
from schemas.errors import RootRotationError
from schemas.signing import SignedEvent, SigningKey
from schemas.trust import TrustRoot
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.trust_keeper import TrustKeeper

pytestmark = pytest.mark.integration

ROOT_V1_KEY = SigningKey(seed=b"\x31" * 32)
ROOT_V2_KEY = SigningKey(seed=b"\x32" * 32)
ROOT_V3_KEY = SigningKey(seed=b"\x33" * 32)
PUBLISHER = SigningKey(seed=b"\x41" * 32)
ATTACKER = SigningKey(seed=b"\x66" * 32)


def root(version: int, root_key: SigningKey, publisher: SigningKey = PUBLISHER) -> TrustRoot:
    return build_root(
        version=version,
        root_keys=[root_key.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (publisher.public_key,), 1)],
    )


V1 = root(1, ROOT_V1_KEY)
V2 = root(2, ROOT_V2_KEY)
V3 = root(3, ROOT_V3_KEY)
PINNED = V1.sign([ROOT_V1_KEY])
SIGNED_V2 = V2.sign([ROOT_V1_KEY, ROOT_V2_KEY])
SIGNED_V3 = V3.sign([ROOT_V2_KEY, ROOT_V3_KEY])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:12]}"


@pytest.fixture
def store(location: StoreLocation) -> ObjectStore:
    created = S3Store(location, unique("trust"))
    created.ensure_bucket()
    return created


@pytest.fixture
def topic(stack: devstack.Stack) -> str:
    name = unique("fair.trust")
    ensure_topics(stack.broker_url, {name: 1})
    return name


@pytest.fixture
def publish(producer: EventProducer, topic: str) -> Callable[[bytes], int]:
    """Produce a signed root to the test's trust topic; returns its offset."""

    def produce(value: bytes) -> int:
        return producer.produce(topic, b"trust-root", value).offset

    return produce


@pytest.fixture
def make_keeper(
    stack: devstack.Stack, store: ObjectStore, topic: str
) -> Callable[..., TrustKeeper]:
    def make(*, pinned: bytes = PINNED, topic_name: str | None = None) -> TrustKeeper:
        return TrustKeeper(
            pinned, store=store, broker_url=stack.broker_url, topic=topic_name or topic
        )

    return make


def kept_roots(store: ObjectStore) -> list[str]:
    return sorted(store.list_keys("trust/roots/"))


def saved_position(store: ObjectStore) -> int | None:
    body = store.get(layout.TRUST_POSITION)
    return None if body is None else int(orjson.loads(body.data)["next_offset"])


def test_a_keeper_starts_from_the_pinned_root(
    make_keeper: Callable[..., TrustKeeper], store: ObjectStore
) -> None:
    keeper = make_keeper()
    assert keeper.root == V1

    keeper.load()  # an empty bucket: nothing verified before
    assert keeper.refresh() == []  # an empty topic: nothing to follow

    assert keeper.root == V1
    assert kept_roots(store) == []
    assert saved_position(store) is None


def test_a_rotation_on_the_trust_topic_comes_into_force_and_is_kept(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    publish: Callable[[bytes], int],
) -> None:
    keeper = make_keeper()
    keeper.load()
    offset = publish(SIGNED_V2)

    assert keeper.refresh() == []

    assert keeper.root == V2
    assert kept_roots(store) == [layout.trust_root_key(2)]
    kept = store.get(layout.trust_root_key(2))
    assert kept is not None
    assert kept.data == SIGNED_V2  # the signed bytes, verifiable again on load
    assert saved_position(store) == offset + 1


def test_a_new_keeper_loads_the_kept_roots_without_reading_the_topic(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    publish: Callable[[bytes], int],
) -> None:
    first = make_keeper()
    publish(SIGNED_V2)
    publish(SIGNED_V3)
    first.refresh()
    assert first.root == V3

    # A topic nobody ever wrote to (not even created): only the bucket can say v3.
    restarted = make_keeper(topic_name=unique("fair.trust.never-written"))
    assert restarted.root == V1
    restarted.load()

    assert restarted.root == V3
    assert kept_roots(store) == [layout.trust_root_key(2), layout.trust_root_key(3)]


def test_a_restarted_keeper_does_not_read_the_topic_again(
    make_keeper: Callable[..., TrustKeeper],
    publish: Callable[[bytes], int],
) -> None:
    first = make_keeper()
    publish(V2.sign([ROOT_V2_KEY]))  # refused
    publish(SIGNED_V2)
    assert len(first.refresh()) == 1

    restarted = make_keeper()
    restarted.load()

    assert restarted.root == V2
    assert restarted.refresh() == []  # the refused record is behind the saved position


def test_a_rotation_signed_only_by_the_new_root_keys_is_refused(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    publish: Callable[[bytes], int],
) -> None:
    keeper = make_keeper()
    value = V2.sign([ROOT_V2_KEY])
    offset = publish(value)

    [refused] = keeper.refresh()

    assert refused.offset == offset
    assert refused.value == value
    assert isinstance(refused.error, RootRotationError)
    assert "signed only by the new keys" in str(refused.error)
    assert keeper.root == V1
    assert kept_roots(store) == []
    assert saved_position(store) == offset + 1


def test_a_rotation_signed_by_an_attacker_is_refused_and_a_genuine_one_still_follows(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    publish: Callable[[bytes], int],
) -> None:
    keeper = make_keeper()
    evil = root(2, ATTACKER, publisher=ATTACKER)
    publish(evil.sign([ATTACKER]))
    publish(b"not a root at all")
    publish(SIGNED_V2)

    refused = keeper.refresh()

    assert [type(r.error) for r in refused] == [RootRotationError, RootRotationError]
    assert keeper.root == V2
    assert kept_roots(store) == [layout.trust_root_key(2)]


def test_records_already_read_are_not_read_again(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    publish: Callable[[bytes], int],
) -> None:
    keeper = make_keeper()
    publish(V2.sign([ROOT_V2_KEY]))

    assert len(keeper.refresh()) == 1
    assert keeper.refresh() == []  # were it read again, it would be refused again

    last = publish(SIGNED_V2)
    assert keeper.refresh() == []
    assert keeper.root == V2
    assert keeper.refresh() == []
    assert keeper.root == V2
    assert saved_position(store) == last + 1


def test_an_old_root_replayed_on_the_topic_changes_nothing(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    publish: Callable[[bytes], int],
) -> None:
    keeper = make_keeper()
    publish(SIGNED_V2)
    publish(SIGNED_V3)
    keeper.refresh()
    publish(SIGNED_V2)  # a rollback attempt with a genuinely signed old root

    keeper.refresh()

    assert keeper.root == V3
    kept = store.get(layout.trust_root_key(2))
    assert kept is not None and kept.data == SIGNED_V2


def tampered_v2() -> bytes:
    """Root v2 granting drupal/* to an attacker, under the genuine v2's signatures."""
    genuine = SignedEvent.from_bytes(SIGNED_V2)
    evil = root(2, ROOT_V2_KEY, publisher=ATTACKER)
    return SignedEvent(payload=evil.to_bytes(), signatures=genuine.signatures).to_bytes()


@pytest.mark.parametrize(
    "kept",
    [
        pytest.param(tampered_v2(), id="payload-swapped"),
        pytest.param(root(2, ATTACKER, publisher=ATTACKER).sign([ATTACKER]), id="attacker-signed"),
        pytest.param(V2.sign([ROOT_V2_KEY]), id="new-keys-only"),
        pytest.param(b"garbage", id="garbage"),
    ],
)
def test_a_tampered_root_kept_in_the_bucket_is_refused_on_load(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    publish: Callable[[bytes], int],
    kept: bytes,
) -> None:
    first = make_keeper()
    publish(SIGNED_V2)
    first.refresh()
    assert first.root == V2
    store.put_bytes(layout.trust_root_key(2), kept, content_type="application/octet-stream")

    restarted = make_keeper()
    with pytest.raises(RootRotationError):
        restarted.load()

    assert restarted.root == V1


def test_a_kept_root_that_does_not_follow_the_pinned_one_is_refused_on_load(
    make_keeper: Callable[..., TrustKeeper], store: ObjectStore
) -> None:
    # v3 kept without v2: a gap, as when someone deletes a kept root.
    store.put_bytes(layout.trust_root_key(3), SIGNED_V3, content_type="application/octet-stream")

    keeper = make_keeper()
    with pytest.raises(RootRotationError, match="skips v2"):
        keeper.load()


def test_rotations_produced_in_one_batch_are_all_followed(
    make_keeper: Callable[..., TrustKeeper],
    store: ObjectStore,
    producer: EventProducer,
    topic: str,
) -> None:
    # Tansu under-reports the high watermark of a batch (DESIGN.md): reading to the end
    # must still see every record of it.
    keeper = make_keeper()
    delivered = producer.produce_many(
        topic, [(b"trust-root", SIGNED_V2), (b"trust-root", SIGNED_V3)]
    )

    assert keeper.refresh() == []

    assert keeper.root == V3
    assert kept_roots(store) == [layout.trust_root_key(2), layout.trust_root_key(3)]
    assert saved_position(store) == delivered[-1].offset + 1
