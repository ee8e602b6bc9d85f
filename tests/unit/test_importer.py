"""The importer's pure part on packages.drupal.org's real p2 documents: entries to signed releases."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any
from unittest import mock

import click
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from connectors.composer_repo import (
    ArtifactDigest,
    SourceLimits,
    TokenBucket,
    p2_url,
    packages_json_url,
    parse_p2,
    parse_packages_json,
)
from infra.devtools.catalogue import generate_catalogue
from schemas.composer import minify, render_p2
from schemas.errors import ConfigurationError, InvalidVersionError, MalformedEventError
from schemas.events import ReleasePublished, check_consistency
from schemas.signing import SigningKey
from schemas.version_entries import with_dist_url
from services.importer import plan as planning
from services.importer.checksums import checksum_key, load_checksums
from services.importer.cli import register
from services.importer.display import summary_table
from services.importer.plan import Candidate, PackagePlan, Skipped, SkipReason, plan_package
from services.importer.release import check_digest, release_event
from services.importer.report import ImportReport
from services.importer.settings import ImportSettings
from services.publishing.publisher import next_sequence
from services.publishing.trust_admin import write_key_pair
from tests.drupal_fixtures import DRUPAL_P2

REPO = Path(__file__).resolve().parents[2]
FIXTURES = DRUPAL_P2

TOKEN_VERSIONS = [
    "1.0.0-alpha1",
    "1.0.0-alpha2",
    "1.0.0-beta1",
    "1.0.0-beta2",
    "1.0.0-rc1",
    "1.0.0",
    "1.1.0",
    "1.2.0",
    "1.3.0",
    "1.4.0",
    "1.5.0",
    "1.6.0",
    "1.7.0",
    "1.8.0",
    "1.9.0",
]


def fixture_documents(project: str) -> list[dict[str, list[dict[str, Any]]]]:
    path = FIXTURES / f"{project}.json"
    return [parse_p2(path.read_bytes(), str(path))]


def raw_entries(project: str) -> list[dict[str, Any]]:
    """The fixture's version entries exactly as served: minified, newest first."""
    document = orjson.loads((FIXTURES / f"{project}.json").read_bytes())
    entries: list[dict[str, Any]] = document["packages"][f"drupal/{project}"]
    return entries


def digest_for(candidate: Candidate) -> ArtifactDigest:
    """A made-up sha256 and size with the entry's real sha1, as a checksums file would give."""
    assert candidate.sha1 is not None
    fake = hashlib.sha256(candidate.origin_url.encode()).hexdigest()
    return ArtifactDigest(sha256=fake, sha1=candidate.sha1, size=1000 + len(candidate.version))


def events_of(project: str) -> list[ReleasePublished]:
    plan = plan_package(f"drupal/{project}", fixture_documents(project))
    assert plan.skipped == ()
    events = []
    for candidate in plan.candidates:
        event = release_event(candidate, digest_for(candidate), sequence=next_sequence())
        assert isinstance(event, ReleasePublished), event
        events.append(event)
    return events


