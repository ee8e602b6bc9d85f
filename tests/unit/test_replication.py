"""The pure parts of replication: build_release, package state transitions, render_documents,
verify_event against a trust root, the zip's top directory. No sockets."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.devtools.sample_projects import sample_zip
from schemas import layout, package_state
from schemas.composer import expand, render_p2
from schemas.errors import (
    InvalidVersionError,
    MalformedEventError,
    ReplayError,
    RollbackError,
    SignatureError,
    UndelegatedKeyError,
    UnknownSchemaError,
    UnsafeNameError,
    VersionConflictError,
    WrongPackageError,
)
from schemas.event_verification import verify_event
from schemas.events import (
    AdvisorySource,
    Artifact,
    PackageEvent,
    ReleaseExpunged,
    ReleasePublished,
    ReleaseYanked,
    SecurityAdvisory,
)
from schemas.package_state import (
    PackageState,
    Transition,
    VersionRecord,
    apply_event,
    render_documents,
)
from schemas.signing import SignedEvent, SigningKey, seal
from schemas.version_entries import version_entry, with_dist_url
from schemas.versions import drupal_to_composer
from services.publishing.publisher import PublishInputError, build_release, inspect_zip
from services.publishing.trust_admin import DelegationSpec, build_root
from streams.artifact_fetch import check_top_directory

PUBLIC_URL = "https://eu.fairstream.example"
ORIGIN = "https://ftp.drupal.org/files/projects"
ROOT_KEY = SigningKey(seed=b"\x05" * 32)
KEY = SigningKey(seed=b"\x07" * 32)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PUBLISHED = datetime(2025, 5, 1, 9, 30, tzinfo=UTC)
ROOT = build_root(
    version=1,
    root_keys=[ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[DelegationSpec("drupal/*", "drupal.org", (KEY.public_key,), 1)],
    expires=datetime(2026, 1, 1, tzinfo=UTC),
)
TOKEN = "drupal/token"


def make_release(
    tmp_path: Path, drupal_version: str = "8.x-1.9", **kwargs: Any
) -> ReleasePublished:
    """A release of a real sample zip, as the publisher builds it."""
    project = kwargs.pop("project", "token")
    zip_path = sample_zip(tmp_path / "zips", project, drupal_version, kwargs.pop("require", None))
    return build_release(
        package=f"drupal/{project}",
        drupal_version=drupal_version,
        zip_path=zip_path,
        origin_url=f"{ORIGIN}/{zip_path.name}",
        **kwargs,
    )


def release(
    drupal_version: str = "8.x-1.9", *, sequence: int = 1, content: bytes | None = None
) -> ReleasePublished:
    """A release of drupal/token built in memory: the artifact is ``content``'s digests."""
    data = f"token {drupal_version}".encode() if content is None else content
    sha1 = hashlib.sha1(data).hexdigest()
    return ReleasePublished(
        package=TOKEN,
        drupal_version=drupal_version,
        version=drupal_to_composer(drupal_version),
        published_at=PUBLISHED,
        artifact=Artifact(
            sha256=hashlib.sha256(data).hexdigest(),
            sha1=sha1,
            size=len(data),
            origin_url=f"{ORIGIN}/token-{drupal_version}.zip",
        ),
        composer=version_entry(
            name=TOKEN,
            drupal_version=drupal_version,
            sha1=sha1,
            metadata={"require": {"drupal/core": "^10"}},
        ),
        sequence=sequence,
    )


def yank(version: str, *, sequence: int, reason: str = "broken update hook") -> ReleaseYanked:
    return ReleaseYanked(
        package=TOKEN, version=version, sequence=sequence, reason=reason, yanked_at=PUBLISHED
    )


def expunge(version: str, sha256: str, *, sequence: int) -> ReleaseExpunged:
    return ReleaseExpunged(
        package=TOKEN,
        version=version,
        sha256=sha256,
        sequence=sequence,
        reason="SA-CONTRIB-2025-042: remote code execution",
        expunged_at=PUBLISHED,
    )


def advisory(*, sequence: int, **changes: Any) -> SecurityAdvisory:
    fields: dict[str, Any] = {
        "package": TOKEN,
        "sequence": sequence,
        "advisory_id": "SA-CONTRIB-2025-042",
        "affected_versions": ">=1.0.0,<1.10.0",
        "title": "Token - Critical - Remote code execution",
        "link": "https://www.drupal.org/sa-contrib-2025-042",
        "reported_at": "2025-05-01 09:30:00",
        "sources": (AdvisorySource("drupal.org", "SA-CONTRIB-2025-042"),),
        "published_at": PUBLISHED,
        "cve": "CVE-2025-12345",
        "severity": "critical",
    }
    return SecurityAdvisory(**{**fields, **changes})


def digest_of(event: PackageEvent) -> str:
    """The replicator's digest of an event: sha256 of the signed payload."""
    return hashlib.sha256(event.to_bytes()).hexdigest()


def position(offset: int) -> str:
    return f"fair.releases:0:{offset}"


def apply(state: PackageState, event: PackageEvent, offset: int) -> Transition | None:
    return apply_event(state, event, digest=digest_of(event), position=position(offset))


def applied(*events: PackageEvent) -> PackageState:
    """The state after applying ``events`` at offsets 0, 1, ... to a fresh drupal/token."""
    state = PackageState(TOKEN)
    for offset, event in enumerate(events):
        transition = apply(state, event, offset)
        assert transition is not None
        state = transition.state
    return state


