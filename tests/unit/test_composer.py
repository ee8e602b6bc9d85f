"""Composer documents: the composer/2.0 minifier, p2 files, packages.json, version entries."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import composer, version_entries
from schemas.composer import (
    UNSET,
    check_servable_entry,
    expand,
    minify,
    render_p2,
    render_packages_json,
)
from schemas.errors import InvalidVersionError, MalformedEventError
from schemas.names import check_package_name
from schemas.version_entries import version_entry, with_dist_url
from tests.drupal_fixtures import DRUPAL_P2

FIXTURES = DRUPAL_P2
SHA1 = "a5d234382a1a0e4ba61d4c7a2fa10671ca656be4"


def load_fixture(project: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((FIXTURES / f"{project}.json").read_bytes())
    return document


# ---------------------------------------------------------------------------
# minify / expand
# ---------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)
# Few keys, so that consecutive entries share, change and lose keys.
KEYS = st.sampled_from(["name", "version", "require", "extra", "dist", "a", "b", ""])
TOP_LEVEL_VALUES = JSON_VALUES.filter(lambda value: value != UNSET)
ENTRIES = st.lists(st.dictionaries(KEYS, TOP_LEVEL_VALUES, max_size=6), max_size=8)


# Entries of nested JSON are large draws: run alone on a fresh example database, the first
# ones took over a second and Hypothesis refused the test as too slow to generate.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(ENTRIES)
def test_expand_undoes_minify(versions: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(versions)
    round_trip = expand(minify(versions))

    assert round_trip == versions
    # Same types (1 is not 1.0 nor True) and the same bytes inside every value. Only the order
    # of an entry's own keys may differ: expand() keeps the order in which keys first appeared.
    assert [exact_values(entry) for entry in round_trip] == [exact_values(v) for v in versions]
    assert versions == before


def exact_values(entry: dict[str, Any]) -> dict[str, bytes]:
    return {key: orjson.dumps(value) for key, value in entry.items()}


@given(ENTRIES)
def test_minified_entries_hold_only_changes(versions: list[dict[str, Any]]) -> None:
    minified = minify(versions)
    expanded = expand(minified)
    assert len(minified) == len(versions)
    for previous, entry, current in zip(expanded, minified[1:], expanded[1:], strict=False):
        if not previous:
            continue  # after an empty entry Composer restarts with a whole one
        for key, value in entry.items():
            if value == UNSET:
                assert key in previous
                assert key not in current
            else:
                assert key not in previous or orjson.dumps(previous[key]) != orjson.dumps(value)


def test_minify_as_composer() -> None:
    versions = [
        {"name": "drupal/token", "version": "1.9.0", "require": {"drupal/core": "^9"}, "a": 1},
        {"name": "drupal/token", "version": "1.8.0", "require": {"drupal/core": "^9"}, "b": 2},
        {"name": "drupal/token", "version": "1.7.0", "require": {"drupal/core": "^8"}, "b": 2},
    ]
    assert minify(versions) == [
        versions[0],
        {"version": "1.8.0", "b": 2, "a": UNSET},
        {"version": "1.7.0", "require": {"drupal/core": "^8"}},
    ]
    assert expand(minify(versions)) == versions


def test_minify_compares_as_php_strict_equality() -> None:
    # Composer 2.5.5 emits all three: other key order, int vs float, bool vs int.
    versions = [
        {"a": {"x": 1, "y": 2}, "b": 1, "c": True},
        {"a": {"y": 2, "x": 1}, "b": 1.0, "c": 1},
    ]
    assert minify(versions)[1] == {"a": {"y": 2, "x": 1}, "b": 1.0, "c": 1}


# What orjson cannot tell apart (null, NaN, infinities), cannot write (65-bit integers,
# keys that are not strings) or writes alike for Python-equal values (key order, 1 and 1.0).
TRICKY_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from([0.0, -0.0, 1, 1.0, "null", "a null", ""]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "null"]), children, max_size=3)
        | st.dictionaries(st.integers(0, 2), children, min_size=1, max_size=2)
    ),
    max_leaves=8,
)


@example([None], [math.nan])
@example({"a": 1}, {"a": 1.0})
@example({"a": 1, "b": 2}, {"b": 2, "a": 1})
@example([-0.0], [0.0])
@example([2**64], [2**64])
@example({1: "a"}, {1: "a"})
@given(TRICKY_VALUES, TRICKY_VALUES)
def test_the_quick_strict_comparison_agrees_with_walking_the_values(a: Any, b: Any) -> None:
    # minify compares through orjson where it can: never another verdict than the walk's.
    assert composer._same_json(a, b) == composer._same_json_walked(a, b)
    assert composer._same_json(a, copy.deepcopy(a)) == composer._same_json_walked(
        a, copy.deepcopy(a)
    )


@example({"a": [1, None, {"b": None}]})
@example({"a": math.nan})
@example({"a": [math.inf]})
@example({"a": 2**64})
@example({"a": {1: "b"}})
@example({"a": "null", "b": -0.0})
@given(st.dictionaries(st.sampled_from(["a", "b", "null"]), TRICKY_VALUES, max_size=4))
def test_the_quick_copy_without_nulls_agrees_with_the_walk(value: dict[str, Any]) -> None:
    def outcome(copy_of: Callable[..., dict[str, Any]]) -> tuple[str, str]:
        try:
            copied = copy_of(value, where="drupal/token 1.0.0")
        except MalformedEventError as exc:
            return "refused", str(exc)
        assert copied is not value
        return "copied", repr(copied)  # repr tells 1 from 1.0 and -0.0 from 0.0

    before = repr(value)
    assert outcome(version_entries._copy_without_nulls) == outcome(
        version_entries.object_without_nulls
    )
    assert repr(value) == before  # the input is untouched


def test_expand_reads_php_empty_array_entries() -> None:
    # PHP's json_encode() writes an entry equal to the previous one as [].
    document = orjson.loads(b'[{"a":1},[],{"a":"__unset","b":2}]')
    assert expand(document) == [{"a": 1}, {"a": 1}, {"b": 2}]


def test_minify_refuses_to_write_unset_as_a_value() -> None:
    with pytest.raises(ValueError, match="__unset"):
        minify([{"a": 1}, {"a": UNSET}])


def test_minify_and_expand_of_nothing() -> None:
    assert minify([]) == []
    assert expand([]) == []


def test_token_fixture_is_minified_and_expands_to_complete_entries() -> None:
    document = load_fixture("token")
    minified = document["packages"]["drupal/token"]
    assert document["minified"] == "composer/2.0"
    # Minified indeed: only the newest entry is whole.
    assert "name" in minified[0]
    assert all("name" not in entry for entry in minified[1:])

    expanded = expand(minified)

    assert len(expanded) == 15
    for entry in expanded:
        assert entry["name"] == "drupal/token"
        assert entry["type"] == "drupal-module"
        assert entry["homepage"] == "https://www.drupal.org/project/token"
        assert entry["dist"]["reference"] == entry["extra"]["drupal"]["version"]
        assert entry["dist"]["url"].endswith(f"token-{entry['extra']['drupal']['version']}.zip")
    assert [entry["version"] for entry in expanded][:3] == ["1.9.0", "1.8.0", "1.7.0"]
    # 1.8.0 lists no license: it inherits 1.9.0's; 1.7.0 lists another, which 1.6.0 inherits.
    assert [entry["license"] for entry in expanded[:4]] == [
        "GPL-2.0-or-later",
        "GPL-2.0-or-later",
        "GPL-2.0+",
        "GPL-2.0+",
    ]
    # packages.drupal.org minified exactly as our minifier does.
    assert minify(expanded) == minified


def test_pathauto_fixture_has_one_complete_entry() -> None:
    minified = load_fixture("pathauto")["packages"]["drupal/pathauto"]
    assert expand(minified) == minified
    assert minify(minified) == minified


# ---------------------------------------------------------------------------
# render_p2
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("project", ["token", "pathauto"])
def test_render_p2_reproduces_packages_drupal_org(project: str) -> None:
    name = f"drupal/{project}"
    document = load_fixture(project)
    expanded = expand(document["packages"][name])

    rendered = render_p2(name, list(reversed(expanded)))

    assert set(rendered) == {f"p2/{name}.json", f"p2/{name}~dev.json"}
    assert rendered[f"p2/{name}.json"] == orjson.dumps(document)
    assert orjson.loads(rendered[f"p2/{name}~dev.json"]) == {
        "packages": {name: []},
        "minified": "composer/2.0",
    }


def token_entries() -> list[dict[str, Any]]:
    releases = ["8.x-1.9", "8.x-1.10", "8.x-1.0-rc1", "8.x-1.0-beta2", "8.x-1.x", "2.0.0-alpha1"]
    return [
        version_entry(
            name="drupal/token",
            drupal_version=release,
            sha1=SHA1,
            dist_url=f"https://ftp.drupal.org/files/projects/token-{release}.zip",
            metadata={"require": {"drupal/core": "^9 || ^10"}, "description": "Tokens."},
        )
        for release in releases
    ] + [
        version_entry(
            name="drupal/token",
            drupal_version="2.1.x-dev",
            sha1=SHA1,
            dist_url="https://ftp.drupal.org/files/projects/token-2.1.x-dev.zip",
        )
    ]


def p2_versions(rendered: dict[str, bytes], path: str) -> list[dict[str, Any]]:
    document = orjson.loads(rendered[path])
    assert document["minified"] == "composer/2.0"
    assert list(document["packages"]) == ["drupal/token"]
    versions: list[dict[str, Any]] = expand(document["packages"]["drupal/token"])
    return versions


def test_render_p2_splits_dev_versions_newest_first() -> None:
    rendered = render_p2("drupal/token", token_entries())

    stable = p2_versions(rendered, "p2/drupal/token.json")
    dev = p2_versions(rendered, "p2/drupal/token~dev.json")

    assert [v["version"] for v in stable] == [
        "2.0.0-alpha1",
        "1.10.0",
        "1.9.0",
        "1.0.0-rc1",
        "1.0.0-beta2",
    ]
    assert [v["version"] for v in dev] == ["2.1.x-dev", "1.x-dev"]
    assert [v["extra"]["drupal"]["version"] for v in dev] == ["2.1.x-dev", "8.x-1.x"]
    assert all(v["name"] == "drupal/token" for v in stable + dev)
    assert {v["version"] for v in stable + dev} == {e["version"] for e in token_entries()}


@given(st.permutations(token_entries()))
def test_render_p2_is_independent_of_input_order(entries: list[dict[str, Any]]) -> None:
    assert render_p2("drupal/token", entries) == render_p2("drupal/token", token_entries())


def test_render_p2_drops_nulls_at_every_depth() -> None:
    entries = token_entries()
    entries[0]["description"] = None
    entries[0]["extra"]["drush"] = None
    entries[0]["authors"] = [{"name": "Berdir", "email": None}, None]
    entries[-1]["license"] = None

    rendered = render_p2("drupal/token", entries)

    for document in rendered.values():
        assert b"null" not in document
    stable = p2_versions(rendered, "p2/drupal/token.json")
    assert stable[2]["authors"] == [{"name": "Berdir"}]
    assert entries[0]["description"] is None  # the input is untouched


def test_render_p2_completes_name_and_version_normalized() -> None:
    entry = token_entries()[0]
    del entry["name"], entry["version_normalized"]
    [version] = p2_versions(render_p2("drupal/token", [entry]), "p2/drupal/token.json")
    assert version["name"] == "drupal/token"
    assert version["version_normalized"] == "1.9.0.0"


def test_render_p2_of_no_versions() -> None:
    rendered = render_p2("drupal/token", [])
    assert rendered == {
        "p2/drupal/token.json": b'{"packages":{"drupal/token":[]},"minified":"composer/2.0"}',
        "p2/drupal/token~dev.json": b'{"packages":{"drupal/token":[]},"minified":"composer/2.0"}',
    }


def broken(change: str) -> list[dict[str, Any]]:
    entries = token_entries()
    entry = entries[0]
    if change == "other package":
        entry["name"] = "drupal/pathauto"
    elif change == "no version":
        del entry["version"]
    elif change == "wrong version_normalized":
        entry["version_normalized"] = "9.0.0.0"
    elif change == "same version twice":
        entries.append(copy.deepcopy(entry))
    elif change == "same version, other spelling":
        entries.append({**copy.deepcopy(entry), "version": "1.9", "version_normalized": "1.9.0.0"})
    elif change == "dist without url":
        del entry["dist"]["url"]
    elif change == "dist not an object":
        entry["dist"] = "https://example.org/token.zip"
    elif change == "NaN":
        entry["extra"]["weight"] = math.nan
    elif change == "non-string key":
        entry["extra"][1] = "one"
    elif change == "huge integer":
        entry["extra"]["weight"] = 2**70
    return entries


@pytest.mark.parametrize(
    "change",
    [
        "other package",
        "no version",
        "wrong version_normalized",
        "same version twice",
        "same version, other spelling",
        "dist without url",
        "dist not an object",
        "NaN",
        "non-string key",
        "huge integer",
    ],
)
def test_render_p2_refuses_what_composer_would_refuse(change: str) -> None:
    with pytest.raises(MalformedEventError, match="drupal/token"):
        render_p2("drupal/token", broken(change))


def test_render_p2_refuses_an_invalid_version() -> None:
    entry = token_entries()[0]
    entry["version"] = "8.x-1.9"
    with pytest.raises(InvalidVersionError, match=re.escape("8.x-1.9")):
        render_p2("drupal/token", [entry])


@pytest.mark.parametrize(
    "name",
    [
        "",
        "token",
        "drupal/",
        "/token",
        "drupal/Token",
        "drupal/../token",
        "../../etc/passwd",
        "drupal/token/x",
        "drupal/token.json",
        "drupal/con",
        "drupal/to ken",
        "drupal/token\n",
    ],
)
def test_package_names_composer_refuses(name: str) -> None:
    with pytest.raises(MalformedEventError) as caught:
        check_package_name(name)
    assert repr(name) in str(caught.value)
    with pytest.raises(MalformedEventError):
        render_p2(name, [])


@pytest.mark.parametrize("name", ["drupal/token", "drupal/search_api", "a/b", "x-y.z/a--b.c_d"])
def test_package_names_composer_accepts(name: str) -> None:
    assert check_package_name(name) == name


# ---------------------------------------------------------------------------
# check_servable_entry: render_p2's verdict on one entry, without rendering it
# ---------------------------------------------------------------------------

Verdict = tuple[type[Exception], str] | None


def render_verdict(name: str, entry: dict[str, Any]) -> Verdict:
    """What rendering a p2 document of this one entry says: nothing, or its error and message."""
    try:
        render_p2(name, [entry])
    except (MalformedEventError, InvalidVersionError) as exc:
        return type(exc), str(exc)
    return None


def check_verdict(name: str, entry: dict[str, Any]) -> Verdict:
    try:
        check_servable_entry(name, entry)
    except (MalformedEventError, InvalidVersionError) as exc:
        return type(exc), str(exc)
    return None


def real_entries() -> list[dict[str, Any]]:
    """Every version of the packages.drupal.org fixtures, expanded as a node holds them, and
    version_entry's token releases, -dev branches included."""
    entries = [
        copy.deepcopy(entry)
        for project in ("token", "pathauto")
        for entry in expand(load_fixture(project)["packages"][f"drupal/{project}"])
    ]
    return entries + token_entries()


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep: as a value of an entry, its innermost object is at level
    ``levels + 1`` (the entry is level 1)."""
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


class Weight(IntEnum):
    HEAVY = 3


class Label(str):
    pass


def put(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets ``value`` at ``path``, making the objects on the way if missing."""

    def change(entry: dict[str, Any]) -> None:
        target = entry
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = value

    return change