def p2_document(package: str, entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A p2 document as parse_p2 returns it (not minified)."""
    return {package: entries}


def token_entry(**changes: Any) -> dict[str, Any]:
    """The newest token entry, whole (the first of a minified list is), with changes."""
    entry = copy.deepcopy(raw_entries("token")[0])
    if "version" in changes:
        del entry["version_normalized"]  # Composer's, of 1.9.0
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


# ---------------------------------------------------------------------------
# The real fixtures
# ---------------------------------------------------------------------------


def test_every_token_version_becomes_a_release_oldest_first() -> None:
    events = events_of("token")

    assert [event.version for event in events] == TOKEN_VERSIONS
    assert [event.drupal_version for event in events][:3] == [
        "8.x-1.0-alpha1",
        "8.x-1.0-alpha2",
        "8.x-1.0-beta1",
    ]
    sequences = [event.sequence for event in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    for event in events:
        check_consistency(event)  # what a node checks after the signature
        assert ReleasePublished.from_bytes(event.to_bytes()) == event


def test_origin_url_and_sha1_are_the_original_ones() -> None:
    by_version = {entry["version"]: entry for entry in raw_entries("token")}
    for event in events_of("token"):
        dist = by_version[event.version]["dist"]
        assert event.artifact.origin_url == dist["url"]
        assert event.artifact.sha1 == dist["shasum"]
        assert event.composer["dist"] == {
            "type": "zip",
            "reference": dist["reference"],
            "shasum": dist["shasum"],
        }, "everything of dist but url, which each node sets"


def test_drupal_metadata_is_preserved() -> None:
    events = {event.version: event for event in events_of("token")}
    newest, oldest = events["1.9.0"].composer, events["1.0.0-alpha1"].composer

    assert newest["uid"] == "token-3189015"
    assert newest["source"] == {
        "type": "git",
        "url": "https://git.drupalcode.org/project/token.git",
        "reference": "8.x-1.9",
    }
    assert newest["support"] == {"source": "https://git.drupalcode.org/project/token"}
    assert newest["require"] == {"drupal/core": "^8.8 || ^9"}
    assert newest["extra"]["drupal"] == {
        "version": "8.x-1.9",
        "datestamp": "1608284866",
        "security-coverage": {
            "status": "covered",
            "message": "Covered by Drupal's security advisory policy",
        },
    }
    assert newest["extra"]["drush"] == {"services": {"drush.services.yml": "^9 || ^10"}}
    assert newest["type"] == "drupal-module" and newest["license"] == "GPL-2.0-or-later"
    assert oldest["extra"]["drupal"]["security-coverage"]["status"] == "not-covered"
    assert oldest["uid"] == "token-2640302"
    # Minified composer/2.0: an entry without "require" has the one of the entry before it.
    assert events["1.8.0"].composer["require"] == {"drupal/core": "^8.8 || ^9"}
    assert events["1.3.0"].composer["require"] == {"drupal/core": "~8.0"}
    assert events["1.0.0-rc1"].composer["license"] == "GPL-2.0+"


def test_release_time_is_drupal_orgs_datestamp() -> None:
    newest = {event.version: event for event in events_of("token")}["1.9.0"]
    assert int(newest.published_at.timestamp()) == 1608284866


def test_pathauto_keeps_its_requirement_on_token() -> None:
    [event] = events_of("pathauto")

    assert (event.package, event.version, event.drupal_version) == (
        "drupal/pathauto",
        "1.12.0",
        "8.x-1.12",
    )
    assert event.composer["require"] == {"drupal/token": "*"}
    assert "drupal/redirect" in event.composer["suggest"]
    assert event.composer["support"]["issues"] == "https://www.drupal.org/project/issues/pathauto"
    assert event.artifact.origin_url == (
        "https://ftp.drupal.org/files/projects/pathauto-8.x-1.12.zip"
    )
    assert event.artifact.sha1 == "b7b6432e315e38e59a7c6cc117134326c580de4c"


def test_minified_and_plain_documents_give_the_same_releases() -> None:
    package = "drupal/token"
    minified = fixture_documents("token")
    plain = orjson.dumps({"packages": minified[0]})

    from_minified = plan_package(package, minified).candidates
    from_plain = plan_package(package, [parse_p2(plain, "plain.json")]).candidates

    assert from_minified == from_plain


def test_dev_versions_come_with_the_stable_ones() -> None:
    dev = token_entry(
        version="1.x-dev",
        version_normalized="1.9999999.9999999.9999999-dev",
        extra={"drupal": {"version": "8.x-1.x-dev", "datestamp": "1700000000"}},
        dist={
            "type": "zip",
            "url": "https://ftp.drupal.org/files/projects/token-8.x-1.x-dev.zip",
            "reference": "8.x-1.x",
            "shasum": "",
        },
    )
    documents = [*fixture_documents("token"), p2_document("drupal/token", minify([dev]))]

    plan = plan_package("drupal/token", documents)

    assert [c.version for c in plan.candidates][-2:] == ["1.9.0", "1.x-dev"]
    candidate = plan.candidates[-1]
    assert candidate.sha1 is None  # no shasum to check: the zip's own sha1 is signed
    digest = ArtifactDigest("a" * 64, "b" * 40, 5)
    event = release_event(candidate, digest, sequence=1)
    assert isinstance(event, ReleasePublished)
    assert event.composer["dist"]["shasum"] == "b" * 40
    check_consistency(event)


# ---------------------------------------------------------------------------
# What is skipped, and why
# ---------------------------------------------------------------------------


def reasons(plan_skipped: tuple[Skipped, ...]) -> dict[str | None, SkipReason]:
    return {skip.version: skip.reason for skip in plan_skipped}


def test_broken_entries_are_skipped_with_their_reason_and_the_rest_goes_on() -> None:
    entries = [
        token_entry(),  # 1.9.0, fine
        token_entry(version="1.10.0", dist=None),  # source only
        token_entry(  # a Drupal version that means nothing
            version="1.11.0",
            extra={"drupal": {"version": "8.x-1.eleven"}},
            dist={"type": "zip", "url": "https://ftp.drupal.org/t.zip", "reference": "x"},
        ),
        token_entry(version="1.12.0"),  # says 8.x-1.9 in extra: another version
        token_entry(version="1.13.0/../../x"),  # unsafe as an object key
        token_entry(version="2.0.0", name="drupal/pathauto"),  # another package's entry
        token_entry(version="1.9.0"),  # the same version again
        token_entry(
            version="3.0.0",
            extra={"drupal": {"version": "3.0.0"}},
            dist={"type": "tar", "url": "https://ftp.drupal.org/t.tar.gz", "reference": "3.0.0"},
        ),
        token_entry(
            version="3.0.1",
            extra={"drupal": {"version": "3.0.1"}},
            dist={"type": "zip", "url": "https://x/t.zip", "reference": "3.0.1", "shasum": "ABC"},
        ),
    ]
    documents = [
        p2_document("drupal/token", entries),
        {"drupal/pathauto": [raw_entries("pathauto")[0]]},
    ]

    plan = plan_package("drupal/token", documents)

    assert [c.version for c in plan.candidates] == ["1.9.0"]
    by_reason: dict[SkipReason, list[str | None]] = {}
    for skip in plan.skipped:
        by_reason.setdefault(skip.reason, []).append(skip.version)
    assert by_reason == {
        SkipReason.NO_DIST: ["1.10.0", "3.0.0"],
        SkipReason.INVALID_VERSION: ["1.11.0", "1.12.0"],
        SkipReason.UNSAFE_NAME: ["1.13.0/../../x"],
        SkipReason.OTHER_PACKAGE: ["2.0.0", "1.12.0"],
        SkipReason.DUPLICATE_VERSION: ["1.9.0"],
        SkipReason.MALFORMED_ENTRY: ["3.0.1"],
    }
    mismatch = next(s for s in plan.skipped if s.version == "1.12.0")
    assert "8.x-1.9 maps to 1.9.0" in mismatch.detail


@pytest.mark.parametrize(
    "name",
    ["drupal/../etc", "drupal/tok%2en", "Drupal/Token", "drupal//token", "drupal/con", "token"],
)
def test_an_unsafe_package_name_is_skipped_whole(name: str) -> None:
    plan = plan_package(name, [p2_document(name, [token_entry(name=name)])])

    assert plan.candidates == ()
    assert [(s.package, s.version, s.reason) for s in plan.skipped] == [
        (name, None, SkipReason.UNSAFE_NAME)
    ]


def test_versions_already_on_the_topic_are_not_published_again() -> None:
    published = {"1.0.0", "1.9.0", "1.0.0-alpha1"}

    plan = plan_package("drupal/token", fixture_documents("token"), published=published)

    assert len(plan.candidates) == 12
    assert {s.version for s in plan.skipped} == published
    assert {s.reason for s in plan.skipped} == {SkipReason.ALREADY_PUBLISHED}


def test_two_drupal_versions_of_one_composer_version_publish_once() -> None:
    # 8.x-1.9 and 7.x-1.9 are both Composer's 1.9.0: a node keeps one release per version.
    seven = token_entry()
    seven["extra"] = {"drupal": {"version": "7.x-1.9"}}
    seven["dist"] = {
        **seven["dist"],
        "url": "https://ftp.drupal.org/files/projects/token-7.x-1.9.zip",
    }

    plan = plan_package("drupal/token", [p2_document("drupal/token", [token_entry(), seven])])

    assert [(c.version, c.drupal_version) for c in plan.candidates] == [("1.9.0", "8.x-1.9")]
    assert reasons(plan.skipped) == {"1.9.0": SkipReason.DUPLICATE_VERSION}


def test_an_entry_a_node_could_not_render_is_skipped() -> None:
    entry = token_entry(version_normalized="1.9.0.1")

    plan = plan_package("drupal/token", [p2_document("drupal/token", [entry])])

    assert reasons(plan.skipped) == {"1.9.0": SkipReason.INVALID_VERSION}


def test_an_entry_holding_the_unset_marker_is_skipped() -> None:
    # Only a document that is not minified can carry it; a node could not minify it back.
    entry = token_entry(description="__unset")

    plan = plan_package("drupal/token", [p2_document("drupal/token", [entry])])

    assert reasons(plan.skipped) == {"1.9.0": SkipReason.MALFORMED_ENTRY}
    assert "description" in plan.skipped[0].detail


# ---------------------------------------------------------------------------
# The servable check: rendering's verdicts, without rendering
# ---------------------------------------------------------------------------


def servable_by_rendering(
    package: str, candidates: list[Candidate]
) -> tuple[list[Candidate], list[Skipped]]:
    """The importer's servable check as it was: the package's whole p2 rendered, and when that
    failed, each entry rendered alone to name the ones at fault."""
    if not candidates:
        return [], []
    try:
        render_p2(package, [with_dist_url(c.composer, c.origin_url) for c in candidates])
    except (MalformedEventError, InvalidVersionError):
        pass
    else:
        return candidates, []
    servable: list[Candidate] = []
    refused: list[Skipped] = []
    for candidate in candidates:
        try:
            render_p2(package, [with_dist_url(candidate.composer, candidate.origin_url)])
        except (MalformedEventError, InvalidVersionError) as exc:
            refused.append(
                Skipped(package, candidate.version, SkipReason.MALFORMED_ENTRY, str(exc))
            )
        else:
            servable.append(candidate)
    return servable, refused


def plan_by_rendering(
    package: str, documents: list[dict[str, list[dict[str, Any]]]]
) -> PackagePlan | type[BaseException]:
    with mock.patch.object(planning, "_servable", servable_by_rendering):
        return plan_or_error(package, documents)


def plan_or_error(
    package: str, documents: list[dict[str, list[dict[str, Any]]]]
) -> PackagePlan | type[BaseException]:
    try:
        return plan_package(package, documents)
    except Exception as exc:  # a source's value that crashes both ways crashes them alike
        return type(exc)


CATALOGUE_PROJECTS = 100


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The parsed p2 documents (stable, then ~dev) of each package of a generated catalogue.

    100 projects, 1,218 releases: -dev branches, pre-releases, Drupal 7 style and semver
    histories, one project with 247 releases. (The generator makes no yanked versions.)
    """
    root = tmp_path_factory.mktemp("catalogue")
    generate_catalogue(
        root, projects=CATALOGUE_PROJECTS, seed=2026, base_url="https://ftp.example.org", zips=False
    )
    documents: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((root / "p2" / "drupal").glob("*.json")):
        if not path.name.endswith("~dev.json"):
            dev = path.with_name(f"{path.stem}~dev.json")
            documents[f"drupal/{path.stem}"] = [
                parse_p2(document.read_bytes(), str(document))
                for document in (path, dev)
                if document.exists()
            ]
    return documents


def test_a_generated_catalogue_is_planned_as_rendering_planned_it(
    catalogue: dict[str, list[dict[str, Any]]],
) -> None:
    plans = {package: plan_package(package, documents) for package, documents in catalogue.items()}

    for package, documents in catalogue.items():
        assert plans[package] == plan_by_rendering(package, documents), package
    candidates = [c for plan in plans.values() for c in plan.candidates]
    assert len(plans) == CATALOGUE_PROJECTS and len(candidates) == 1218
    assert not any(plan.skipped for plan in plans.values())
    assert sum(c.version.endswith("-dev") for c in candidates) > 100
    assert max(len(plan.candidates) for plan in plans.values()) == 247


# Values a source could put in an entry, most of which no p2 document can hold.
ODD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.sampled_from(["\ud800", "1.9.0", "drupal/other", "https://x/y.zip", "zip", "__unset"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=3)
    ),
    max_leaves=6,
)
PLACES = st.sampled_from(
    [
        ("version",),
        ("version_normalized",),
        ("name",),
        ("dist",),
        ("dist", "url"),
        ("dist", "type"),
        ("dist", "shasum"),
        ("extra", "drupal", "version"),
        ("extra", "drupal", "datestamp"),
        ("require",),
        ("require", "drupal/core"),
        ("description",),
        ("authors",),
        ("keywords",),
    ]
)


