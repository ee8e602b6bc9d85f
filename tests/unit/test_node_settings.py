"""A region's consumer group: one per region, and one per federation sharing the brokers."""

from __future__ import annotations

from connectors.kafka_topics import Topics
from streams.node_settings import group_id
from streams.peering import peer_group


def test_a_region_of_the_default_topics_joins_the_group_operators_know() -> None:
    assert Topics().prefix == ""
    assert group_id("eu", Topics()) == "fairstream-node-eu"


def test_federations_sharing_brokers_under_prefixes_have_groups_of_their_own() -> None:
    staging, test = Topics.with_prefix("staging."), Topics.with_prefix("faults-3b1ccdec.")
    assert staging.prefix == "staging."
    assert group_id("eu", staging) == "fairstream-node-eu.staging"
    groups = {
        group_id(region, topics) for region in ("eu", "us") for topics in (Topics(), staging, test)
    }
    assert len(groups) == 6
    # Still under the production ACL's prefix for fairstream's groups (infra/production/kafka).
    assert all(group.startswith("fairstream-") for group in groups)


def test_a_prefixed_regions_peer_groups_stay_apart_from_the_default_federations() -> None:
    prefixed = peer_group(group_id("eu", Topics.with_prefix("staging.")), "typo3")
    assert prefixed != peer_group(group_id("eu", Topics()), "typo3")