def drop(*path: str) -> Callable[[dict[str, Any]], None]:
    """A change that removes the key at ``path``."""

    def change(entry: dict[str, Any]) -> None:
        target = entry
        for key in path[:-1]:
            target = target[key]
        target.pop(path[-1], None)

    return change


# What render_p2 checks, one change at a time: each must get the same verdict and message.
CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "nothing": lambda entry: None,
    "no version": drop("version"),
    "version None": put(("version",), None),
    "version a number": put(("version",), 190),
    "version in Drupal's spelling": put(("version",), "8.x-1.9"),
    "version Composer refuses": put(("version",), "not a version"),
    "another package's name": put(("name",), "drupal/pathauto"),
    "name None": put(("name",), None),
    "name a number": put(("name",), 7),
    "no name": drop("name"),
    "wrong version_normalized": put(("version_normalized",), "9.0.0.0"),
    "version_normalized None": put(("version_normalized",), None),
    "version_normalized a number": put(("version_normalized",), 1.9),
    "no version_normalized": drop("version_normalized"),
    "no dist": drop("dist"),
    "dist None": put(("dist",), None),
    "dist a string": put(("dist",), "https://example.org/token.zip"),
    "dist without url": drop("dist", "url"),
    "dist url empty": put(("dist", "url"), ""),
    "dist url None": put(("dist", "url"), None),
    "dist type None": put(("dist", "type"), None),
    "dist type a number": put(("dist", "type"), 1),
    "dist with a None": put(("dist", "mirror"), None),
    "NaN deep down": put(("extra", "drupal", "weight"), math.nan),
    "infinity": put(("weight",), math.inf),
    "minus infinity in a list": put(("keywords",), ["a", -math.inf]),
    "a float": put(("weight",), 0.5),
    "a key that is a number": put(("extra", 1), "one"),
    "a key that is None": put(("extra", None), "none"),
    "largest u64": put(("weight",), 2**64 - 1),
    "beyond u64": put(("weight",), 2**64),
    "smallest i64": put(("weight",), -(2**63)),
    "below i64": put(("require", "weight"), -(2**63) - 1),
    "a lone surrogate": put(("description",), "caf\ud800"),
    "a lone surrogate in a key": put(("extra", "\udfff"), "x"),
    "accents and emoji": put(("description",), "Café ☕ 🚀"),
    "Nones in a list": put(("keywords",), [None, "a", None]),
    "a tuple": put(("keywords",), ("a", "b")),
    "a set": put(("keywords",), {"a"}),
    "bytes": put(("description",), b"bytes"),
    "an IntEnum": put(("weight",), Weight.HEAVY),
    "a str subclass": put(("description",), Label("label")),
    "a bool": put(("abandoned",), True),
    "the unset marker": put(("description",), UNSET),
    "nested 31 levels": put(("extra",), nested(31)),
    "nested 32 levels": put(("extra",), nested(32)),
    "nested 250 levels": put(("extra",), nested(250)),
    "nested 251 levels": put(("extra",), nested(251)),
    "nested 252 levels": put(("extra",), nested(252)),
}