@given(data=st.data())
def test_an_altered_catalogue_package_is_planned_as_rendering_planned_it(
    catalogue: dict[str, list[dict[str, Any]]], data: st.DataObject
) -> None:
    package = data.draw(st.sampled_from(sorted(catalogue)))
    documents = [
        {name: list(entries) for name, entries in document.items()}
        for document in catalogue[package]
    ]
    holding_versions = [document for document in documents if document[package]]
    for path, value in data.draw(st.lists(st.tuples(PLACES, ODD_VALUES), min_size=1, max_size=4)):
        entries = data.draw(st.sampled_from(holding_versions))[package]
        position = data.draw(st.integers(min_value=0, max_value=len(entries) - 1))
        entry = entries[position] = copy.deepcopy(entries[position])
        for key in path[:-1]:
            if not isinstance(entry.get(key), dict):
                entry[key] = {}
            entry = entry[key]
        entry[path[-1]] = value

    assert plan_or_error(package, documents) == plan_by_rendering(package, documents)


def test_an_entry_nested_too_deep_to_render_is_skipped_not_a_crash() -> None:
    deep: dict[str, Any] = {"leaf": "x"}
    for _ in range(5000):
        deep = {"a": deep}
    entries = [token_entry(), token_entry(version="1.10.0", extra=deep)]
    entries[1]["extra"] = {"drupal": {"version": "8.x-1.10"}, "deep": deep}
    entries[1]["dist"] = {**entries[1]["dist"], "reference": "8.x-1.10"}

    plan = plan_package("drupal/token", [p2_document("drupal/token", entries)])

    assert [c.version for c in plan.candidates] == ["1.9.0"]
    assert reasons(plan.skipped) == {"1.10.0": SkipReason.MALFORMED_ENTRY}
    assert "nest too deep" in plan.skipped[0].detail
    # Rendering, which the importer used to do here, overflows Python's stack instead.
    assert plan_by_rendering("drupal/token", [p2_document("drupal/token", entries)]) is (
        RecursionError
    )


