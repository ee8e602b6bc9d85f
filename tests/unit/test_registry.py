"""The directory's pure decisions: admission, defederation on an injected clock, and the
choice of node per package version (never one that has not applied it)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from schemas import codec
from schemas.errors import MalformedEventError, SignatureError
from schemas.federation import (
    SILENT_AFTER,
    NodeBook,
    NodeRegistration,
    NodeStatus,
    PartitionSync,
    seal_registration,
    seal_status,
)
from schemas.package_state import VersionRecord
from schemas.signing import SigningKey, seal
from services.directory.registry import (
    ADMITTED,
    DROPPED,
    PENDING,
    REFUSED,
    RegionMap,
    Registry,
    choose,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TOPIC = "fair.releases"


def registration(key: SigningKey, region: str, mode: str = "full") -> NodeRegistration:
    return NodeRegistration(
        node_id=key.public_key.keyid,
        public_key=key.public_key.raw.hex(),
        region=region,
        base_url=f"http://{region}.example",
        mode=mode,
        include=("drupal/*",),
        exclude=(),
        capacity_bytes=None,
        registered_at=T0,
    )


def heartbeat(key: SigningKey, region: str, applied: int, behind: int = 0) -> NodeStatus:
    return NodeStatus(
        node_id=key.public_key.keyid,
        region=region,
        base_url=f"http://{region}.example",
        sequence=1,
        heartbeat_at=T0,
        partitions=(PartitionSync(TOPIC, 0, applied, applied + behind, behind),),
        events_behind=behind,
        behind_is_lower_bound=False,
        seconds_behind=None,
        artifacts_pending=0,
        rejected_total=0,
        store_bytes=0,
        trust_root_version=1,
        state="in-sync" if behind == 0 else "catching-up",
    )


def record(offset: int) -> VersionRecord:
    return VersionRecord(
        drupal_version="8.x-1.9",
        sha256="a" * 64,
        sha1="b" * 40,
        size=10,
        composer={},
        origin_url="https://ftp.drupal.org/token.zip",
        position=f"{TOPIC}:0:{offset}",
    )


def admitted_registry(*nodes: tuple[SigningKey, str, int]) -> Registry:
    registry = Registry(silence_window=timedelta(hours=24), stale_after=timedelta(seconds=30))
    for key, region, applied in nodes:
        registry.observe(registration(key, region), T0)
        registry.observe(heartbeat(key, region, applied), T0)
        registry.record_test(key.public_key.keyid, True, "ok", T0)
    return registry


def pick(registry: Registry, offset: int, region: str | None, now: datetime = T0) -> str | None:
    return choose(
        registry,
        package="drupal/token",
        version="1.9.0",
        record=record(offset),
        client_region=region,
        now=now,
    ).region


def test_the_client_goes_to_its_region_only_for_versions_it_has_applied() -> None:
    eu, us = SigningKey.generate(), SigningKey.generate()
    registry = admitted_registry((eu, "eu", 5), (us, "us", 10))
    assert pick(registry, 4, "eu") == "eu"  # eu applied offsets 0..4
    assert pick(registry, 5, "eu") == "us"  # offset 5 is not applied in eu yet
    assert pick(registry, 10, "eu") is None  # nobody has it: the signed origin
    choice = choose(
        registry,
        package="drupal/token",
        version="1.9.0",
        record=record(10),
        client_region="eu",
        now=T0,
    )
    assert choice.url == "https://ftp.drupal.org/token.zip"


def test_a_node_is_chosen_only_after_its_self_test_and_while_heard_from() -> None:
    eu = SigningKey.generate()
    registry = Registry(stale_after=timedelta(seconds=30))
    registry.observe(registration(eu, "eu"), T0)
    registry.observe(heartbeat(eu, "eu", 5), T0)
    assert registry.nodes[eu.public_key.keyid].admission == PENDING
    assert pick(registry, 1, "eu") is None
    registry.record_test(eu.public_key.keyid, True, "ok", T0)
    assert pick(registry, 1, "eu") == "eu"
    assert pick(registry, 1, "eu", now=T0 + timedelta(seconds=31)) is None


def test_silent_nodes_are_defederated_and_retested_when_they_return() -> None:
    eu = SigningKey.generate()
    registry = admitted_registry((eu, "eu", 5))
    assert registry.sweep(T0 + timedelta(hours=23)) == []
    dropped = registry.sweep(T0 + timedelta(hours=24, seconds=1))
    assert [e.node_id for e in dropped] == [eu.public_key.keyid]
    assert registry.nodes[eu.public_key.keyid].admission == DROPPED
    later = T0 + timedelta(hours=30)
    registry.observe(heartbeat(eu, "eu", 6), later)
    entry = registry.nodes[eu.public_key.keyid]
    assert entry.admission == PENDING and entry in registry.due_for_test(later)
    assert pick(registry, 1, "eu", now=later) is None
    registry.record_test(eu.public_key.keyid, True, "ok", later)
    assert registry.nodes[eu.public_key.keyid].admission == ADMITTED


def test_a_node_that_said_goodbye_is_stopped_never_live_routed_or_tested() -> None:
    eu, us = SigningKey.generate(), SigningKey.generate()
    registry = admitted_registry((eu, "eu", 5), (us, "us", 5))
    goodbye = replace(heartbeat(eu, "eu", 5), sequence=2, state="stopped")
    registry.observe(goodbye, T0 + timedelta(seconds=1))
    now = T0 + timedelta(seconds=2)
    entry = registry.nodes[eu.public_key.keyid]

    assert registry.shown_state(entry, now) == "stopped"
    assert not registry.live(entry, now)
    assert pick(registry, 1, "eu", now=now) == "us"  # the other region, not the stopped one
    # Spot checks are due for both after a minute; the stopped one is left alone.
    due = registry.due_for_test(T0 + timedelta(minutes=2))
    assert [e.node_id for e in due] == [us.public_key.keyid]
    # Still stopped long after: a goodbye does not turn into silence.
    assert registry.shown_state(entry, T0 + timedelta(hours=1)) == "stopped"


def test_a_node_unheard_for_longer_than_the_bound_is_silent_and_not_routed() -> None:
    eu = SigningKey.generate()
    registry = Registry()
    assert registry.stale_after == SILENT_AFTER == timedelta(seconds=30)
    registry.observe(registration(eu, "eu"), T0)
    registry.observe(heartbeat(eu, "eu", 5), T0)
    registry.record_test(eu.public_key.keyid, True, "ok", T0)
    entry = registry.nodes[eu.public_key.keyid]

    assert registry.shown_state(entry, T0 + SILENT_AFTER) == "in-sync"
    assert registry.live(entry, T0 + SILENT_AFTER)
    later = T0 + SILENT_AFTER + timedelta(seconds=1)
    assert registry.shown_state(entry, later) == "silent"
    assert not registry.live(entry, later)
    assert pick(registry, 1, "eu", now=later) is None


def test_full_mirrors_before_metadata_only_and_region_map() -> None:
    full, meta = SigningKey.generate(), SigningKey.generate()
    registry = Registry()
    for key, mode in ((meta, "metadata-only"), (full, "full")):
        registry.observe(registration(key, "eu", mode), T0)
        registry.observe(heartbeat(key, "eu", 5), T0)
        registry.record_test(key.public_key.keyid, True, "ok", T0)
    choice = choose(
        registry, package="drupal/x", version="1", record=record(1), client_region="eu", now=T0
    )
    assert choice.node_id == full.public_key.keyid
    regions = RegionMap.parse(["10.0.0.0/8=eu", "10.1.0.0/16=us"])
    assert regions.region_of({}, "10.1.2.3") == "us"
    assert regions.region_of({}, "10.2.2.3") == "eu"
    assert regions.region_of({"X-Fairstream-Region": "AP"}, "10.1.2.3") == "ap"
    assert regions.region_of({}, "192.0.2.1") is None
    with pytest.raises(ValueError, match="CIDR=REGION"):
        RegionMap.parse(["10.0.0.0/8"])


def test_the_book_keeps_only_records_signed_by_the_registered_key() -> None:
    eu, forger = SigningKey.generate(), SigningKey.generate()
    book = NodeBook()
    book.add(seal_registration(registration(eu, "eu"), eu))
    book.add(seal_status(heartbeat(eu, "eu", 3), eu))
    assert book.statuses[eu.public_key.keyid].applied_offset(TOPIC, 0) == 3
    forged = heartbeat(eu, "eu", 99)
    with pytest.raises(SignatureError):
        book.add(seal(forged.to_bytes(), [forger]))  # eu's id, another key
    stranger = SigningKey.generate()
    with pytest.raises(SignatureError, match="no registration"):
        book.add(seal_status(heartbeat(stranger, "us", 1), stranger))
    with pytest.raises(MalformedEventError):
        NodeRegistration(**{**registration(eu, "eu").__dict__, "node_id": "f" * 64})
    assert book.statuses[eu.public_key.keyid].applied_offset(TOPIC, 0) == 3


def test_an_admitted_node_is_spot_checked_and_refused_at_its_first_failure() -> None:
    eu = SigningKey.generate()
    registry = admitted_registry((eu, "eu", 5))
    registry.spot_check_every = timedelta(seconds=60)
    node_id = eu.public_key.keyid
    assert registry.due_for_test(T0 + timedelta(seconds=59)) == []
    later = T0 + timedelta(seconds=60)
    assert [e.node_id for e in registry.due_for_test(later)] == [node_id]
    registry.observe(heartbeat(eu, "eu", 5), later)
    registry.record_test(node_id, True, "served it", later)
    assert registry.nodes[node_id].admission == ADMITTED
    assert registry.due_for_test(later + timedelta(seconds=30)) == []
    assert pick(registry, 1, "eu", now=later) == "eu"
    failed = later + timedelta(seconds=60)
    registry.observe(heartbeat(eu, "eu", 5), failed)
    registry.record_test(node_id, False, "p2 does not list 1.9.0", failed)
    entry = registry.nodes[node_id]
    assert entry.admission == REFUSED
    assert entry.reason == "failed a spot check after its admission: p2 does not list 1.9.0"
    assert pick(registry, 1, "eu", now=failed) is None
    # Re-tested after the refusal pause like any refused node; a pass admits it again.
    assert registry.due_for_test(failed + registry.retest_after) == [entry]


def test_a_registration_carries_its_declared_jurisdiction_and_older_ones_none() -> None:
    eu = SigningKey.generate()
    declared = dataclasses.replace(registration(eu, "eu"), jurisdiction="EU")

    assert NodeRegistration.from_bytes(declared.to_bytes()) == declared
    # As a node before jurisdictions wrote it (v1): read as not declared.
    older = {
        **registration(eu, "eu").__dict__,
        "include": ["drupal/*"],
        "exclude": [],
    }
    del older["jurisdiction"], older["routes_to"]
    v1 = codec.encode(codec.schema_family("node_registration").versions[0], older)
    assert NodeRegistration.from_bytes(v1).jurisdiction is None
    with pytest.raises(MalformedEventError, match="'eu' is not a code such as EU"):
        dataclasses.replace(declared, jurisdiction="eu")


def sovereign_registry(
    *nodes: tuple[SigningKey, str, int, str | None, tuple[str, ...] | None],
) -> Registry:
    """Admitted nodes as (key, region, applied, jurisdiction, routes_to)."""
    registry = Registry(silence_window=timedelta(hours=24), stale_after=timedelta(seconds=30))
    for key, region, applied, jurisdiction, routes_to in nodes:
        declared = dataclasses.replace(
            registration(key, region), jurisdiction=jurisdiction, routes_to=routes_to
        )
        registry.observe(declared, T0)
        registry.observe(heartbeat(key, region, applied), T0)
        registry.record_test(key.public_key.keyid, True, "ok", T0)
    return registry


def test_a_sovereign_regions_clients_go_only_to_nodes_of_its_jurisdictions() -> None:
    eu, de, us = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    registry = sovereign_registry(
        (eu, "eu", 5, "EU", ("DE", "EU")),
        (de, "de", 10, "DE", None),
        (us, "us", 10, "US", None),
    )

    # eu has not applied offset 7: its clients go to de (DE), never to us (US).
    assert pick(registry, 7, "eu") == "de"
    # Offset 11: no node has applied it; eu's clients are not sent to the origin either.
    refused = choose(
        registry,
        package="drupal/token",
        version="1.9.0",
        record=record(11),
        client_region="eu",
        now=T0,
    )
    assert refused.url == "" and refused.node_id is None
    assert "region eu sends its clients to nodes in DE, EU only" in refused.why
    # Another region's clients are not bound by eu's policy: us, then the origin.
    assert pick(registry, 7, "us") == "us"
    assert (
        choose(
            registry,
            package="drupal/token",
            version="1.9.0",
            record=record(11),
            client_region="us",
            now=T0,
        ).url
        == record(11).origin_url
    )


def test_a_node_without_a_declared_jurisdiction_is_no_target_of_a_sovereign_region() -> None:
    eu, other = SigningKey.generate(), SigningKey.generate()
    registry = sovereign_registry(
        (eu, "eu", 5, "EU", ("EU",)),
        (other, "other", 10, None, None),
    )

    assert pick(registry, 7, "eu") is None
