"""Package-name patterns: the same language as Composer's rule, in linear time.

Composer's own form, ``[a-z0-9]([_.-]?[a-z0-9]+)*``, backtracks exponentially when a long
run of letters is followed by a character it refuses; the HTTP fuzz found a dist path that
held a node's event loop for good that way. Ours must accept and refuse exactly the same
names, and answer at once on such input.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.composer import render_p2
from schemas.errors import MalformedEventError
from schemas.names import PACKAGE_NAME, check_package_name, is_package_name
from schemas.trust import NAMESPACE
from services.node.repository_documents import _P2_FILE
from streams.peer_config import _NAMESPACE_GLOB

# Composer's ValidatingArrayLoader rule, as Composer writes it.
COMPOSER_NAME = re.compile(r"^[a-z0-9]([_.-]?[a-z0-9]+)*/[a-z0-9](([_.]|-{1,2})?[a-z0-9]+)*$")


@given(st.text(alphabet="ab1_.-/", max_size=14))
def test_our_rule_accepts_exactly_what_composers_accepts(name: str) -> None:
    assert bool(PACKAGE_NAME.fullmatch(name)) == bool(COMPOSER_NAME.fullmatch(name))


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (PACKAGE_NAME, "a" * 64 + "//"),
        (PACKAGE_NAME, "drupal/" + "a" * 64 + "!"),
        (NAMESPACE, "a" * 64 + "/x"),
        (_P2_FILE, "a" * 64 + "!.json"),
        (_NAMESPACE_GLOB, "a" * 64 + "!/x"),
    ],
)
def test_a_long_refused_name_is_refused_at_once(pattern: re.Pattern[str], text: str) -> None:
    # With Composer's form each of these takes about 2^64 steps: the timeout is the check.
    assert pattern.fullmatch(text) is None


def test_the_usual_names_still_match() -> None:
    for name in ("drupal/token", "drupal/core-recommended", "a.b/c--d", "drupal/x_y.z"):
        assert PACKAGE_NAME.fullmatch(name), name
    assert NAMESPACE.fullmatch("drupal/*")
    assert _P2_FILE.fullmatch("core-recommended~dev.json")


@pytest.mark.timeout(10)
def test_the_one_check_refuses_a_long_bad_name_at_once() -> None:
    # Before the rule lived here once, the p2 paths' check used Composer's own form: the
    # importer asked it about names from a remote repository.
    with pytest.raises(MalformedEventError, match="is not a Composer name"):
        check_package_name("drupal/" + "a" * 64 + "!")


@pytest.mark.parametrize("name", ["drupal/con", "lpt1/token", "drupal/token.json"])
def test_names_composer_refuses_beyond_the_pattern_are_refused_by_every_check(name: str) -> None:
    assert PACKAGE_NAME.fullmatch(name)  # the pattern alone would let them through
    assert not is_package_name(name)
    with pytest.raises(MalformedEventError, match="Composer refuses"):
        check_package_name(name)
    with pytest.raises(MalformedEventError):
        render_p2(name, [])