def p2_versions(documents: dict[str, bytes], key: str, package: str) -> list[dict[str, Any]]:
    document = orjson.loads(documents[key])
    assert document["minified"] == "composer/2.0"
    versions: list[dict[str, Any]] = expand(document["packages"][package])
    return versions


def served(state: PackageState) -> list[str]:
    """The versions the p2 documents list, stable then dev."""
    documents = render_documents(state, PUBLIC_URL)
    return [
        entry["version"]
        for key in ("p2/drupal/token.json", "p2/drupal/token~dev.json")
        for entry in p2_versions(documents, key, TOKEN)
    ]


def rendered_afresh(state: PackageState, public_url: str) -> dict[str, bytes]:
    """What render_documents must give: every entry made anew by render_p2."""
    entries = [
        with_dist_url(
            record.composer,
            public_url.rstrip("/") + layout.dist_path(state.package, version, record.sha256),
        )
        for version, record in state.versions.items()
        if record.yanked is None
    ]
    advisories = [state.advisories[key] for key in sorted(state.advisories)]
    return render_p2(state.package, entries, advisories=advisories)


def test_render_documents_makes_each_entry_once_and_renders_the_same_bytes() -> None:
    events = [release(f"8.x-1.{n}", sequence=n + 1) for n in range(6)]
    events.append(release("8.x-1.x-dev", sequence=7))
    state = PackageState(TOKEN)
    calls: list[str] = []
    real = package_state.servable_entry

    def counted(name: str, version: dict[str, Any]) -> dict[str, Any]:
        calls.append(version["version"])
        return real(name, version)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(package_state, "servable_entry", counted)
        for offset, event in enumerate(events):
            transition = apply(state, event, offset)
            assert transition is not None
            state = transition.state
            assert render_documents(state, PUBLIC_URL) == rendered_afresh(state, PUBLIC_URL)
        # One release at a time, each rendered whole: each entry made once, not 1 + 2 + ... 7.
        assert sorted(calls) == sorted({event.version for event in events})

        # A yank, a version's record replaced, another public URL: never a stale entry.
        calls.clear()
        yanked = apply(state, yank("1.2.0", sequence=8), 7)
        assert yanked is not None
        assert render_documents(yanked.state, PUBLIC_URL) == rendered_afresh(
            yanked.state, PUBLIC_URL
        )
        assert calls == []  # the other entries were all made already
        record = state.versions["1.3.0"]
        changed = replace(
            state,
            versions={
                **state.versions,
                "1.3.0": replace(record, composer={**record.composer, "description": "new"}),
            },
        )
        assert render_documents(changed, PUBLIC_URL) == rendered_afresh(changed, PUBLIC_URL)
        assert calls == ["1.3.0"]
        calls.clear()
        other = "https://us.fairstream.example"
        assert render_documents(state, other) == rendered_afresh(state, other)
        assert len(calls) == 7
        # Rendering never changes the entries it keeps: the same bytes once more.
        assert render_documents(state, PUBLIC_URL) == rendered_afresh(state, PUBLIC_URL)


# ---------------------------------------------------------------------------
# build_release
# ---------------------------------------------------------------------------


def test_build_release_describes_the_zip(tmp_path: Path) -> None:
    event = make_release(tmp_path, require={"drupal/core": "^10"})
    data = (tmp_path / "zips" / "token-8.x-1.9.zip").read_bytes()

    assert event.package == "drupal/token"
    assert event.version == "1.9.0"
    assert event.drupal_version == "8.x-1.9"
    assert event.artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert event.artifact.sha1 == hashlib.sha1(data).hexdigest()
    assert event.artifact.size == len(data)
    assert event.artifact.origin_url == f"{ORIGIN}/token-8.x-1.9.zip"
    assert event.composer["name"] == "drupal/token"
    assert event.composer["version"] == "1.9.0"
    assert event.composer["dist"]["shasum"] == event.artifact.sha1
    assert event.composer["dist"]["reference"] == "8.x-1.9"
    assert "url" not in event.composer["dist"]  # each node adds its own
    assert event.composer["require"] == {"drupal/core": "^10"}
    assert event.composer["license"] == "GPL-2.0-or-later"
    # The event survives its own encoding.
    assert ReleasePublished.from_bytes(event.to_bytes()) == event


def test_build_release_takes_the_sequence_given(tmp_path: Path) -> None:
    assert make_release(tmp_path, sequence=42).sequence == 42


def test_build_release_numbers_releases_in_increasing_order(tmp_path: Path) -> None:
    sequences = [make_release(tmp_path).sequence for _ in range(5)]

    assert sequences == sorted(set(sequences))
    assert sequences[0] > 0


def test_sample_zips_are_reproducible(tmp_path: Path) -> None:
    first = sample_zip(tmp_path / "a", "token", "8.x-1.9").read_bytes()
    second = sample_zip(tmp_path / "b", "token", "8.x-1.9").read_bytes()

    assert first == second
    assert inspect_zip(tmp_path / "a" / "token-8.x-1.9.zip").top_directory == "token"


def test_build_release_refuses_two_top_directories(tmp_path: Path) -> None:
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("token/token.module", "<?php")
        archive.writestr("pathauto/pathauto.module", "<?php")

    with pytest.raises(
        PublishInputError, match=r"exactly one top directory.*\['pathauto', 'token'\]"
    ):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