def test_sha1_of_the_zip_must_be_the_p2_shasum() -> None:
    [candidate] = plan_package("drupal/pathauto", fixture_documents("pathauto")).candidates
    wrong = ArtifactDigest("c" * 64, "d" * 40, 10)

    skipped = check_digest(candidate, wrong, SkipReason.SHA1_MISMATCH)

    assert skipped is not None and skipped.reason is SkipReason.SHA1_MISMATCH
    assert candidate.sha1 is not None and candidate.sha1 in skipped.detail
    assert check_digest(candidate, digest_for(candidate), SkipReason.SHA1_MISMATCH) is None


# ---------------------------------------------------------------------------
# Checksums file
# ---------------------------------------------------------------------------


def test_checksums_are_looked_up_by_the_dist_url_path() -> None:
    digest = {"sha256": "a" * 64, "sha1": "b" * 40, "size": 12}
    checksums = load_checksums(
        orjson.dumps(
            {
                "/files/projects/token-8.x-1.9.zip": digest,
                "files/projects/token-8.x-1.8.zip": digest,
                "https://ftp.drupal.org/files/projects/token-8.x-1.7.zip": digest,
            }
        )
    )

    for version in ("1.9", "1.8", "1.7"):
        url = f"http://127.0.0.1:8000/files/projects/token-8.x-{version}.zip"
        assert checksums[checksum_key(url)] == ArtifactDigest("a" * 64, "b" * 40, 12)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        orjson.dumps({"/a.zip": {"sha256": "a" * 64, "sha1": "b" * 40}}),
        orjson.dumps({"/a.zip": {"sha256": "A" * 64, "sha1": "b" * 40, "size": 1}}),
        orjson.dumps({"/a.zip": {"sha256": "a" * 64, "sha1": "b" * 40, "size": -1}}),
        orjson.dumps({"/a.zip": {"sha256": "a" * 64, "sha1": "b" * 40, "size": True}}),
    ],
)
def test_a_wrong_checksums_file_is_a_configuration_error(data: bytes) -> None:
    with pytest.raises(ConfigurationError, match="checksums"):
        load_checksums(data, source="checksums.json")