# token 1.9.0 (whole in the fixture), 1.4.0 (expanded from a minified one), pathauto 1.12.0,
# version_entry's 8.x-1.x (a -dev branch) and 2.1.x-dev.
POSITIONS = [0, 5, 15, 20, 22]


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("position", POSITIONS)
def test_check_servable_entry_says_what_rendering_says(change: str, position: int) -> None:
    entry = real_entries()[position]
    name = entry["name"]
    CHANGES[change](entry)

    assert check_verdict(name, entry) == render_verdict(name, entry)


def test_real_entries_are_judged_without_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = real_entries()
    assert all(render_verdict(entry["name"], entry) is None for entry in entries)

    def no_rendering(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        raise AssertionError("check_servable_entry rendered a plain entry")

    monkeypatch.setattr(composer, "render_p2", no_rendering)
    for entry in entries:
        check_servable_entry(entry["name"], entry)


def test_the_table_holds_every_way_rendering_refuses_an_entry() -> None:
    # Otherwise the agreement above would say little: each check of render_p2 is hit.
    refused = set()
    for change, apply in CHANGES.items():
        entry = real_entries()[0]
        apply(entry)
        if render_verdict("drupal/token", entry) is not None:
            refused.add(change)

    assert refused == {
        "no version",
        "version None",
        "version a number",
        "version in Drupal's spelling",
        "version Composer refuses",
        "another package's name",
        "name a number",
        "wrong version_normalized",
        "version_normalized a number",
        "dist a string",
        "dist without url",
        "dist url empty",
        "dist url None",
        "dist type None",
        "dist type a number",
        "NaN deep down",
        "infinity",
        "minus infinity in a list",
        "a key that is a number",
        "a key that is None",
        "beyond u64",
        "below i64",
        "a lone surrogate",
        "a lone surrogate in a key",
        "a set",
        "bytes",
        "nested 251 levels",  # its innermost object is at level 252 of the entry
        "nested 252 levels",
    }


@pytest.mark.parametrize("name", ["drupal/Token", "drupal/con", "drupal/token.json", "token"])
def test_check_servable_entry_refuses_a_name_as_rendering_does(name: str) -> None:
    entry = real_entries()[0]
    del entry["name"]

    assert check_verdict(name, entry) == render_verdict(name, entry) is not None


# Values beyond what a p2 document can hold, as a source or a caller may hand them over.
ODD_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["\ud800", "caf\u00e9", UNSET, "", "1.9.0", "drupal/token", "zip"])
)
ODD_VALUES = st.recursive(
    ODD_SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=3) | st.integers() | st.just("\udc80"), children, max_size=3
        )
        | st.tuples(children)
    ),
    max_leaves=8,
)
# Where a value lands: render_p2's own keys, the dist object and the nested metadata.
PLACES = st.sampled_from(
    [
        ("version",),
        ("name",),
        ("version_normalized",),
        ("dist",),
        ("dist", "url"),
        ("dist", "type"),
        ("dist", "shasum"),
        ("extra",),
        ("extra", "drupal", "version"),
        ("require",),
        ("require", "drupal/core"),
        ("authors",),
        ("description",),
        ("new-key",),
    ]
)