def test_build_release_refuses_files_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "flat.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("token.module", "<?php")

    with pytest.raises(PublishInputError, match="exactly one top directory"):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


def test_build_release_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "token-8.x-1.9.zip"
    path.write_bytes(b"this is a tarball, honest")

    with pytest.raises(PublishInputError, match="is not a zip file"):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


def test_build_release_refuses_a_missing_zip(tmp_path: Path) -> None:
    with pytest.raises(PublishInputError, match="does not exist"):
        build_release(
            package="drupal/token",
            drupal_version="8.x-1.9",
            zip_path=tmp_path / "nope.zip",
            origin_url=ORIGIN,
        )


@pytest.mark.parametrize("package", ["token", "Drupal/token", "drupal/tok en", "drupal/", ""])
def test_build_release_refuses_a_bad_package_name(tmp_path: Path, package: str) -> None:
    zip_path = sample_zip(tmp_path, "token", "8.x-1.9")

    with pytest.raises(PublishInputError, match="not a Composer package name"):
        build_release(
            package=package, drupal_version="8.x-1.9", zip_path=zip_path, origin_url=ORIGIN
        )


def test_build_release_refuses_a_non_http_origin(tmp_path: Path) -> None:
    zip_path = sample_zip(tmp_path, "token", "8.x-1.9")

    with pytest.raises(PublishInputError, match="must be http:// or https://"):
        build_release(
            package="drupal/token",
            drupal_version="8.x-1.9",
            zip_path=zip_path,
            origin_url="file:///srv/token.zip",
        )


def test_build_release_refuses_a_bad_drupal_version(tmp_path: Path) -> None:
    with pytest.raises(InvalidVersionError, match=re.escape("8.x-1.09")):
        make_release(tmp_path, drupal_version="8.x-1.09")


