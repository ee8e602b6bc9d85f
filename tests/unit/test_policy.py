"""streams.policy: which packages a region serves, its mode, its quota, the jurisdictions it
may use, and parse_size. No sockets."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import ConfigurationError
from schemas.names import JURISDICTION
from streams.policy import (
    JurisdictionPolicy,
    Purpose,
    ReplicationMode,
    ReplicationPolicy,
    jurisdiction_policy,
    parse_size,
)

# ---------------------------------------------------------------------------
# ReplicationPolicy
# ---------------------------------------------------------------------------


def test_the_default_policy_mirrors_every_drupal_package_without_quota() -> None:
    policy = ReplicationPolicy()

    assert policy.mirrors_artifacts is True
    assert policy.quota_bytes is None
    assert policy.serves("drupal/token")
    assert policy.serves("drupal/core")
    assert not policy.serves("acme/widget")


def test_metadata_only_does_not_mirror_artifacts_but_still_serves() -> None:
    policy = ReplicationPolicy(mode=ReplicationMode.METADATA_ONLY)

    assert policy.mirrors_artifacts is False
    assert policy.serves("drupal/token")


def test_the_mode_values_are_the_command_line_spellings() -> None:
    assert ReplicationMode("full") is ReplicationMode.FULL
    assert ReplicationMode("metadata-only") is ReplicationMode.METADATA_ONLY


def test_an_allow_list_of_exact_names_serves_only_those() -> None:
    policy = ReplicationPolicy(include=("drupal/token", "drupal/pathauto"))

    assert policy.serves("drupal/token")
    assert policy.serves("drupal/pathauto")
    assert not policy.serves("drupal/token_extra")
    assert not policy.serves("drupal/tokens")
    assert not policy.serves("drupal/core")
    assert not policy.serves("acme/token")


def test_an_allow_list_of_globs_matches_by_vendor_and_name() -> None:
    policy = ReplicationPolicy(include=("drupal/token*", "acme/*"))

    assert policy.serves("drupal/token")
    assert policy.serves("drupal/token_extra")
    assert policy.serves("acme/widget")
    assert not policy.serves("drupal/core")
    assert not policy.serves("acmex/widget")


def test_a_deny_list_wins_over_the_allow_list() -> None:
    policy = ReplicationPolicy(include=("drupal/*",), exclude=("drupal/core", "drupal/commerce_*"))

    assert policy.serves("drupal/token")
    assert not policy.serves("drupal/core")
    assert not policy.serves("drupal/commerce_cart")
    assert policy.serves("drupal/commerce")  # "commerce_*" needs the underscore


def test_a_package_both_allowed_by_name_and_denied_is_not_served() -> None:
    policy = ReplicationPolicy(include=("drupal/token",), exclude=("drupal/token",))

    assert not policy.serves("drupal/token")


def test_matching_is_case_sensitive() -> None:
    # Composer names are lower case; an upper-case name is not the same package.
    policy = ReplicationPolicy(include=("drupal/token",))

    assert not policy.serves("Drupal/Token")


def test_the_policy_is_frozen() -> None:
    policy = ReplicationPolicy()

    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.quota_bytes = 1  # type: ignore[misc]


@pytest.mark.parametrize("pattern", ["", "*", "token", "Drupal/*", "drupal/Token"])
@pytest.mark.parametrize("where", ["include", "exclude"])
def test_a_bad_pattern_is_a_configuration_error_that_shows_the_form(
    pattern: str, where: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        if where == "include":
            ReplicationPolicy(include=(pattern,))
        else:
            ReplicationPolicy(exclude=(pattern,))

    message = str(raised.value)
    assert repr(pattern) in message
    assert "vendor/name" in message
    assert "'drupal/*'" in message and "'drupal/token'" in message


def test_an_empty_allow_list_is_a_configuration_error_that_says_what_to_give() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ReplicationPolicy(include=())

    message = str(raised.value)
    assert "allow-list is empty" in message
    assert "--include" in message and "'drupal/*'" in message


@pytest.mark.parametrize("quota", [0, -1, -(1 << 30)])
def test_a_non_positive_quota_is_a_configuration_error(quota: int) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ReplicationPolicy(quota_bytes=quota)

    message = str(raised.value)
    assert str(quota) in message
    assert "leave it out for no quota" in message


def test_a_positive_quota_is_kept() -> None:
    assert ReplicationPolicy(quota_bytes=1).quota_bytes == 1


# ---------------------------------------------------------------------------
# parse_size
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("1", 1),
        ("1K", 1 << 10),
        ("500M", 500 << 20),
        ("20G", 20 << 30),
        ("2T", 2 << 40),
        ("500MB", 500 << 20),
        ("500MiB", 500 << 20),
        ("500mib", 500 << 20),
        ("500m", 500 << 20),
        ("4KB", 4096),
        ("4kib", 4096),
        ("1.5G", 3 << 29),
        ("0.5K", 512),
        ("1.5KiB", 1536),
        ("  20G  ", 20 << 30),
        ("20 G", 20 << 30),
    ],
)
def test_parse_size_reads_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@given(
    n=st.integers(min_value=1, max_value=1 << 32),
    unit=st.sampled_from([("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)]),
    suffix=st.sampled_from(["", "B", "iB"]),
    lower=st.booleans(),
)
def test_parse_size_of_a_whole_number_of_units_is_exact(
    n: int, unit: tuple[str, int], suffix: str, lower: bool
) -> None:
    letter, shift = unit
    if not letter and suffix == "iB":
        suffix = "B"  # "iB" needs a unit before it
    text = f"{n}{letter}{suffix}"

    assert parse_size(text.lower() if lower else text) == n << shift


@given(st.integers(min_value=1, max_value=1 << 40))
def test_parse_size_of_megabytes(n: int) -> None:
    assert parse_size(f"{n}M") == n << 20


@pytest.mark.parametrize(
    "text",
    ["", "   ", "M", "MB", "abc", "12X", "12 MBs", "1,5G", "5GG", "G5", "twenty", "0x10", "--1"],
)
def test_parse_size_refuses_junk_with_a_hint(text: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_size(text)

    message = str(raised.value)
    assert repr(text) in message
    assert "500M" in message and "20G" in message


@pytest.mark.parametrize("text", ["0", "0M", "0.0G", "-1", "-5M", "-0.5K"])
def test_parse_size_refuses_zero_and_negative(text: str) -> None:
    with pytest.raises(ConfigurationError, match="must be positive") as raised:
        parse_size(text)

    assert repr(text) in str(raised.value)


@pytest.mark.parametrize("text", ["0.1", "0.4", "0.0001K"])
def test_parse_size_refuses_less_than_one_byte(text: str) -> None:
    # It would be a quota of zero bytes: as wrong as "0".
    with pytest.raises(ConfigurationError) as raised:
        parse_size(text)

    assert repr(text) in str(raised.value)


@pytest.mark.parametrize("text", ["inf", "infM", "-inf", "nan", "NaNG", "1e400", "1e300T"])
def test_parse_size_refuses_non_finite_numbers_as_configuration_errors(text: str) -> None:
    # Not an OverflowError or ValueError traceback out of the command line.
    with pytest.raises(ConfigurationError) as raised:
        parse_size(text)

    assert repr(text) in str(raised.value)


# --- jurisdictions ----------------------------------------------------------------------


def test_a_region_without_lists_allows_every_jurisdiction_even_an_undeclared_one() -> None:
    policy = JurisdictionPolicy()

    for purpose in Purpose:
        assert not policy.restricts(purpose)
        assert policy.allows(purpose, "US") and policy.allows(purpose, None)
        assert policy.describe(purpose) == "any"


def test_a_sovereign_region_allows_only_its_list_and_never_an_undeclared_jurisdiction() -> None:
    policy = JurisdictionPolicy.restricting(["EU", "DE"], own="DE", origin="US")

    for purpose in Purpose:
        assert policy.restricts(purpose)
        assert policy.allows(purpose, "EU") and policy.allows(purpose, "DE")
        assert not policy.allows(purpose, "US")
        assert not policy.allows(purpose, None)
        assert policy.describe(purpose) == "DE, EU"


def test_each_purpose_has_its_own_list() -> None:
    policy = JurisdictionPolicy(fetch=frozenset({"EU", "US"}), redirect=frozenset({"EU"}))

    assert policy.allows(Purpose.FETCH, "US")
    assert not policy.allows(Purpose.REDIRECT, "US")
    assert policy.allows(Purpose.ROUTE, "US")  # not restricted


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"own": "eu"}, "'eu' is not a code such as EU, DE or US-gov"),
        ({"origin": "Europe"}, "'Europe' is not a code"),
        ({"fetch": frozenset({"EU", "e u"})}, "'e u' is not a code"),
        ({"redirect": frozenset()}, "the redirect list of jurisdictions is empty"),
    ],
)
def test_a_policy_with_a_mistake_says_what_is_wrong(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        JurisdictionPolicy(**settings)


def test_jurisdiction_codes() -> None:
    for code in ("EU", "DE", "US-gov", "CH-canton42"):
        assert JURISDICTION.fullmatch(code), code
    for code in ("eu", "E", "EUR", "US_gov", "US-", "US-" + "x" * 17, ""):
        assert not JURISDICTION.fullmatch(code), code


def test_allow_specs_name_every_purpose_or_one() -> None:
    everywhere = jurisdiction_policy(["EU", "DE"], own="DE", origin="EU")
    assert (everywhere.fetch, everywhere.redirect, everywhere.route) == (
        frozenset({"EU", "DE"}),
    ) * 3
    assert (everywhere.own, everywhere.origin) == ("DE", "EU")

    split = jurisdiction_policy(["fetch=EU,US", "redirect=EU"])
    assert split.fetch == frozenset({"EU", "US"})
    assert split.redirect == frozenset({"EU"})
    assert split.route is None  # no spec names it: unrestricted

    assert jurisdiction_policy([]) == JurisdictionPolicy()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("serve=EU", "'serve' is not a purpose"),
        ("fetch=", "names no jurisdiction"),
        ("eu", "'eu' is not a code"),
    ],
)
def test_a_wrong_allow_spec_says_what_is_wrong(spec: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        jurisdiction_policy([spec])