@given(
    position=st.integers(min_value=0, max_value=len(real_entries()) - 1),
    changes=st.lists(st.tuples(PLACES, ODD_VALUES), min_size=1, max_size=3),
)
def test_check_servable_entry_agrees_with_rendering_on_altered_real_entries(
    position: int, changes: list[tuple[tuple[str, ...], Any]]
) -> None:
    entry = real_entries()[position]
    name = entry["name"]
    for path, value in changes:
        put(path, value)(entry)

    assert check_verdict(name, entry) == render_verdict(name, entry)


def test_an_entry_too_deep_to_render_is_refused_not_a_crash() -> None:
    entry = real_entries()[0]
    entry["extra"] = nested(5000)

    with pytest.raises(RecursionError):
        render_p2("drupal/token", [entry])
    with pytest.raises(MalformedEventError, match="nest too deep"):
        check_servable_entry("drupal/token", entry)


# ---------------------------------------------------------------------------
# packages.json
# ---------------------------------------------------------------------------


def test_packages_json() -> None:
    document = orjson.loads(render_packages_json())
    assert document == {
        "packages": [],
        "metadata-url": "/p2/%package%.json",
        "available-package-patterns": ["drupal/*"],
    }


def test_packages_json_with_notify_batch_and_patterns() -> None:
    raw = render_packages_json(
        patterns=("drupal/*", "acme/*"), notify_batch="https://node.example/downloads/"
    )
    document = orjson.loads(raw)
    assert document["available-package-patterns"] == ["drupal/*", "acme/*"]
    assert document["notify-batch"] == "https://node.example/downloads/"
    assert document["metadata-url"] == "/p2/%package%.json"
    assert b"null" not in raw