def test_build_release_refuses_a_broken_composer_json(tmp_path: Path) -> None:
    path = tmp_path / "token.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("token/composer.json", "{broken")

    with pytest.raises(PublishInputError, match=re.escape("composer.json is not JSON")):
        build_release(
            package="drupal/token", drupal_version="8.x-1.9", zip_path=path, origin_url=ORIGIN
        )


# ---------------------------------------------------------------------------
# apply_event: publishing
# ---------------------------------------------------------------------------


def test_a_release_adds_the_version_and_asks_for_its_artifact(tmp_path: Path) -> None:
    event = make_release(tmp_path, sequence=7)
    empty = PackageState("drupal/token")

    transition = apply(empty, event, 3)

    assert transition is not None
    assert transition.fetch == event.artifact
    assert transition.delete is None
    state = transition.state
    assert state.package == "drupal/token"
    assert state.versions == {
        "1.9.0": VersionRecord(
            drupal_version="8.x-1.9",
            sha256=event.artifact.sha256,
            sha1=event.artifact.sha1,
            size=event.artifact.size,
            composer=event.composer,
            origin_url=event.artifact.origin_url,
            position="fair.releases:0:3",
        )
    }
    assert state.sequence == 7
    assert state.applied == {digest_of(event): "fair.releases:0:3"}
    assert empty == PackageState("drupal/token")  # the old state is not modified


def test_a_redelivery_at_the_same_position_is_a_no_op(tmp_path: Path) -> None:
    event = make_release(tmp_path)
    state = applied(event)

    assert apply(state, event, 0) is None
    # Also after the state went through its JSON document, as the replicator stores it.
    assert apply(PackageState.from_json(state.to_json()), event, 0) is None


def test_the_same_signed_event_at_another_position_is_a_replay(tmp_path: Path) -> None:
    event = make_release(tmp_path)
    state = applied(event)

    with pytest.raises(ReplayError) as raised:
        apply(state, event, 9)

    message = str(raised.value)
    assert "drupal/token" in message
    assert "fair.releases:0:0" in message
    assert "fair.releases:0:9" in message
    assert raised.value.reason == "replay"
    # Replay is recognised by the digest even after the JSON round trip.
    with pytest.raises(ReplayError):
        apply(PackageState.from_json(state.to_json()), event, 9)


@pytest.mark.parametrize("sequence", [1, 4, 5], ids=["lower", "lower-by-one", "equal"])
def test_a_sequence_not_above_the_last_is_a_rollback(sequence: int) -> None:
    state = applied(release("8.x-1.10", sequence=5))
    older = release("8.x-1.9", sequence=sequence)

    with pytest.raises(RollbackError) as raised:
        apply(state, older, 1)

    message = str(raised.value)
    assert f"event sequence {sequence} is not above the last applied 5" in message
    assert raised.value.reason == "rollback"


def test_the_first_event_may_have_sequence_zero() -> None:
    state = applied(release(sequence=0))

    assert state.sequence == 0
    with pytest.raises(RollbackError):
        apply(state, release("8.x-1.10", sequence=0), 1)


def test_a_rollback_changes_nothing() -> None:
    state = applied(release("8.x-1.10", sequence=5))
    before = state.to_json()

    with pytest.raises(RollbackError):
        apply(state, release("8.x-1.9", sequence=2), 1)

    assert state.to_json() == before


def test_a_later_version_keeps_the_earlier_ones(tmp_path: Path) -> None:
    first = make_release(tmp_path, "8.x-1.9", sequence=1)
    second = make_release(tmp_path, "8.x-1.10", sequence=2)
    state = applied(first)

    transition = apply(state, second, 1)

    assert transition is not None
    assert transition.fetch == second.artifact
    assert set(transition.state.versions) == {"1.9.0", "1.10.0"}
    assert set(state.versions) == {"1.9.0"}  # the old state is not modified


def test_other_bytes_for_a_published_version_are_a_conflict(tmp_path: Path) -> None:
    event = make_release(tmp_path, sequence=1)
    state = applied(event)
    other_sha256 = hashlib.sha256(b"other zip").hexdigest()
    other = dataclasses.replace(
        event, sequence=2, artifact=dataclasses.replace(event.artifact, sha256=other_sha256)
    )

    with pytest.raises(VersionConflictError) as raised:
        apply(state, other, 1)

    message = str(raised.value)
    assert "drupal/token 1.9.0" in message
    assert event.artifact.sha256 in message
    assert other_sha256 in message
    assert raised.value.reason == "version-conflict"


def test_another_size_or_sha1_for_a_published_version_is_a_conflict(tmp_path: Path) -> None:
    event = make_release(tmp_path, sequence=1)
    state = applied(event)

    with pytest.raises(VersionConflictError):
        apply(
            state,
            dataclasses.replace(
                event, sequence=2, artifact=dataclasses.replace(event.artifact, size=1)
            ),
            1,
        )
    with pytest.raises(VersionConflictError):
        apply(
            state,
            dataclasses.replace(
                event, sequence=2, artifact=dataclasses.replace(event.artifact, sha1="0" * 40)
            ),
            1,
        )


def test_the_same_bytes_published_again_later_are_accepted_without_a_fetch(
    tmp_path: Path,
) -> None:
    first = make_release(tmp_path, sequence=1)
    again = make_release(tmp_path, sequence=2)  # same zip, a new signed event
    state = applied(first)

    transition = apply(state, again, 1)

    assert transition is not None
    assert transition.fetch is None
    assert transition.delete is None
    assert transition.state.versions == state.versions
    assert transition.state.sequence == 2
    assert transition.state.applied == {
        digest_of(first): "fair.releases:0:0",
        digest_of(again): "fair.releases:0:1",
    }


# ---------------------------------------------------------------------------
# apply_event: yank, expunge, advisory
# ---------------------------------------------------------------------------


def test_a_yank_hides_the_version_from_metadata_but_keeps_it() -> None:
    first, second = release("8.x-1.9", sequence=1), release("8.x-1.10", sequence=2)
    state = applied(first, second)

    transition = apply(state, yank("1.10.0", sequence=3), 2)

    assert transition is not None
    assert transition.fetch is None
    assert transition.delete is None  # existing lock files still install it
    yanked = transition.state
    assert set(yanked.versions) == {"1.9.0", "1.10.0"}
    assert yanked.versions["1.10.0"].yanked == "broken update hook"
    assert yanked.versions["1.9.0"].yanked is None
    assert yanked.sequence == 3
    assert served(state) == ["1.10.0", "1.9.0"]
    assert served(yanked) == ["1.9.0"]
    assert PackageState.from_json(yanked.to_json()) == yanked


def test_a_yanked_version_cannot_be_published_again_with_other_bytes() -> None:
    state = applied(release("8.x-1.9", sequence=1), yank("1.9.0", sequence=2))

    with pytest.raises(VersionConflictError):
        apply(state, release("8.x-1.9", sequence=3, content=b"other"), 2)


def test_a_yank_of_an_unknown_version_only_advances_the_sequence() -> None:
    state = applied(release("8.x-1.9", sequence=1))

    transition = apply(state, yank("2.0.0", sequence=2), 1)

    assert transition is not None
    assert transition.state.versions == state.versions
    assert transition.state.sequence == 2
    assert (transition.fetch, transition.delete) == (None, None)


def test_an_expunge_removes_the_version_and_deletes_its_artifact() -> None:
    first, second = release("8.x-1.9", sequence=1), release("8.x-1.10", sequence=2)
    state = applied(first, second)

    transition = apply(state, expunge("1.9.0", first.artifact.sha256, sequence=3), 2)

    assert transition is not None
    assert transition.delete == first.artifact.sha256
    assert transition.fetch is None
    assert set(transition.state.versions) == {"1.10.0"}
    assert transition.state.expunged == {"1.9.0": first.artifact.sha256}
    assert served(transition.state) == ["1.10.0"]
    assert PackageState.from_json(transition.state.to_json()) == transition.state


def test_an_expunge_keeps_an_artifact_another_version_still_uses() -> None:
    shared = b"the same zip, published under two versions"
    first = release("8.x-1.9", sequence=1, content=shared)
    second = release("8.x-1.10", sequence=2, content=shared)
    state = applied(first, second)

    transition = apply(state, expunge("1.9.0", first.artifact.sha256, sequence=3), 2)

    assert transition is not None
    assert transition.delete is None
    assert set(transition.state.versions) == {"1.10.0"}


def test_an_expunge_naming_other_bytes_is_refused() -> None:
    event = release("8.x-1.9", sequence=1)
    state = applied(event)
    other = hashlib.sha256(b"another zip").hexdigest()

    with pytest.raises(VersionConflictError) as raised:
        apply(state, expunge("1.9.0", other, sequence=2), 1)

    assert other in str(raised.value)
    assert event.artifact.sha256 in str(raised.value)


def test_an_expunge_of_a_version_this_package_never_had_deletes_nothing() -> None:
    # Artifacts are content addressed across every package of the bucket: an expunge
    # must not delete bytes this package does not hold (another package's zip, say).
    state = applied(release("8.x-1.9", sequence=1))
    elsewhere = hashlib.sha256(b"drupal/pathauto 8.x-1.12").hexdigest()

    transition = apply(state, expunge("1.10.0", elsewhere, sequence=2), 1)

    assert transition is not None
    assert transition.delete is None
    assert transition.state.versions == state.versions
    assert transition.state.expunged == {"1.10.0": elsewhere}


def test_an_expunged_version_never_comes_back() -> None:
    event = release("8.x-1.9", sequence=1)
    state = applied(event, expunge("1.9.0", event.artifact.sha256, sequence=2))

    for again in (
        dataclasses.replace(event, sequence=3),
        release("8.x-1.9", sequence=3, content=b"new"),
    ):
        with pytest.raises(VersionConflictError, match="was expunged"):
            apply(state, again, 2)
    # Also after a restart (the state read back from its JSON).
    with pytest.raises(VersionConflictError, match="was expunged"):
        apply(PackageState.from_json(state.to_json()), dataclasses.replace(event, sequence=3), 2)


def test_an_advisory_is_kept_in_composers_field_names() -> None:
    state = applied(release(sequence=1))

    transition = apply(state, advisory(sequence=2), 1)

    assert transition is not None
    assert (transition.fetch, transition.delete) == (None, None)
    assert transition.state.versions == state.versions
    assert transition.state.advisories == {
        "SA-CONTRIB-2025-042": {
            "advisoryId": "SA-CONTRIB-2025-042",
            "packageName": "drupal/token",
            "affectedVersions": ">=1.0.0,<1.10.0",
            "title": "Token - Critical - Remote code execution",
            "link": "https://www.drupal.org/sa-contrib-2025-042",
            "cve": "CVE-2025-12345",
            "reportedAt": "2025-05-01 09:30:00",
            "sources": [{"name": "drupal.org", "remoteId": "SA-CONTRIB-2025-042"}],
            "severity": "critical",
        }
    }
    # An advisory does not change what is installable, and Composer reads it from p2.
    before = render_documents(state, PUBLIC_URL)
    after = render_documents(transition.state, PUBLIC_URL)
    stable = layout.p2_key("drupal/token")
    assert orjson.loads(after[stable])["packages"] == orjson.loads(before[stable])["packages"]
    assert orjson.loads(before[stable])["security-advisories"] == []
    assert orjson.loads(after[stable])["security-advisories"] == [
        transition.state.advisories["SA-CONTRIB-2025-042"]
    ]
    dev = layout.p2_key("drupal/token", dev=True)
    assert after[dev] == before[dev]
    assert "security-advisories" not in orjson.loads(after[dev])


def test_a_later_advisory_with_the_same_id_replaces_it() -> None:
    state = applied(advisory(sequence=1), advisory(sequence=2, cve=None, title="Token - revised"))

    [kept] = state.advisories.values()
    assert kept["title"] == "Token - revised"
    assert kept["cve"] is None


def test_package_state_json_round_trips(tmp_path: Path) -> None:
    first = make_release(tmp_path, "8.x-1.9", sequence=1)
    state = applied(
        first,
        make_release(tmp_path, "8.x-1.10", sequence=2),
        make_release(tmp_path, "8.x-1.x-dev", sequence=3),
        yank("1.10.0", sequence=4),
        expunge("1.9.0", first.artifact.sha256, sequence=5),
        advisory(sequence=6),
    )

    assert PackageState.from_json(state.to_json()) == state
    assert PackageState.from_json(state.to_json()).to_json() == state.to_json()


def test_the_signers_are_kept_with_the_published_version_and_round_trip() -> None:
    event = release(sequence=1)
    signers = ("a" * 64, "b" * 64)
    transition = apply_event(
        PackageState(TOKEN), event, digest=digest_of(event), position=position(0), signed_by=signers
    )
    assert transition is not None
    state = transition.state
    assert state.versions[event.version].signed_by == signers
    assert PackageState.from_json(state.to_json()) == state
    # A state written before signers were recorded reads as "not recorded".
    document = orjson.loads(state.to_json())
    del document["versions"][event.version]["signed_by"]
    assert PackageState.from_json(orjson.dumps(document)).versions[event.version].signed_by == ()


def test_a_state_document_without_the_new_fields_reads_as_never_applied() -> None:
    # A state written before sequences existed: versions only.
    state = applied(release(sequence=1))
    document = orjson.loads(state.to_json())
    old = {"package": document["package"], "versions": document["versions"]}

    read = PackageState.from_json(orjson.dumps(old))

    assert read.versions == state.versions
    assert (read.sequence, dict(read.applied), dict(read.expunged)) == (-1, {}, {})


# ---------------------------------------------------------------------------
# render_documents
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("public_url", [PUBLIC_URL, PUBLIC_URL + "/"])
def test_render_documents_points_dist_at_this_node(tmp_path: Path, public_url: str) -> None:
    event = make_release(tmp_path)
    state = applied(event)

    documents = render_documents(state, public_url)

    assert set(documents) == {"p2/drupal/token.json", "p2/drupal/token~dev.json"}
    [entry] = p2_versions(documents, "p2/drupal/token.json", "drupal/token")
    assert entry["version"] == "1.9.0"
    assert entry["dist"] == {
        "type": "zip",
        "url": f"{PUBLIC_URL}/dist/drupal/token/1.9.0/{event.artifact.sha256}.zip",
        "reference": "8.x-1.9",
        "shasum": event.artifact.sha1,
    }
    assert (
        entry["dist"]["shasum"]
        == hashlib.sha1((tmp_path / "zips" / "token-8.x-1.9.zip").read_bytes()).hexdigest()
    )
    assert p2_versions(documents, "p2/drupal/token~dev.json", "drupal/token") == []


def test_render_documents_splits_dev_versions_and_sorts(tmp_path: Path) -> None:
    state = applied(
        *(
            make_release(tmp_path, drupal_version, sequence=sequence)
            for sequence, drupal_version in enumerate(("8.x-1.9", "8.x-1.x-dev", "8.x-1.10"))
        )
    )

    documents = render_documents(state, PUBLIC_URL)

    stable = p2_versions(documents, "p2/drupal/token.json", "drupal/token")
    dev = p2_versions(documents, "p2/drupal/token~dev.json", "drupal/token")
    assert [entry["version"] for entry in stable] == ["1.10.0", "1.9.0"]
    assert [entry["version"] for entry in dev] == ["1.x-dev"]
    sha256 = state.versions["1.x-dev"].sha256
    assert dev[0]["dist"]["url"] == f"{PUBLIC_URL}/dist/drupal/token/1.x-dev/{sha256}.zip"


def test_render_documents_does_not_depend_on_application_order(tmp_path: Path) -> None:
    one = applied(
        make_release(tmp_path, "8.x-1.9", sequence=1),
        make_release(tmp_path, "8.x-1.10", sequence=2),
    )
    other = applied(
        make_release(tmp_path, "8.x-1.10", sequence=1),
        make_release(tmp_path, "8.x-1.9", sequence=2),
    )

    assert render_documents(one, PUBLIC_URL) == render_documents(other, PUBLIC_URL)


def test_a_package_without_versions_renders_empty_documents() -> None:
    event = release(sequence=1)
    state = applied(event, expunge("1.9.0", event.artifact.sha256, sequence=2))

    assert served(state) == []


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

VERSIONS = (
    "8.x-1.0",
    "8.x-1.9",
    "8.x-1.10",
    "8.x-2.0-beta1",
    "8.x-1.x-dev",
    "7.x-3.4-beta2",
    "2.0.3",
    "2.1.x",
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(VERSIONS), unique=True, min_size=1), st.randoms())
def test_the_order_of_publication_does_not_change_what_is_served(
    versions: list[str], random: Any
) -> None:
    shuffled = list(versions)
    random.shuffle(shuffled)

    in_order = applied(*(release(v, sequence=n) for n, v in enumerate(versions, start=1)))
    reordered = applied(*(release(v, sequence=n) for n, v in enumerate(shuffled, start=1)))

    # What differs is only where each event sat in the log.
    assert {v: replace(r, position="") for v, r in reordered.versions.items()} == {
        v: replace(r, position="") for v, r in in_order.versions.items()
    }
    assert render_documents(reordered, PUBLIC_URL) == render_documents(in_order, PUBLIC_URL)
    assert sorted(served(reordered)) == sorted(drupal_to_composer(v) for v in versions)


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(len(VERSIONS))))
def test_any_permutation_in_sequence_order_ends_in_the_same_state(order: list[int]) -> None:
    events: list[PackageEvent] = [
        release(version, sequence=10 * n) for n, version in enumerate(VERSIONS)
    ]
    events += [yank("1.9.0", sequence=15), advisory(sequence=25)]
    delivered = [events[i] for i in order] + events[len(VERSIONS) :]

    state = applied(*sorted(delivered, key=lambda event: event.sequence))

    assert state == applied(*sorted(events, key=lambda event: event.sequence))
    assert state.sequence == 10 * (len(VERSIONS) - 1)


