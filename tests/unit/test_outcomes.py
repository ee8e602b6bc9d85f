"""streams.outcomes: the replicator's pure verdicts on a release's zip (which zip to fetch
first; a failed fetch parks or refuses), and streams.artifact_fetch's order of sources."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.errors import (
    ArtifactMismatchEverywhereError,
    ArtifactUnreachableError,
    RejectedError,
    StoreUnavailableError,
    WrongPackageError,
)
from schemas.events import Artifact, ReleasePublished, ReleaseYanked
from schemas.package_state import PackageState, Transition
from streams.artifact_fetch import artifact_sources
from streams.artifacts import ReplicaRegistry, Source
from streams.outcomes import Park, Refuse, ZipToFetch, on_fetch_failure, zip_to_fetch
from streams.policy import JurisdictionPolicy

AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ARTIFACT = Artifact(
    sha256="a" * 64,
    sha1="b" * 40,
    size=1234,
    origin_url="https://ftp.drupal.org/files/projects/token-8.x-1.9.zip",
)
RELEASE = ReleasePublished(
    package="drupal/token",
    drupal_version="8.x-1.9",
    version="1.9.0",
    published_at=AT,
    artifact=ARTIFACT,
    composer={},
    sequence=1,
)
STATE = PackageState("drupal/token")


def test_a_full_mirror_fetches_a_published_release_s_zip_first() -> None:
    transition = Transition(STATE, fetch=ARTIFACT)
    assert zip_to_fetch(RELEASE, transition, mirrors_artifacts=True) == ZipToFetch(
        "1.9.0", ARTIFACT
    )


def test_no_zip_to_fetch_on_a_metadata_only_region() -> None:
    transition = Transition(STATE, fetch=ARTIFACT)
    assert zip_to_fetch(RELEASE, transition, mirrors_artifacts=False) is None


def test_no_zip_to_fetch_when_the_transition_needs_none() -> None:
    assert zip_to_fetch(RELEASE, Transition(STATE), mirrors_artifacts=True) is None
    yanked = ReleaseYanked("drupal/token", "1.9.0", 2, "security", AT)
    assert zip_to_fetch(yanked, Transition(STATE, fetch=ARTIFACT), mirrors_artifacts=True) is None


def test_an_unreachable_zip_parks_the_fetch_with_what_it_said() -> None:
    error = ArtifactUnreachableError("no source delivered", url=ARTIFACT.origin_url, attempts=())
    assert on_fetch_failure(error) == Park("no source delivered")


@pytest.mark.parametrize(
    "error",
    [
        ArtifactMismatchEverywhereError("other bytes everywhere", attempts=()),
        WrongPackageError("another project's release"),
    ],
)
def test_a_zip_that_can_never_be_taken_refuses_the_event(error: RejectedError) -> None:
    assert on_fetch_failure(error) == Refuse(error)


@pytest.mark.parametrize(
    "error", [StoreUnavailableError("the bucket did not answer"), RuntimeError("a bug")]
)
def test_any_other_failure_rises(error: Exception) -> None:
    assert on_fetch_failure(error) is None


def test_sources_are_the_origin_first_then_replicas_then_other_sources() -> None:
    replicas = ReplicaRegistry("eu")
    replicas.add_source(ARTIFACT.sha256, "peer:typo3", "https://mirror.typo3.example/t.zip")
    allowed, withheld = artifact_sources(ARTIFACT, JurisdictionPolicy(), replicas)
    assert allowed == [
        Source(ARTIFACT.origin_url, "origin", None),
        Source("https://mirror.typo3.example/t.zip", "peer:typo3", None),
    ]
    assert withheld == []


def test_a_sovereign_region_withholds_sources_outside_its_jurisdictions() -> None:
    replicas = ReplicaRegistry("eu")
    replicas.add_source(ARTIFACT.sha256, "peer:typo3", "https://mirror.typo3.example/t.zip")
    policy = JurisdictionPolicy.restricting(["EU"], own="EU", origin="EU")
    allowed, withheld = artifact_sources(ARTIFACT, policy, replicas)
    assert allowed == [Source(ARTIFACT.origin_url, "origin", "EU")]
    assert withheld == [Source("https://mirror.typo3.example/t.zip", "peer:typo3", None)]


def test_a_peer_release_is_fetched_from_the_peer_origin_in_its_jurisdiction() -> None:
    """A release read from a peer has its signed origin at the peer: in the jurisdiction
    declared for it, never in ours; a peer that declared none is never allowed."""
    replicas = ReplicaRegistry("eu")
    declared = JurisdictionPolicy(
        origin="EU", fetch=frozenset({"EU"}), peer_origins=(("typo3", "CH"),)
    )
    at_typo3 = "peer/typo3/fair.releases:0:5"

    allowed, withheld = artifact_sources(ARTIFACT, declared, replicas, at_typo3)
    assert (allowed, withheld) == ([], [Source(ARTIFACT.origin_url, "peer:typo3", "CH")])

    allowed, withheld = artifact_sources(ARTIFACT, declared, replicas, "peer/neos/n:0:5")
    assert (allowed, withheld) == ([], [Source(ARTIFACT.origin_url, "peer:neos", None)])

    swiss = JurisdictionPolicy(
        origin="EU", fetch=frozenset({"CH"}), peer_origins=(("typo3", "CH"),)
    )
    allowed, withheld = artifact_sources(ARTIFACT, swiss, replicas, at_typo3)
    assert (allowed, withheld) == ([Source(ARTIFACT.origin_url, "peer:typo3", "CH")], [])