def test_packages_json_without_patterns_leaves_the_key_out() -> None:
    document = orjson.loads(render_packages_json(patterns=()))
    assert "available-package-patterns" not in document
    assert "notify-batch" not in document


def test_packages_json_with_an_absolute_metadata_url() -> None:
    url = "https://node.example/fair/p2/%package%.json"
    assert orjson.loads(render_packages_json(metadata_url=url))["metadata-url"] == url


def test_packages_json_with_advisories_and_mirrors() -> None:
    raw = render_packages_json(
        metadata_url="https://eu.example/p2/%package%.json",
        notify_batch="https://eu.example/downloads/",
        security_advisories_api="https://eu.example/api/security-advisories/",
        security_advisories_in_metadata=True,
        dist_mirrors=[
            "https://us.example/mirror/%package%/%prettyVersion%.%type%",
            "https://ap.example/mirror/%package%/%prettyVersion%.%type%",
        ],
    )
    assert orjson.loads(raw) == {
        "packages": [],
        "metadata-url": "https://eu.example/p2/%package%.json",
        "available-package-patterns": ["drupal/*"],
        "notify-batch": "https://eu.example/downloads/",
        "security-advisories": {
            "metadata": True,
            "api-url": "https://eu.example/api/security-advisories/",
        },
        "mirrors": [
            {
                "dist-url": "https://us.example/mirror/%package%/%prettyVersion%.%type%",
                "preferred": False,
            },
            {
                "dist-url": "https://ap.example/mirror/%package%/%prettyVersion%.%type%",
                "preferred": False,
            },
        ],
    }
    # Composer's `!empty($mirror['preferred'])`: false must be a JSON false, not "false".
    assert b'"preferred":false' in raw