@settings(max_examples=100, deadline=None)
@given(st.permutations(range(len(VERSIONS))))
def test_events_delivered_out_of_order_are_refused_once_a_later_one_applied(
    order: list[int],
) -> None:
    events = [release(version, sequence=n) for n, version in enumerate(VERSIONS, start=1)]
    state = PackageState(TOKEN)
    accepted: list[str] = []

    for offset, index in enumerate(order):
        event = events[index]
        if event.sequence <= state.sequence:
            with pytest.raises(RollbackError):
                apply(state, event, offset)
            continue
        transition = apply(state, event, offset)
        assert transition is not None
        assert transition.fetch == event.artifact
        state = transition.state
        accepted.append(event.version)

    assert state.sequence == len(VERSIONS)
    assert sorted(state.versions) == sorted(accepted)
    assert drupal_to_composer(VERSIONS[-1]) in state.versions
    assert PackageState.from_json(state.to_json()) == state


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(VERSIONS)), max_size=20))
def test_redeliveries_interleaved_anywhere_change_nothing(redeliveries: list[int]) -> None:
    events = [release(version, sequence=n) for n, version in enumerate(VERSIONS, start=1)]
    expected = applied(*events)
    state = PackageState(TOKEN)
    pending = list(redeliveries)

    for offset, event in enumerate(events):
        transition = apply(state, event, offset)
        assert transition is not None
        state = transition.state
        # At-least-once: any event already applied may come again, at its own position.
        while pending and pending[0] <= offset:
            again = pending.pop(0)
            assert apply(state, events[again], again) is None

    assert state == expected


