"""Drupal → Composer version mapping, Composer's normalization and version order."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.composer import expand
from schemas.errors import InvalidVersionError, RejectedError
from schemas.versions import (
    drupal_to_composer,
    is_dev,
    normalize_version,
    version_sort_key,
    version_stability,
)
from tests.drupal_fixtures import DRUPAL_P2

FIXTURES = DRUPAL_P2


def fixture_entries() -> list[dict[str, Any]]:
    """Every version entry of the real token.json and pathauto.json, expanded."""
    entries: list[dict[str, Any]] = []
    for project in ("token", "pathauto"):
        document = orjson.loads((FIXTURES / f"{project}.json").read_bytes())
        entries += expand(document["packages"][f"drupal/{project}"])
    return entries


FIXTURE_ENTRIES = fixture_entries()
FIXTURE_IDS = [entry["extra"]["drupal"]["version"] for entry in FIXTURE_ENTRIES]


def test_the_fixtures_hold_every_release() -> None:
    assert len(FIXTURE_ENTRIES) == 16


# ---------------------------------------------------------------------------
# Real packages.drupal.org data
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry", FIXTURE_ENTRIES, ids=FIXTURE_IDS)
def test_normalize_version_matches_packages_drupal_org(entry: dict[str, Any]) -> None:
    assert normalize_version(entry["version"]) == entry["version_normalized"]


@pytest.mark.parametrize("entry", FIXTURE_ENTRIES, ids=FIXTURE_IDS)
def test_drupal_to_composer_matches_packages_drupal_org(entry: dict[str, Any]) -> None:
    assert drupal_to_composer(entry["extra"]["drupal"]["version"]) == entry["version"]


@pytest.mark.parametrize("entry", FIXTURE_ENTRIES, ids=FIXTURE_IDS)
def test_normalized_fixture_versions_normalize_to_themselves(entry: dict[str, Any]) -> None:
    assert normalize_version(entry["version_normalized"]) == entry["version_normalized"]


def test_packages_drupal_org_lists_token_newest_first() -> None:
    token = [entry for entry in FIXTURE_ENTRIES if entry["name"] == "drupal/token"]
    normalized = [entry["version_normalized"] for entry in token]
    assert sorted(normalized, key=version_sort_key, reverse=True) == normalized


# ---------------------------------------------------------------------------
# drupal_to_composer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drupal", "composer"),
    [
        ("8.x-1.9", "1.9.0"),
        ("8.x-1.10", "1.10.0"),
        ("7.x-3.4-beta2", "3.4.0-beta2"),
        ("8.x-1.0-alpha1", "1.0.0-alpha1"),
        ("8.x-1.0-rc1", "1.0.0-rc1"),
        ("6.x-2.0", "2.0.0"),
        ("5.x-1.0", "1.0.0"),
        ("9.x-0.1", "0.1.0"),
        ("8.x-1.x", "1.x-dev"),
        ("8.x-1.x-dev", "1.x-dev"),
        ("7.x-10.x", "10.x-dev"),
        ("2.0.3", "2.0.3"),
        ("2.0.0-beta1", "2.0.0-beta1"),
        ("10.1.0-rc1", "10.1.0-rc1"),
        ("2.1.x", "2.1.x-dev"),
        ("2.1.x-dev", "2.1.x-dev"),
        ("3.x", "3.x-dev"),
        ("3.x-dev", "3.x-dev"),
    ],
)
def test_drupal_to_composer(drupal: str, composer: str) -> None:
    assert drupal_to_composer(drupal) == composer


@pytest.mark.parametrize(
    "drupal",
    [
        "",
        "8.x-",
        "foo",
        "8.x-1.9-banana",
        "1.2.3.4.5",
        "8.x-1",
        "8.x-1.9.1",
        "8.x-1.9-beta",
        "8.x-1.9-BETA1",
        "8.x-1.9-unstable1",
        "8.x-1.09",
        "08.x-1.9",
        "x-1.9",
        "8.x-1.x-dev-dev",
        " 8.x-1.9",
        "8.x-1.9\n",
        "1.9",
        "1.9.0-rc",
        "v2.0.3",
        "2.0.3+build",
        "dev-main",
        "8.x-123456.0",
        "123456.0.0",
        "8.x-\u0661.9",  # ARABIC-INDIC DIGIT ONE: not an ASCII digit
    ],
)
def test_drupal_to_composer_refuses(drupal: str) -> None:
    with pytest.raises(InvalidVersionError) as caught:
        drupal_to_composer(drupal)
    message = str(caught.value)
    assert repr(drupal) in message
    assert "N.x-A.B" in message or "Composer refuses" in message


def test_invalid_version_is_a_rejection() -> None:
    with pytest.raises(RejectedError) as caught:
        drupal_to_composer("foo")
    assert caught.value.reason == "invalid-version"


NUMBER = st.integers(min_value=0, max_value=99999)
CORE = st.integers(min_value=4, max_value=12)
TAG = st.sampled_from(["alpha", "beta", "rc"])
COMPOSER_TAG = {"alpha": "alpha", "beta": "beta", "rc": "RC"}


@given(core=CORE, major=NUMBER, minor=NUMBER, extra=st.none() | st.tuples(TAG, NUMBER))
def test_legacy_release_maps_and_normalizes(
    core: int, major: int, minor: int, extra: tuple[str, int] | None
) -> None:
    suffix = f"-{extra[0]}{extra[1]}" if extra else ""
    composer = drupal_to_composer(f"{core}.x-{major}.{minor}{suffix}")

    assert composer == f"{major}.{minor}.0{suffix}"
    normalized = normalize_version(composer)
    tail = f"-{COMPOSER_TAG[extra[0]]}{extra[1]}" if extra else ""
    assert normalized == f"{major}.{minor}.0.0{tail}"
    assert normalize_version(normalized) == normalized
    assert not is_dev(composer)
    assert version_stability(composer) == (COMPOSER_TAG[extra[0]] if extra else "stable")


@given(major=NUMBER, minor=NUMBER, patch=NUMBER, extra=st.none() | st.tuples(TAG, NUMBER))
def test_semver_release_passes_through(
    major: int, minor: int, patch: int, extra: tuple[str, int] | None
) -> None:
    version = f"{major}.{minor}.{patch}" + (f"-{extra[0]}{extra[1]}" if extra else "")
    assert drupal_to_composer(version) == version
    assert normalize_version(version).startswith(f"{major}.{minor}.{patch}.0")
    assert not is_dev(version)


@given(core=CORE, major=NUMBER, suffix=st.sampled_from(["", "-dev"]))
def test_legacy_branch_is_a_dev_version(core: int, major: int, suffix: str) -> None:
    composer = drupal_to_composer(f"{core}.x-{major}.x{suffix}")
    assert composer == f"{major}.x-dev"
    assert is_dev(composer)
    assert normalize_version(composer) == f"{major}.9999999.9999999.9999999-dev"


@given(major=NUMBER, minor=NUMBER, suffix=st.sampled_from(["", "-dev"]))
def test_semver_branch_is_a_dev_version(major: int, minor: int, suffix: str) -> None:
    composer = drupal_to_composer(f"{major}.{minor}.x{suffix}")
    assert composer == f"{major}.{minor}.x-dev"
    assert is_dev(composer)
    assert normalize_version(composer) == f"{major}.{minor}.9999999.9999999-dev"


@given(st.text(max_size=20))
def test_drupal_to_composer_returns_a_composer_version_or_refuses(text: str) -> None:
    try:
        composer = drupal_to_composer(text)
    except InvalidVersionError as exc:
        assert repr(text) in str(exc)
    else:
        normalize_version(composer)


# ---------------------------------------------------------------------------
# normalize_version (expected values are Composer 2.5.5's own output)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "normalized"),
    [
        ("1.9.0", "1.9.0.0"),
        ("1.0.0-alpha1", "1.0.0.0-alpha1"),
        ("1.0.0-rc1", "1.0.0.0-RC1"),
        ("3.4.0-beta2", "3.4.0.0-beta2"),
        ("1.x-dev", "1.9999999.9999999.9999999-dev"),
        ("2.1.x-dev", "2.1.9999999.9999999-dev"),
        ("dev-main", "dev-main"),
        ("master", "dev-master"),
        ("v1.2", "1.2.0.0"),
        ("1.0.0+build.5", "1.0.0.0"),
        ("1.0-beta.1.2", "1.0.0.0-beta1.2"),
        ("1.0.0RC1", "1.0.0.0-RC1"),
        ("1.0.0-pl3", "1.0.0.0-patch3"),
        ("1.0.0-patch1-dev", "1.0.0.0-patch1-dev"),
        ("1.0.x-dev as 1.0.0", "1.0.9999999.9999999-dev"),
        ("1.0@dev", "1.0.0.0"),
        ("20230101", "20230101"),
        ("2023-01-01", "2023.01.01"),
        ("1.0.0-stable", "1.0.0.0"),
        ("v2.x-dev", "2.9999999.9999999.9999999-dev"),
        ("1.*-dev", "1.9999999.9999999.9999999-dev"),
        ("1.2.3.4-dev", "1.2.3.4-dev"),
        (" 1.0 ", "1.0.0.0"),
        ("1.0.0.0-RC1", "1.0.0.0-RC1"),
    ],
)
def test_normalize_version(version: str, normalized: str) -> None:
    assert normalize_version(version) == normalized


@pytest.mark.parametrize(
    "version",
    ["", "dev", "foo", "1.2.3.4.5", "1.0.0-banana", "123456.0.0", "8.x-1.9", "1.\u0663.0"],
)
def test_normalize_version_refuses(version: str) -> None:
    with pytest.raises(InvalidVersionError) as caught:
        normalize_version(version)
    assert repr(version) in str(caught.value)


@given(st.text(max_size=30))
def test_normalize_version_normalizes_or_refuses(text: str) -> None:
    try:
        normalize_version(text)
    except InvalidVersionError as exc:
        assert repr(text) in str(exc)


# ---------------------------------------------------------------------------
# Stability
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "stability"),
    [
        ("1.9.0", "stable"),
        ("1.0.0-alpha1", "alpha"),
        ("1.0.0-rc1", "RC"),
        ("1.0.0.0-RC1", "RC"),
        ("3.4.0-beta2", "beta"),
        ("1.x-dev", "dev"),
        ("2.1.x-dev", "dev"),
        ("1.9999999.9999999.9999999-dev", "dev"),
        ("dev-main", "dev"),
        ("1.0@dev", "dev"),
        ("1.0.0-patch1-dev", "dev"),
        ("1.0.0-pl3", "stable"),
        ("master", "stable"),
    ],
)
def test_version_stability(version: str, stability: str) -> None:
    assert version_stability(version) == stability
    assert is_dev(version) == (stability == "dev")


# ---------------------------------------------------------------------------
# Order
# ---------------------------------------------------------------------------

NEWEST_FIRST = [
    "dev-main",
    "2.1.9999999.9999999-dev",
    "2.1.0.0",
    "2.0.0.0",
    "2.0.0.0-RC2",
    "2.0.0.0-RC1",
    "2.0.0.0-beta10",
    "2.0.0.0-beta2",
    "2.0.0.0-alpha1",
    "2.0.0.0-dev",
    "1.9999999.9999999.9999999-dev",
    "1.10.0.0",
    "1.9.0.0-patch1",
    "1.9.0.0",
    "1.9.0.0-RC1",
    "1.9.0.0-beta2",
    "1.9.0.0-beta1",
    "1.9.0.0-beta1-dev",
    "1.9.0.0-alpha2",
    "1.0.0.0",
    "0.1.0.0",
]


def test_newest_first_order() -> None:
    shuffled = NEWEST_FIRST[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=version_sort_key, reverse=True) == NEWEST_FIRST


@given(st.permutations(NEWEST_FIRST))
def test_sorting_any_permutation_gives_newest_first(versions: list[str]) -> None:
    assert sorted(versions, key=version_sort_key, reverse=True) == NEWEST_FIRST


def test_ten_is_newer_than_nine_and_rc_newer_than_beta() -> None:
    assert version_sort_key("1.10.0.0") > version_sort_key("1.9.0.0")
    assert version_sort_key("1.0.0.0-RC1") > version_sort_key("1.0.0.0-beta9")
    assert version_sort_key("1.0.0.0") > version_sort_key("1.0.0.0-RC1")
    assert version_sort_key("1.0.0.0-alpha1") > version_sort_key("1.0.0.0-dev")


STABILITY_RANK = {"alpha": 1, "beta": 2, "rc": 3}
RELEASE = st.tuples(
    st.integers(0, 30), st.integers(0, 30), st.integers(0, 30), st.none() | st.tuples(TAG, NUMBER)
)


@given(st.lists(RELEASE, min_size=2, max_size=12, unique=True))
def test_order_is_numeric_then_stability(releases: list[Any]) -> None:
    def oracle(release: Any) -> tuple[int, ...]:
        major, minor, patch, extra = release
        return (major, minor, patch, *((STABILITY_RANK[extra[0]], extra[1]) if extra else (4, 0)))

    def normalized(release: Any) -> str:
        major, minor, patch, extra = release
        suffix = f"-{extra[0]}{extra[1]}" if extra else ""
        return normalize_version(drupal_to_composer(f"{major}.{minor}.{patch}{suffix}"))

    by_key = sorted(releases, key=lambda release: version_sort_key(normalized(release)))
    assert by_key == sorted(releases, key=oracle)


@given(st.text(max_size=20), st.text(max_size=20))
def test_sort_key_is_total_and_never_raises(a: str, b: str) -> None:
    key_a, key_b = version_sort_key(a), version_sort_key(b)
    assert (key_a == key_b) == (a == b)