# ---------------------------------------------------------------------------
# Composer repository documents (connectors.composer_repo, pure part)
# ---------------------------------------------------------------------------


def test_packages_drupal_org_root_resolves_metadata_url_on_its_host() -> None:
    root = orjson.dumps(
        {
            "packages": [],
            "metadata-url": "/files/packages/8/p2/%package%.json",
            "available-package-patterns": ["drupal/*"],
            "notify-batch": "/8/downloads",
        }
    )
    url = packages_json_url("https://packages.drupal.org/8")

    index = parse_packages_json(root, url)

    assert url == "https://packages.drupal.org/8/packages.json"
    assert index.available_packages is None
    assert index.available_package_patterns == ("drupal/*",)
    assert p2_url(index, "drupal/token") == (
        "https://packages.drupal.org/files/packages/8/p2/drupal/token.json"
    )
    assert p2_url(index, "drupal/token", dev=True).endswith("/p2/drupal/token~dev.json")


@pytest.mark.parametrize(
    ("metadata_url", "expected"),
    [
        ("p2/%package%.json", "http://h:1/repo/p2/drupal/token.json"),
        ("/p2/%package%.json", "http://h:1/p2/drupal/token.json"),
        ("https://cdn.example/p2/%package%.json", "https://cdn.example/p2/drupal/token.json"),
    ],
)
def test_metadata_url_relative_or_absolute(metadata_url: str, expected: str) -> None:
    root = orjson.dumps({"metadata-url": metadata_url, "available-packages": ["drupal/token"]})

    index = parse_packages_json(root, "http://h:1/repo/packages.json")

    assert index.available_packages == ("drupal/token",)
    assert p2_url(index, "drupal/token") == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (orjson.dumps({"packages": {"drupal/a": {}}}), "no metadata-url"),
        (orjson.dumps({"metadata-url": "/p2/x.json"}), "no metadata-url"),
        (orjson.dumps({"metadata-url": "/p/%package%", "available-packages": [1]}), "list"),
    ],
)
def test_a_root_that_is_not_composer_v2_is_malformed(document: bytes, message: str) -> None:
    with pytest.raises(MalformedEventError, match=message):
        parse_packages_json(document, "http://h/packages.json")