# ---------------------------------------------------------------------------
# verify_event (the checks the replicator runs before apply_event)
# ---------------------------------------------------------------------------


def test_verify_event_returns_the_signed_event(tmp_path: Path) -> None:
    event = make_release(tmp_path)

    assert verify_event(seal(event.to_bytes(), [KEY]), ROOT, now=NOW) == event


def test_verify_event_refuses_a_version_that_does_not_match_the_drupal_version(
    tmp_path: Path,
) -> None:
    event = make_release(tmp_path)
    lying = dataclasses.replace(
        event, version="2.0.0", composer={**event.composer, "version": "2.0.0"}
    )

    with pytest.raises(MalformedEventError) as raised:
        verify_event(seal(lying.to_bytes(), [KEY]), ROOT, now=NOW)

    assert "Drupal version 8.x-1.9 maps to 1.9.0, the event says 2.0.0" in str(raised.value)


def test_verify_event_refuses_an_invalid_drupal_version(tmp_path: Path) -> None:
    event = dataclasses.replace(make_release(tmp_path), drupal_version="8.x-1.9-final")

    with pytest.raises(InvalidVersionError, match=re.escape("8.x-1.9-final")):
        verify_event(seal(event.to_bytes(), [KEY]), ROOT, now=NOW)


def test_verify_event_refuses_metadata_of_another_package(tmp_path: Path) -> None:
    event = make_release(tmp_path)
    other = dataclasses.replace(event, composer={**event.composer, "name": "drupal/pathauto"})

    with pytest.raises(WrongPackageError, match="drupal/pathauto"):
        verify_event(seal(other.to_bytes(), [KEY]), ROOT, now=NOW)