@pytest.mark.parametrize(
    ("api", "in_metadata", "expected"),
    [
        (None, True, {"metadata": True}),
        (
            "/api/security-advisories/",
            False,
            {"metadata": False, "api-url": "/api/security-advisories/"},
        ),
    ],
)
def test_packages_json_security_advisories_key(
    api: str | None, in_metadata: bool, expected: dict[str, Any]
) -> None:
    document = orjson.loads(
        render_packages_json(
            security_advisories_api=api, security_advisories_in_metadata=in_metadata
        )
    )
    assert document["security-advisories"] == expected
    assert "mirrors" not in document


def test_packages_json_without_advisories_or_mirrors_leaves_the_keys_out() -> None:
    document = orjson.loads(render_packages_json(dist_mirrors=[]))
    assert "security-advisories" not in document
    assert "mirrors" not in document


# ---------------------------------------------------------------------------
# version_entry / with_dist_url
# ---------------------------------------------------------------------------

OURS = ("name", "version", "version_normalized", "dist", "source")


def fixture_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for project in ("token", "pathauto"):
        entries += expand(load_fixture(project)["packages"][f"drupal/{project}"])
    return entries


@pytest.mark.parametrize(
    "published", fixture_entries(), ids=lambda entry: f"{entry['name']}:{entry['version']}"
)
def test_version_entry_rebuilds_packages_drupal_org_entries(published: dict[str, Any]) -> None:
    metadata = {key: value for key, value in published.items() if key not in OURS}

    entry = version_entry(
        name=published["name"],
        drupal_version=published["extra"]["drupal"]["version"],
        sha1=published["dist"]["shasum"],
        dist_url=published["dist"]["url"],
        metadata=metadata,
    )

    assert entry == published
    assert list(entry["dist"]) == ["type", "url", "reference", "shasum"]