@pytest.mark.parametrize(
    "document",
    [
        b"nope",
        orjson.dumps({"packages": "drupal/token"}),
        orjson.dumps({"packages": {"drupal/token": {"1.0.0": {}}}}),
        orjson.dumps({"packages": {"drupal/token": [1]}, "minified": "composer/2.0"}),
        orjson.dumps({"packages": {"drupal/token": []}, "minified": "composer/3.0"}),
    ],
)
def test_a_p2_document_of_another_shape_is_malformed(document: bytes) -> None:
    with pytest.raises(MalformedEventError, match=r"p2\.json"):
        parse_p2(document, "http://h/p2.json")


def test_an_empty_p2_document_has_no_versions() -> None:
    assert parse_p2(b'{"packages": []}', "u") == {}
    assert parse_p2(b'{"packages": {"drupal/a": []}, "minified": "composer/2.0"}', "u") == {
        "drupal/a": []
    }


async def test_token_bucket_paces_requests_at_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10.0, 2, clock=lambda: now[0], sleep=sleep)
    for _ in range(12):
        await bucket.acquire()

    # Two at once (the burst), then one every 0.1 s: 10 more take a second.
    assert now[0] == pytest.approx(1.0)
    assert all(seconds == pytest.approx(0.1) for seconds in slept)