def test_verify_event_refuses_a_bad_signature(tmp_path: Path) -> None:
    event = make_release(tmp_path)
    signature = KEY.sign(event.to_bytes())
    # Redirect nodes to another zip, keeping the publisher's signature.
    evil = dataclasses.replace(
        event, artifact=dataclasses.replace(event.artifact, origin_url="https://evil.example/t.zip")
    )
    envelope = SignedEvent(payload=evil.to_bytes(), signatures=(signature,)).to_bytes()

    with pytest.raises(SignatureError) as raised:
        verify_event(envelope, ROOT, now=NOW)

    assert type(raised.value) is SignatureError
    assert raised.value.reason == "bad-signature"


def test_verify_event_refuses_an_undelegated_publisher(tmp_path: Path) -> None:
    stranger = SigningKey(seed=b"\x09" * 32)

    with pytest.raises(UndelegatedKeyError) as raised:
        verify_event(seal(make_release(tmp_path).to_bytes(), [stranger]), ROOT, now=NOW)

    assert stranger.public_key.keyid[:16] in str(raised.value)
    assert raised.value.reason == "undelegated-key"


def test_verify_event_refuses_a_signed_payload_that_is_no_package_event() -> None:
    other = SignedEvent(payload=b"x", signatures=()).to_bytes()

    with pytest.raises(UnknownSchemaError):
        verify_event(seal(other, [KEY]), ROOT, now=NOW)


def test_verify_event_trusts_only_the_namespaces_the_root_delegates(tmp_path: Path) -> None:
    sealed = seal(make_release(tmp_path).to_bytes(), [KEY])
    nothing_delegated = build_root(
        version=1,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[],
        expires=ROOT.expires,
    )

    with pytest.raises(UndelegatedKeyError, match=r"delegated: none"):
        verify_event(sealed, nothing_delegated, now=NOW)


# ---------------------------------------------------------------------------
# check_top_directory
# ---------------------------------------------------------------------------


def write_zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, "<?php")
    return path


def test_a_zip_with_the_projects_top_directory_passes(tmp_path: Path) -> None:
    check_top_directory(sample_zip(tmp_path, "token", "8.x-1.9"), "drupal/token")


@pytest.mark.parametrize(
    ("names", "found"),
    [
        (["pathauto/pathauto.module"], "['pathauto']"),
        (["token/token.module", "pathauto/pathauto.module"], "['pathauto', 'token']"),
        (["token.module"], "['token.module']"),
        (["tokens/token.module"], "['tokens']"),
    ],
    ids=["another-project", "two-projects", "flat", "look-alike"],
)
def test_a_zip_of_another_project_is_the_wrong_package(
    tmp_path: Path, names: list[str], found: str
) -> None:
    path = write_zip(tmp_path / "token-8.x-1.9.zip", names)

    with pytest.raises(WrongPackageError) as raised:
        check_top_directory(path, "drupal/token")

    assert found in str(raised.value)
    assert "not one token/ directory" in str(raised.value)


def test_a_file_that_is_no_zip_is_the_wrong_package(tmp_path: Path) -> None:
    path = tmp_path / "token-8.x-1.9.zip"
    path.write_bytes(b"a tarball, honest")

    with pytest.raises(WrongPackageError, match="is not a zip file"):
        check_top_directory(path, "drupal/token")


def test_build_release_refuses_another_projects_zip(tmp_path: Path) -> None:
    pathauto = sample_zip(tmp_path, "pathauto", "8.x-1.12")

    with pytest.raises(WrongPackageError, match=r"\['pathauto'\], not one token/ directory"):
        build_release(
            package="drupal/token",
            drupal_version="8.x-1.9",
            zip_path=pathauto,
            origin_url="https://ftp.drupal.org/files/projects/token-8.x-1.9.zip",
        )