def test_version_entry_defaults() -> None:
    entry = version_entry(name="drupal/token", drupal_version="7.x-3.4-beta2", sha1=SHA1)
    assert entry == {
        "name": "drupal/token",
        "version": "3.4.0-beta2",
        "version_normalized": "3.4.0.0-beta2",
        "type": "drupal-module",
        "dist": {"type": "zip", "reference": "7.x-3.4-beta2", "shasum": SHA1},
        "source": {
            "type": "git",
            "url": "https://git.drupalcode.org/project/token.git",
            "reference": "7.x-3.4-beta2",
        },
        "extra": {"drupal": {"version": "7.x-3.4-beta2"}},
    }


def test_version_entry_of_a_dev_release_points_git_at_the_branch() -> None:
    entry = version_entry(name="drupal/token", drupal_version="8.x-1.x-dev", sha1=SHA1)
    assert entry["version"] == "1.x-dev"
    assert entry["source"]["reference"] == "8.x-1.x"
    assert entry["dist"]["reference"] == "8.x-1.x-dev"


def test_version_entry_keeps_our_keys_over_metadata() -> None:
    metadata = {
        "name": "evil/package",
        "version": "99.0.0",
        "version_normalized": "99.0.0.0",
        "dist": {"type": "zip", "url": "https://evil.example/x.zip", "shasum": "0" * 40},
        "type": "drupal-theme",
        "extra": {"drupal": {"version": "8.x-99.0", "datestamp": "1608284866"}, "drush": {}},
        "require": {"drupal/core": "^10"},
    }
    before = copy.deepcopy(metadata)

    entry = version_entry(
        name="drupal/token",
        drupal_version="8.x-1.9",
        sha1=SHA1,
        dist_url="https://node.example/dist/token.zip",
        metadata=metadata,
    )

    assert entry["name"] == "drupal/token"
    assert entry["version"] == "1.9.0"
    assert entry["version_normalized"] == "1.9.0.0"
    assert entry["dist"] == {
        "type": "zip",
        "url": "https://node.example/dist/token.zip",
        "reference": "8.x-1.9",
        "shasum": SHA1,
    }
    assert entry["type"] == "drupal-theme"
    assert entry["extra"] == {
        "drupal": {"version": "8.x-1.9", "datestamp": "1608284866"},
        "drush": {},
    }
    assert entry["require"] == {"drupal/core": "^10"}
    assert metadata == before
    entry["require"]["drupal/core"] = "^11"
    assert metadata["require"] == {"drupal/core": "^10"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"drupal_version": "8.x-1.9-banana"}, InvalidVersionError),
        ({"name": "Drupal/Token"}, MalformedEventError),
        ({"sha1": SHA1.upper()}, MalformedEventError),
        ({"sha1": "abc"}, MalformedEventError),
        ({"metadata": {"extra": "x"}}, MalformedEventError),
        ({"metadata": {"extra": {"drupal": []}}}, MalformedEventError),
    ],
)
def test_version_entry_refuses(kwargs: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {
        "name": "drupal/token",
        "drupal_version": "8.x-1.9",
        "sha1": SHA1,
    } | kwargs
    with pytest.raises(error) as caught:
        version_entry(**arguments)
    assert any(repr(value) in str(caught.value) for value in kwargs.values()) or (
        "extra" in str(caught.value)
    )


def test_with_dist_url_sets_the_url_in_a_copy() -> None:
    entry = version_entry(name="drupal/token", drupal_version="8.x-1.9", sha1=SHA1)

    served = with_dist_url(entry, "https://node.example/dist/drupal/token/1.9.0/x.zip")

    assert served["dist"] == {
        "type": "zip",
        "url": "https://node.example/dist/drupal/token/1.9.0/x.zip",
        "reference": "8.x-1.9",
        "shasum": SHA1,
    }
    assert list(served["dist"]) == ["type", "url", "reference", "shasum"]
    assert "url" not in entry["dist"]
    again = with_dist_url(served, "https://other.example/x.zip")
    assert again["dist"]["url"] == "https://other.example/x.zip"
    assert served["dist"]["url"] == "https://node.example/dist/drupal/token/1.9.0/x.zip"
    assert list(again["dist"]) == ["type", "url", "reference", "shasum"]


def test_with_dist_url_needs_a_dist() -> None:
    with pytest.raises(MalformedEventError, match="dist"):
        with_dist_url({"name": "drupal/token", "version": "1.9.0"}, "https://x.example/a.zip")


def test_version_entries_render_to_a_document_composer_reads() -> None:
    entries = [with_dist_url(entry, "https://node.example/a.zip") for entry in token_entries()]
    rendered = render_p2("drupal/token", entries)
    for path, raw in rendered.items():
        versions = expand(orjson.loads(raw)["packages"]["drupal/token"])
        for version in versions:
            assert version["dist"]["url"] == "https://node.example/a.zip"
            assert version["dist"]["shasum"] == SHA1
            assert version["version_normalized"]
            assert path.endswith("~dev.json") == version["version"].endswith("-dev")
