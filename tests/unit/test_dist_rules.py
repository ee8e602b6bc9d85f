"""Where a node sends a client for a zip it does not serve itself (``redirect_target``), under
the region's jurisdiction policy: its own origin, other nodes' copies, a peer network's origin."""

from __future__ import annotations

from schemas.package_state import VersionRecord
from services.node.dist_rules import Withheld, redirect_target
from streams.artifacts import Source
from streams.policy import JurisdictionPolicy

SHA256 = "ab" * 32
OWN = "https://eu.example/"


def record(
    position: str, origin_url: str = "https://origin.example/token-1.0.zip"
) -> VersionRecord:
    return VersionRecord(
        drupal_version="8.x-1.0",
        sha256=SHA256,
        sha1="cd" * 20,
        size=10,
        composer={},
        origin_url=origin_url,
        position=position,
    )


def eu_only(**peers: str) -> JurisdictionPolicy:
    return JurisdictionPolicy(
        own="EU",
        origin="US",
        peer_origins=tuple(sorted(peers.items())),
        redirect=frozenset({"EU"}),
    )


def test_an_allowed_copy_comes_before_the_origin() -> None:
    copy = Source(f"https://de.example/dist/drupal/token/{SHA256}.zip", "de", "EU")
    target = redirect_target(
        SHA256, record("fair.releases:0:1"), [copy], own_url=OWN, policy=eu_only()
    )
    assert target == copy.url


def test_our_origin_outside_the_list_is_withheld_and_named() -> None:
    target = redirect_target(SHA256, record("fair.releases:0:1"), [], own_url=OWN, policy=eu_only())
    assert isinstance(target, Withheld)
    assert [(s.holder, s.jurisdiction) for s in target.sources] == [("origin", "US")]


def test_a_peer_release_goes_to_the_peer_origin_in_the_peer_jurisdiction() -> None:
    position = "peer/typo3/fair.releases:0:7"
    allowed = redirect_target(SHA256, record(position), [], own_url=OWN, policy=eu_only(typo3="EU"))
    assert allowed == "https://origin.example/token-1.0.zip"  # EU, though our origin is US

    withheld = redirect_target(
        SHA256, record(position), [], own_url=OWN, policy=eu_only(typo3="CH")
    )
    assert isinstance(withheld, Withheld)
    assert [(s.holder, s.jurisdiction) for s in withheld.sources] == [("peer:typo3", "CH")]


def test_a_peer_that_declared_no_jurisdiction_is_never_a_sovereign_target() -> None:
    policy = JurisdictionPolicy(own="EU", origin="EU", redirect=frozenset({"EU"}))
    target = redirect_target(
        SHA256, record("peer/typo3/fair.releases:0:7"), [], own_url=OWN, policy=policy
    )
    # Our origin is EU, but this zip is at the peer's origin, whose jurisdiction is unknown.
    assert isinstance(target, Withheld)
    assert [(s.holder, s.jurisdiction) for s in target.sources] == [("peer:typo3", None)]


def test_without_a_redirect_list_every_origin_is_a_target() -> None:
    target = redirect_target(
        SHA256, record("peer/typo3/fair.releases:0:7"), [], own_url=OWN, policy=JurisdictionPolicy()
    )
    assert target == "https://origin.example/token-1.0.zip"