@pytest.mark.parametrize("entry", ["token/../../etc/cron.d/x", "/token/x", "token\\..\\x"])
def test_inspect_zip_refuses_entries_unsafe_to_extract(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("token/token.info.yml", "name: token\n")
        archive.writestr(entry, "x")

    with pytest.raises(UnsafeNameError, match="unsafe to extract"):
        inspect_zip(path)


def test_a_loaded_state_renders_the_same_bytes(tmp_path: Path) -> None:
    state = PackageState("drupal/token")
    for offset, version in enumerate(("8.x-1.9", "8.x-1.10", "8.x-1.x-dev")):
        event = make_release(tmp_path, sequence=offset + 1, drupal_version=version)
        transition = apply(state, event, offset)
        assert transition is not None
        state = transition.state

    loaded = PackageState.from_json(state.to_json())

    assert loaded == state
    assert render_documents(loaded, PUBLIC_URL) == render_documents(state, PUBLIC_URL)
    assert loaded.to_json() == state.to_json()


# ---------------------------------------------------------------------------
# dev rebuilds: a -dev release is rebuilt upstream on every commit
# ---------------------------------------------------------------------------


def dev_build(content: bytes, *, sequence: int, rebuild_of: str | None = None) -> ReleasePublished:
    """A build of drupal/token 8.x-1.x-dev whose zip is ``content``."""
    built = release("8.x-1.x-dev", sequence=sequence, content=content)
    return dataclasses.replace(built, rebuild_of=rebuild_of)


def test_a_dev_version_takes_a_new_build_that_names_the_build_it_replaces() -> None:
    first = dev_build(b"build one", sequence=1)
    state = applied(first)
    second = dev_build(b"build two", sequence=2, rebuild_of=first.artifact.sha256)

    transition = apply(state, second, 1)

    assert transition is not None and transition.fetch == second.artifact
    record = transition.state.versions["1.x-dev"]
    assert (record.sha256, record.sha1, record.position) == (
        second.artifact.sha256,
        second.artifact.sha1,
        position(1),
    )
    (entry,) = p2_versions(
        render_documents(transition.state, PUBLIC_URL), "p2/drupal/token~dev.json", TOKEN
    )
    # Served as signed: the new build's shasum, and a dist URL naming its bytes.
    assert entry["dist"]["shasum"] == second.artifact.sha1
    assert entry["dist"]["reference"] == second.composer["dist"]["reference"]
    assert second.artifact.sha256 in entry["dist"]["url"]


def test_the_publisher_names_each_dev_build_in_its_dist_reference(tmp_path: Path) -> None:
    # What makes `composer update` install a new build of the same dev version.
    dev = make_release(tmp_path, "8.x-1.x-dev")
    assert dev.composer["dist"]["reference"] == dev.artifact.sha1
    tagged = make_release(tmp_path, "8.x-1.9")
    assert tagged.composer["dist"]["reference"] == "8.x-1.9"


def test_a_new_dev_build_must_name_the_current_build_it_replaces() -> None:
    first = dev_build(b"build one", sequence=1)
    state = applied(first)
    with pytest.raises(VersionConflictError, match="names no build it replaces"):
        apply(state, dev_build(b"build two", sequence=2), 1)
    elsewhere = hashlib.sha256(b"a build this node never had").hexdigest()
    with pytest.raises(VersionConflictError, match=f"current build is {first.artifact.sha256}"):
        apply(state, dev_build(b"build two", sequence=2, rebuild_of=elsewhere), 1)


def test_an_older_dev_build_cannot_come_back() -> None:
    first = dev_build(b"build one", sequence=1)
    second = dev_build(b"build two", sequence=2, rebuild_of=first.artifact.sha256)
    state = applied(first, second)
    # The old build's signed event again, at another position: a replay.
    with pytest.raises(ReplayError):
        apply(state, first, 2)
    # The old build re-signed with an old sequence: a rollback.
    old = dev_build(b"build one", sequence=2, rebuild_of=second.artifact.sha256)
    with pytest.raises(RollbackError):
        apply(state, old, 2)
    assert state.versions["1.x-dev"].sha256 == second.artifact.sha256


def test_a_tagged_version_stays_immutable_even_when_an_event_claims_a_rebuild() -> None:
    tagged = release("8.x-1.9", sequence=1, content=b"the 1.9 zip")
    state = applied(tagged)
    other = release("8.x-1.9", sequence=2, content=b"other bytes")
    with pytest.raises(VersionConflictError, match="only a dev version is rebuilt"):
        apply(state, dataclasses.replace(other, rebuild_of=tagged.artifact.sha256), 1)
    with pytest.raises(VersionConflictError, match="immutable"):
        apply(state, other, 1)


def test_a_rebuild_of_a_dev_version_never_seen_here_is_its_first_build() -> None:
    elsewhere = hashlib.sha256(b"an earlier build").hexdigest()
    state = applied(dev_build(b"build two", sequence=5, rebuild_of=elsewhere))
    assert state.versions["1.x-dev"].sha1 == hashlib.sha1(b"build two").hexdigest()


def test_rebuild_of_must_be_a_sha256() -> None:
    with pytest.raises(MalformedEventError, match="rebuild_of"):
        dev_build(b"build two", sequence=2, rebuild_of="not a digest")
