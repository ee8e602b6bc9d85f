"""Peering (streams.peer_config, streams.peer_verdict, streams.peering): the --peer parser, the
per-peer decision (drupal/* never overridden), peer download sources, and peer positions counted
as owned. No sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.store import StoreLocation
from schemas.errors import ConfigurationError
from schemas.events import ReplicaAvailable, utc_now
from schemas.signing import SigningKey
from schemas.trust import TrustRoot
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.artifacts import ReplicaRegistry
from streams.node import NodeStream
from streams.node_settings import NodeSettings
from streams.peer_config import (
    PeerPolicy,
    PeerSettings,
    check_peer_form,
    parse_peer,
    with_peer_namespaces,
    with_peer_origins,
)
from streams.peer_verdict import (
    PEER_NAMESPACE_FORBIDDEN,
    PEER_NAMESPACE_NOT_ACCEPTED,
    PEER_REFUSED,
    PeerDecision,
    PeerUse,
    decide,
)
from streams.peering import peer_group
from streams.policy import JurisdictionPolicy, ReplicationPolicy

OUR_ROOT_KEY = SigningKey(seed=b"\x30" * 32)
DRUPAL_KEY = SigningKey(seed=b"\x31" * 32)
ACME_KEY = SigningKey(seed=b"\x32" * 32)
OUR_ROOT = build_root(
    version=1,
    root_keys=[OUR_ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[
        DelegationSpec("drupal/*", "drupal.org", (DRUPAL_KEY.public_key,), 1),
        DelegationSpec("acme/*", "acme.example", (ACME_KEY.public_key,), 1),
    ],
)
# Without drupal/*: the literal rule must hold even when our root does not delegate it.
OUR_ROOT_WITHOUT_DRUPAL = build_root(
    version=2,
    root_keys=[OUR_ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[DelegationSpec("acme/*", "acme.example", (ACME_KEY.public_key,), 1)],
)

PEER_ROOT_KEY = SigningKey(seed=b"\x40" * 32)
TYPO3_KEY = SigningKey(seed=b"\x41" * 32)
# The peer's root is hostile as well as legitimate: it also delegates drupal/* and
# acme/* (ours) to its own key.
PEER_ROOT = build_root(
    version=1,
    root_keys=[PEER_ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[
        DelegationSpec("typo3/*", "typo3.org", (TYPO3_KEY.public_key,), 1),
        DelegationSpec("neos/*", "typo3.org", (TYPO3_KEY.public_key,), 1),
        DelegationSpec("drupal/*", "typo3.org", (TYPO3_KEY.public_key,), 1),
        DelegationSpec("acme/*", "typo3.org", (TYPO3_KEY.public_key,), 1),
    ],
)
PINNED_PEER_ROOT = PEER_ROOT.sign([PEER_ROOT_KEY])
BROKER = "kafka://127.0.0.1:9093"


def peer(
    policy: PeerPolicy = PeerPolicy.CANONICAL, namespaces: tuple[str, ...] = ("typo3/*",)
) -> PeerSettings:
    return PeerSettings(
        name="typo3",
        broker_url=BROKER,
        topic="fair.releases",
        pinned_root=PINNED_PEER_ROOT,
        policy=policy,
        namespaces=namespaces if policy is PeerPolicy.CANONICAL else (),
    )


def read_peer_root(path: Path) -> bytes:
    assert path == Path("peers/typo3-root.avro")
    return PINNED_PEER_ROOT


def parse(text: str) -> PeerSettings:
    return parse_peer(text, read_peer_root)


# ---------------------------------------------------------------------------
# parse_peer
# ---------------------------------------------------------------------------


def test_a_full_peer_option_is_parsed_and_its_root_read_through_the_reader() -> None:
    asked: list[Path] = []

    def read(path: Path) -> bytes:
        asked.append(path)
        return PINNED_PEER_ROOT

    parsed = parse_peer(
        "typo3:policy=canonical,broker=kafka://127.0.0.1:9093,topic=typo3.releases,"
        "root=peers/typo3-root.avro,namespace=typo3/*",
        read,
    )

    assert asked == [Path("peers/typo3-root.avro")]
    assert parsed == PeerSettings(
        name="typo3",
        broker_url="kafka://127.0.0.1:9093",
        topic="typo3.releases",
        pinned_root=PINNED_PEER_ROOT,
        policy=PeerPolicy.CANONICAL,
        namespaces=("typo3/*",),
    )
    assert parsed.root() == PEER_ROOT


def test_the_topic_defaults_to_fair_releases() -> None:
    parsed = parse(f"typo3:policy=source,broker={BROKER},root=peers/typo3-root.avro")

    assert parsed.topic == "fair.releases"
    assert parsed.policy is PeerPolicy.SOURCE
    assert parsed.namespaces == ()
    assert parsed.jurisdiction is None


@pytest.mark.parametrize("code", ["EU", "DE", "US-gov"])
def test_a_peer_declares_its_origin_jurisdiction(code: str) -> None:
    parsed = parse(
        f"typo3:policy=canonical,broker={BROKER},root=peers/typo3-root.avro,"
        f"namespace=typo3/*,jurisdiction={code}"
    )

    assert parsed.jurisdiction == code
    assert parsed.namespaces == ("typo3/*",)


def test_the_form_of_a_peer_is_checked_without_reading_its_root() -> None:
    check_peer_form(f"typo3:policy=source,broker={BROKER},root=nowhere.avro,jurisdiction=CH")

    with pytest.raises(ConfigurationError, match="'eu' is not a code such as EU"):
        check_peer_form(f"typo3:policy=source,broker={BROKER},root=nowhere.avro,jurisdiction=eu")
    with pytest.raises(ConfigurationError, match="'mirror' is not one of canonical"):
        check_peer_form(f"typo3:policy=mirror,broker={BROKER}")
    with pytest.raises(ConfigurationError, match="unknown key 'juristiction'"):
        check_peer_form(f"typo3:policy=refuse,broker={BROKER},juristiction=EU")


def test_a_broker_list_and_a_namespace_list_may_hold_commas() -> None:
    parsed = parse(
        "typo3:broker=kafka://a.example:9092,b.example:9092,policy=canonical,"
        "root=peers/typo3-root.avro,namespace=typo3/*,neos/*,namespace=typo3/news"
    )

    assert parsed.broker_url == "kafka://a.example:9092,b.example:9092"
    assert parsed.namespaces == ("typo3/*", "neos/*", "typo3/news")


def test_a_refused_peer_needs_no_root() -> None:
    parsed = parse(f"hostile:policy=refuse,broker={BROKER}")

    assert parsed.policy is PeerPolicy.REFUSE
    assert parsed.pinned_root == b""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policy=canonical,broker=kafka://h:1", "does not start with the peer's name"),
        ("typo3", "does not start with the peer's name"),
        (":policy=refuse,broker=kafka://h:1", "does not start with the peer's name"),
        ("typo3:policy=refuse,brokers=kafka://h:1", "unknown key 'brokers'"),
        ("typo3:policy=refuse,policy=source,broker=kafka://h:1", "policy= is given twice"),
        ("typo3:broker=kafka://h:1", "policy= is missing"),
        ("typo3:policy=refuse", "broker= is missing"),
        ("typo3:policy=mirror,broker=kafka://h:1", "'mirror' is not one of canonical"),
        ("typo3:,policy=refuse,broker=kafka://h:1", "'' is not KEY=VALUE"),
        ("TYPO3:policy=refuse,broker=kafka://h:1", "lower-case letters, digits and dashes"),
        ("typo3:policy=refuse,broker=http://h:1", "write broker=kafka://HOST:PORT"),
        ("typo3:policy=refuse,broker=kafka://h", "has no port"),
        ("typo3:policy=refuse,broker=kafka://h:1,topic=a b", "not a Kafka topic name"),
        ("typo3:policy=refuse,broker=kafka://h:1,jurisdiction=eu", "'eu' is not a code such as"),
        ("typo3:policy=refuse,broker=kafka://h:1,jurisdiction=EU,jurisdiction=DE", "given twice"),
        ("typo3:policy=canonical,broker=kafka://h:1,namespace=typo3/*", "add root=FILE"),
        (
            "typo3:policy=canonical,broker=kafka://h:1,root=peers/typo3-root.avro",
            "add namespace=VENDOR/*",
        ),
        (
            "typo3:policy=source,broker=kafka://h:1,root=peers/typo3-root.avro,namespace=typo3/*",
            "namespace= is only used with policy=canonical",
        ),
        (
            "typo3:policy=canonical,broker=kafka://h:1,root=peers/typo3-root.avro,"
            "namespace=drupal/*",
            "no peer can be canonical for drupal/*",
        ),
        (
            "typo3:policy=canonical,broker=kafka://h:1,root=peers/typo3-root.avro,"
            "namespace=drupal/token",
            "no peer can be canonical for drupal/*",
        ),
        (
            "typo3:policy=canonical,broker=kafka://h:1,root=peers/typo3-root.avro,namespace=*/*",
            "is not a lower-case vendor",
        ),
        (
            "typo3:policy=canonical,broker=kafka://h:1,root=peers/typo3-root.avro,namespace=typo3",
            "is not a lower-case vendor",
        ),
        (
            "typo3:policy=canonical,broker=kafka://h:1,root=peers/typo3-root.avro,"
            "namespace=symfony/*",
            "delegates no symfony/* (it delegates: typo3/*, neos/*, drupal/*, acme/*)",
        ),
    ],
)
def test_a_wrong_peer_option_says_what_is_wrong(text: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse(text)

    assert expected in str(raised.value)


def test_a_root_that_is_not_a_signed_root_is_a_configuration_error() -> None:
    forged = PEER_ROOT.sign([SigningKey(seed=b"\x66" * 32)])  # not by its own root key

    with pytest.raises(ConfigurationError) as raised:
        parse_peer(f"typo3:policy=source,broker={BROKER},root=r.avro", lambda path: forged)

    assert "not a valid signed trust root" in str(raised.value)
    assert "pin the root file" in str(raised.value)
    with pytest.raises(ConfigurationError):
        parse_peer(f"typo3:policy=source,broker={BROKER},root=r.avro", lambda path: b"junk")


def test_every_problem_of_a_peer_is_listed_at_once() -> None:
    with pytest.raises(ConfigurationError) as raised:
        PeerSettings(
            name="Bad Name",
            broker_url="http://x",
            topic="",
            pinned_root=b"",
            policy=PeerPolicy.CANONICAL,
        )

    message = str(raised.value)
    for part in ("lower-case letters", "kafka://HOST:PORT", "topic", "root=FILE", "namespace="):
        assert part in message


# ---------------------------------------------------------------------------
# decide
# ---------------------------------------------------------------------------


def test_a_canonical_peer_is_canonical_for_its_accepted_namespace() -> None:
    assert decide(peer(), OUR_ROOT, PEER_ROOT, "typo3/news") == PeerDecision(PeerUse.CANONICAL)


def test_a_canonical_peer_is_not_accepted_outside_its_namespaces() -> None:
    # neos/* is delegated by the peer's root, but not accepted from it here.
    decision = decide(peer(), OUR_ROOT, PEER_ROOT, "neos/flow")

    assert decision.use is PeerUse.REFUSED
    assert decision.reason == PEER_NAMESPACE_NOT_ACCEPTED
    assert "accepts only typo3/*" in decision.detail
    assert "namespace=neos/*" in decision.detail


def test_a_namespace_glob_accepts_only_the_packages_it_matches() -> None:
    narrow = peer(namespaces=("typo3/news*",))

    assert decide(narrow, OUR_ROOT, PEER_ROOT, "typo3/news_extra").use is PeerUse.CANONICAL
    assert decide(narrow, OUR_ROOT, PEER_ROOT, "typo3/blog").reason == PEER_NAMESPACE_NOT_ACCEPTED


def test_a_canonical_package_the_peer_root_does_not_delegate_is_not_accepted() -> None:
    other_root = build_root(
        version=2,
        root_keys=[PEER_ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("neos/*", "typo3.org", (TYPO3_KEY.public_key,), 1)],
    )

    decision = decide(peer(), OUR_ROOT, other_root, "typo3/news")

    assert decision.reason == PEER_NAMESPACE_NOT_ACCEPTED
    assert "does not delegate it" in decision.detail


def test_a_source_peer_is_a_source_and_never_canonical() -> None:
    assert decide(peer(PeerPolicy.SOURCE), OUR_ROOT, PEER_ROOT, "typo3/news") == PeerDecision(
        PeerUse.SOURCE
    )


def test_a_refused_peer_is_refused_for_everything() -> None:
    refused = PeerSettings("hostile", BROKER, "fair.releases", b"", PeerPolicy.REFUSE)

    for package in ("typo3/news", "drupal/token", "acme/widget"):
        decision = decide(refused, OUR_ROOT, None, package)
        assert decision.use is PeerUse.REFUSED
        assert decision.reason == PEER_REFUSED
        assert "policy=refuse" in decision.detail


@pytest.mark.parametrize("policy", [PeerPolicy.CANONICAL, PeerPolicy.SOURCE])
def test_drupal_is_forbidden_from_any_peer_even_when_its_root_delegates_drupal(
    policy: PeerPolicy,
) -> None:
    # PEER_ROOT delegates drupal/* to the peer's key: its signature would verify.
    assert PEER_ROOT.delegation_for("drupal/token") is not None

    for our_root in (OUR_ROOT, OUR_ROOT_WITHOUT_DRUPAL):
        decision = decide(peer(policy), our_root, PEER_ROOT, "drupal/token")
        assert decision.use is PeerUse.REFUSED
        assert decision.reason == PEER_NAMESPACE_FORBIDDEN
        assert "drupal/*" in decision.detail


@pytest.mark.parametrize("policy", [PeerPolicy.CANONICAL, PeerPolicy.SOURCE])
def test_a_namespace_our_root_delegates_is_forbidden_even_when_accepted_from_the_peer(
    policy: PeerPolicy,
) -> None:
    # The operator accepts acme/* from the peer, and the peer's root delegates it, but our
    # own root delegates acme/* to acme.example: ours wins.
    generous = peer(policy, namespaces=("typo3/*", "acme/*"))

    decision = decide(generous, OUR_ROOT, PEER_ROOT, "acme/widget")

    assert decision.reason == PEER_NAMESPACE_FORBIDDEN
    assert "our trust root v1 delegates it to acme.example" in decision.detail
    # Once our root no longer delegates acme/*, the peer may be canonical for it.
    without_acme = build_root(
        version=3,
        root_keys=[OUR_ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (DRUPAL_KEY.public_key,), 1)],
    )
    expected = PeerUse.CANONICAL if policy is PeerPolicy.CANONICAL else PeerUse.SOURCE
    assert decide(generous, without_acme, PEER_ROOT, "acme/widget").use is expected


_NAMES = st.from_regex(r"[a-z0-9]([_.-]?[a-z0-9]+){0,5}", fullmatch=True)


@given(
    name=_NAMES,
    policy=st.sampled_from(list(PeerPolicy)),
    our_root=st.sampled_from([OUR_ROOT, OUR_ROOT_WITHOUT_DRUPAL]),
)
def test_no_peer_ever_gets_a_drupal_package_applied_or_sourced(
    name: str, policy: PeerPolicy, our_root: TrustRoot
) -> None:
    configured = (
        peer(policy)
        if policy is not PeerPolicy.REFUSE
        else PeerSettings("hostile", BROKER, "fair.releases", b"", policy)
    )

    decision = decide(configured, our_root, PEER_ROOT, f"drupal/{name}")

    assert decision.use is PeerUse.REFUSED
    assert decision.reason in (PEER_NAMESPACE_FORBIDDEN, PEER_REFUSED)


@given(vendor=_NAMES, name=_NAMES)
def test_a_canonical_decision_needs_acceptance_delegation_and_no_claim_of_ours(
    vendor: str, name: str
) -> None:
    package = f"{vendor}/{name}"

    decision = decide(peer(namespaces=("typo3/*", "neos/*")), OUR_ROOT, PEER_ROOT, package)

    canonical = (
        vendor in ("typo3", "neos")
        and PEER_ROOT.delegation_for(package) is not None
        and OUR_ROOT.delegation_for(package) is None
    )
    assert (decision.use is PeerUse.CANONICAL) == canonical
    if decision.use is PeerUse.REFUSED:
        assert decision.reason and decision.detail.startswith(package)


# ---------------------------------------------------------------------------
# Serving, positions, sources, ownership
# ---------------------------------------------------------------------------


def test_canonical_peer_namespaces_are_served_and_others_are_not() -> None:
    peers = (
        peer(namespaces=("typo3/*", "neos/*")),
        PeerSettings("mirror", BROKER, "fair.releases", PINNED_PEER_ROOT, PeerPolicy.SOURCE),
        PeerSettings("hostile", BROKER, "fair.releases", b"", PeerPolicy.REFUSE),
    )

    policy = with_peer_namespaces(ReplicationPolicy(exclude=("neos/legacy",)), peers)

    assert policy.include == ("drupal/*", "typo3/*", "neos/*")
    assert policy.exclude == ("neos/legacy",)
    assert policy.serves("typo3/news")
    assert not policy.serves("neos/legacy")  # the deny-list still wins
    assert not policy.serves("symfony/console")
    unchanged = ReplicationPolicy(include=("drupal/token", "typo3/*"))
    assert with_peer_namespaces(unchanged, peers[:1]).include == (
        "drupal/token",
        "typo3/*",
        "neos/*",
    )
    assert with_peer_namespaces(unchanged, peers[1:]) is unchanged


def test_peer_positions_labels_and_groups_never_collide_with_ours() -> None:
    typo3 = peer()

    position = typo3.position(3, 42)
    assert position == "peer/typo3/fair.releases:3:42"
    assert position.rsplit(":", 2) == ["peer/typo3/fair.releases", "3", "42"]
    assert typo3.rejected_topic == "peer:typo3/fair.releases"
    assert typo3.source_label == "peer:typo3"
    assert peer_group("fairstream-node-eu", "typo3") == "fairstream-node-eu.peer.typo3"


def test_each_peer_origin_is_in_the_jurisdiction_declared_for_that_peer() -> None:
    typo3 = parse(f"typo3:policy=source,broker={BROKER},root=peers/typo3-root.avro,jurisdiction=CH")
    neos = parse(f"neos:policy=source,broker={BROKER},root=peers/typo3-root.avro")  # declares none
    policy = with_peer_origins(
        ReplicationPolicy(jurisdictions=JurisdictionPolicy.restricting(["EU"], origin="US")),
        [typo3, neos],
    )

    assert policy.jurisdictions.peer_origins == (("typo3", "CH"),)
    assert policy.jurisdictions.origin_of(typo3.position(0, 7)) == "CH"
    # Undeclared stays undeclared: never taken for our origin's jurisdiction.
    assert policy.jurisdictions.origin_of(neos.position(0, 7)) is None
    assert policy.jurisdictions.origin_of("fair.releases:0:7") == "US"
    assert policy.jurisdictions.origin_of("") == "US"
    assert with_peer_origins(policy, [neos]) == policy


def test_a_source_peer_url_carries_the_peer_jurisdiction() -> None:
    registry = ReplicaRegistry("eu")
    sha = "ab" * 32

    registry.add_source(sha, "peer:typo3", "https://get.typo3.example/news.zip", "CH")
    registry.add_source(sha, "peer:neos", "https://get.neos.example/news.zip")

    assert [(s.holder, s.jurisdiction) for s in registry.fetch_sources(sha)] == [
        ("peer:neos", None),
        ("peer:typo3", "CH"),
    ]


def test_peer_sources_are_fetch_sources_but_not_replica_urls() -> None:
    registry = ReplicaRegistry("eu")
    sha = "ab" * 32
    registry.add(
        ReplicaAvailable(
            node_id="us",
            region="us",
            package="typo3/news",
            version="1.2.0",
            sha256=sha,
            size=10,
            url=f"http://us.example/dist/typo3/news/1.2.0/{sha}.zip",
            verified_at=utc_now(),
        )
    )

    registry.add_source(sha, "peer:typo3", "https://get.typo3.example/news-1.2.0.zip")
    registry.add_source(sha, "peer:mirror", "https://mirror.example/news.zip")
    registry.add_source(sha, "peer:typo3", "https://get.typo3.example/news-1.2.0-b.zip")

    # Clients are redirected only to nodes' dist URLs; the node fetches from all of them.
    assert registry.urls(sha) == [f"http://us.example/dist/typo3/news/1.2.0/{sha}.zip"]
    assert registry.sources(sha) == [
        f"http://us.example/dist/typo3/news/1.2.0/{sha}.zip",
        "https://mirror.example/news.zip",
        "https://get.typo3.example/news-1.2.0-b.zip",
    ]
    assert registry.peers() == ["http://us.example"]
    assert registry.sources("cd" * 32) == []


def test_a_node_counts_peer_positions_as_its_own(tmp_path: Path) -> None:
    settings = NodeSettings(
        region="eu",
        broker_url="kafka://127.0.0.1:1",
        store=StoreLocation.from_url("s3://fairstream-key:secret-key@127.0.0.1:1"),
        bucket="fairstream-eu",
        public_url="http://eu.example",
        pinned_root=OUR_ROOT.sign([OUR_ROOT_KEY]),
        data_dir=tmp_path,
        peers=(peer(),),
    )

    stream = NodeStream(settings)

    # Faust's assignment is not even looked at (the consumer has none here).
    assert stream._owns("peer/typo3/fair.releases:0:7") is True