def test_source_limits_refuse_nonsense() -> None:
    with pytest.raises(ConfigurationError, match="rate"):
        SourceLimits(rate=0)
    with pytest.raises(ConfigurationError, match="concurrency"):
        SourceLimits(concurrency=0)
    assert SourceLimits(rate=10).bucket_size == 1
    assert SourceLimits(rate=1000).bucket_size == 100


# ---------------------------------------------------------------------------
# Summary and command line (no broker reached: mistakes are found first)
# ---------------------------------------------------------------------------


def test_summary_table_names_every_reason_with_an_example() -> None:
    from rich.console import Console

    report = ImportReport(repository="https://packages.drupal.org/8", packages=3, published=15)
    report.skip(Skipped("drupal/token", "1.9.0", SkipReason.ALREADY_PUBLISHED, "on the topic"))
    report.skip(Skipped("drupal/nope", None, SkipReason.PACKAGE_NOT_FOUND, "404"))
    report.elapsed = 2.0
    console = Console(record=True, width=200)

    console.print(summary_table(report))

    text = console.export_text()
    assert "published" in text and "15" in text
    assert "skipped: already published" in text and "1 releases" in text
    assert "skipped: package not in repository" in text and "1 packages" in text
    assert "drupal/token 1.9.0: on the topic" in text


def test_import_settings_need_a_key() -> None:
    with pytest.raises(ConfigurationError, match="signing key"):
        ImportSettings(repository_url="http://h/", broker_url="kafka://h:1", keys=())


def fairstream() -> click.Group:
    @click.group()
    def group() -> None:
        pass

    register(group)
    return group


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "drupal.key"
    write_key_pair(SigningKey.generate(), path)
    return path


def invoke(*args: str) -> ConfigurationError:
    result = CliRunner().invoke(fairstream(), ["import", *args])
    assert isinstance(result.exception, ConfigurationError), result.output
    return result.exception


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(fairstream(), ["import", "--help"])
    assert result.exit_code == 0
    assert "Example: fairstream import https://packages.drupal.org/8" in result.output


def test_cli_mistakes_are_one_clear_sentence(tmp_path: Path, key_file: Path) -> None:
    data_dir = str(tmp_path / "no-stack")
    url = "http://127.0.0.1:9/repo"
    common = ["--data-dir", data_dir]

    assert "not an http(s) URL" in str(invoke("ftp://x/repo", "--key", str(key_file), *common))
    assert "cannot read key file" in str(invoke(url, "--key", str(tmp_path / "no.key"), *common))
    assert "not a private key" in str(
        invoke(url, "--key", str(key_file.with_suffix(".pub")), *common)
    )
    empty = tmp_path / "packages.txt"
    empty.write_text("# nothing\n\n")
    assert "names no package" in str(
        invoke(url, "--key", str(key_file), "--packages", str(empty), *common)
    )
    bad_sums = tmp_path / "checksums.json"
    bad_sums.write_text("[]")
    assert "checksums.json is not a JSON object" in str(
        invoke(url, "--key", str(key_file), "--checksums", str(bad_sums), *common)
    )
    assert "no embedded stack" in str(invoke(url, "--key", str(key_file), *common))


def test_rate_must_be_positive(key_file: Path) -> None:
    result = CliRunner().invoke(
        fairstream(), ["import", "http://h/", "--key", str(key_file), "--rate", "0"]
    )
    assert result.exit_code == 2 and "--rate" in result.output
