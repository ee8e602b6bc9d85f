"""Drupal.org release versions, Composer versions and their order, as Composer 2.5.5 sees them."""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Final, Literal

from schemas.errors import InvalidVersionError

__all__ = [
    "Stability",
    "drupal_to_composer",
    "is_dev",
    "normalize_version",
    "version_sort_key",
    "version_stability",
]

Stability = Literal["stable", "RC", "beta", "alpha", "dev"]

# ---------------------------------------------------------------------------
# Drupal.org release versions
# ---------------------------------------------------------------------------

# Drupal.org numbers have no leading zeros; refusing them keeps one spelling per release, so
# "1.9" and "1.09" can never be published as two different versions of the same package.
_NUM: Final = r"(?:0|[1-9][0-9]*)"
_EXTRA: Final = rf"(?:alpha|beta|rc){_NUM}"

# 8.x-1.9, 7.x-3.4-beta2: core compatibility, major, minor, optional pre-release.
_LEGACY_RELEASE: Final = re.compile(
    rf"[1-9][0-9]*\.x-(?P<major>{_NUM})\.(?P<minor>{_NUM})(?:-(?P<extra>{_EXTRA}))?", re.ASCII
)
# 8.x-1.x (the branch) and 8.x-1.x-dev (Drupal.org's name for the branch's dev release).
_LEGACY_DEV: Final = re.compile(rf"[1-9][0-9]*\.x-(?P<major>{_NUM})\.x(?:-dev)?", re.ASCII)
# 2.0.3, 2.0.0-beta1: semantic versioning, passed through unchanged.
_SEMVER_RELEASE: Final = re.compile(rf"{_NUM}\.{_NUM}\.{_NUM}(?:-{_EXTRA})?", re.ASCII)
# 2.1.x, 2.x (branches) and 2.1.x-dev, 2.x-dev (their dev releases).
_SEMVER_DEV: Final = re.compile(rf"(?P<branch>{_NUM}(?:\.{_NUM})?)\.x(?:-dev)?", re.ASCII)

_ACCEPTED_DRUPAL_FORMS: Final = (
    "N.x-A.B[-(alpha|beta|rc)K] (e.g. 8.x-1.9, 7.x-3.4-beta2), "
    "N.x-A.x[-dev] (dev branch, e.g. 8.x-1.x), "
    "A.B.C[-(alpha|beta|rc)K] (semver, e.g. 2.0.3, 2.0.0-beta1), "
    "A.B.x[-dev] or A.x[-dev] (semver dev branch, e.g. 2.1.x); "
    "numbers without leading zeros, lower-case pre-release tags"
)


@lru_cache(maxsize=4096)
def drupal_to_composer(drupal_version: str) -> str:
    """Return the Composer version packages.drupal.org publishes for a Drupal.org release version.

    ``8.x-1.9`` → ``1.9.0``, ``7.x-3.4-beta2`` → ``3.4.0-beta2``, ``8.x-1.x`` (or ``8.x-1.x-dev``)
    → ``1.x-dev``; semantic versions pass through (``2.0.3``), semver branches get ``-dev``
    (``2.1.x`` → ``2.1.x-dev``).

    Raises:
        InvalidVersionError: ``drupal_version`` follows none of these forms, or maps to a version
            Composer itself would refuse (a major number above 99999).
    """
    if match := _LEGACY_RELEASE.fullmatch(drupal_version):
        composer_version = f"{match['major']}.{match['minor']}.0"
        if match["extra"]:
            composer_version += f"-{match['extra']}"
    elif match := _LEGACY_DEV.fullmatch(drupal_version):
        composer_version = f"{match['major']}.x-dev"
    elif _SEMVER_RELEASE.fullmatch(drupal_version):
        composer_version = drupal_version
    elif match := _SEMVER_DEV.fullmatch(drupal_version):
        composer_version = f"{match['branch']}.x-dev"
    else:
        raise InvalidVersionError(
            f"Invalid Drupal release version {drupal_version!r}: expected {_ACCEPTED_DRUPAL_FORMS}"
        )
    try:
        normalize_version(composer_version)
    except InvalidVersionError as exc:
        raise InvalidVersionError(
            f"Invalid Drupal release version {drupal_version!r}: it maps to Composer version "
            f"{composer_version!r}, which Composer refuses (a major number has at most 5 digits)"
        ) from exc
    return composer_version


# ---------------------------------------------------------------------------
# Composer's VersionParser (composer/semver 3.x, as bundled with Composer 2.5.5)
# ---------------------------------------------------------------------------

# PHP's PCRE without the /u flag knows only ASCII digits, spaces and case: hence re.ASCII.
_I: Final = re.IGNORECASE | re.ASCII
# Kept close to composer/semver's VersionParser::$modifierRegex, group for group.
_MODIFIER: Final = r"[._-]?(?:(stable|beta|b|RC|alpha|a|patch|pl|p)((?:[.-]?\d+)*+)?)?([.-]?dev)?"
_ALIAS: Final = re.compile(r"^([^,\s]++) ++as ++([^,\s]++)$", re.ASCII)
_STABILITY_FLAG: Final = re.compile(r"@(?:stable|RC|beta|alpha|dev)$", _I)
_BRANCH_PREFIX: Final = re.compile(r"dev-", _I)
_BUILD_METADATA: Final = re.compile(r"^([^,\s+]++)\+[^\s]++$", re.ASCII)
_CLASSICAL: Final = re.compile(r"^v?(\d{1,5})(\.\d++)?(\.\d++)?(\.\d++)?" + _MODIFIER + "$", _I)
_DATETIME: Final = re.compile(
    r"^v?(\d{4}(?:[.:-]?\d{2}){1,6}(?:[.:-]?\d{1,3})?)" + _MODIFIER + "$", _I
)
_DEV_BRANCH: Final = re.compile(r"(.*?)[.-]?dev$", _I)
_NUMERIC_BRANCH: Final = re.compile(
    r"^v?(\d++)(\.(?:\d++|[xX*]))?(\.(?:\d++|[xX*]))?(\.(?:\d++|[xX*]))?$", _I
)
_NON_DIGIT: Final = re.compile(r"\D", re.ASCII)
_STABILITY_SUFFIX: Final = re.compile(_MODIFIER + r"(?:\+.*)?$", _I)
_COMMENT: Final = re.compile(r"#.+$")
_PHP_TRIM: Final = " \t\n\r\0\x0b"  # the characters PHP's trim() strips
# PHP 8's strtolower() folds ASCII only.
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_STABILITY_NAMES: Final = {"a": "alpha", "b": "beta", "p": "patch", "pl": "patch", "rc": "RC"}


@lru_cache(maxsize=4096)
def normalize_version(composer_version: str) -> str:
    """Return Composer's ``version_normalized`` for a version, as ``VersionParser::normalize``.

    ``1.9.0`` → ``1.9.0.0``, ``1.0.0-rc1`` → ``1.0.0.0-RC1``, ``1.x-dev`` →
    ``1.9999999.9999999.9999999-dev``, ``dev-main`` → ``dev-main``.

    Raises:
        InvalidVersionError: Composer would refuse the version (``Invalid version string``).
    """
    version = composer_version.strip(_PHP_TRIM)

    if match := _ALIAS.match(version):
        version = match[1]
    if match := _STABILITY_FLAG.search(version):
        version = version[: match.start()]
    if version in ("master", "trunk", "default"):
        version = "dev-" + version
    if _BRANCH_PREFIX.match(version):
        return "dev-" + version[4:]
    if match := _BUILD_METADATA.match(version):
        version = match[1]

    # The group that holds the stability word; the two after it hold its number and "dev".
    numbered, index = _CLASSICAL.match(version), 5
    if numbered:
        version = "".join(
            (numbered[1], numbered[2] or ".0", numbered[3] or ".0", numbered[4] or ".0")
        )
    else:
        numbered, index = _DATETIME.match(version), 2
        if numbered:
            version = _NON_DIGIT.sub(".", numbered[1])
    if numbered:
        if stability := numbered[index]:
            if stability == "stable":
                return version
            number = (numbered[index + 1] or "").lstrip(".-")
            version += f"-{_expand_stability(stability)}{number}"
        if numbered[index + 2]:
            version += "-dev"
        return version

    if match := _DEV_BRANCH.search(version):
        normalized = _normalize_branch(match[1])
        # A "-dev" suffix only makes a version of a numeric branch; anything else would have
        # needed a "dev-" prefix.
        if "dev-" not in normalized:
            return normalized

    raise InvalidVersionError(
        f"Invalid Composer version {composer_version!r}: Composer accepts versions like 1.9.0, "
        "1.0.0-rc1, 1.0.0-beta2, 1.x-dev, 2.1.x-dev or dev-<branch>"
    )


def _expand_stability(stability: str) -> str:
    stability = stability.translate(_ASCII_LOWER)
    return _STABILITY_NAMES.get(stability, stability)


def _normalize_branch(name: str) -> str:
    name = name.strip(_PHP_TRIM)
    if match := _NUMERIC_BRANCH.match(name):
        version = "".join(
            (part.replace("*", "x").replace("X", "x") if part is not None else ".x")
            for part in match.groups()
        )
        return version.replace("x", "9999999") + "-dev"
    return "dev-" + name


@lru_cache(maxsize=16384)
def version_stability(composer_version: str) -> Stability:
    """Return the stability Composer gives a version, as ``VersionParser::parseStability``.

    Never raises: a string that is not a version is ``stable`` to Composer too.
    """
    version = _COMMENT.sub("", composer_version)
    if version.startswith("dev-") or version.endswith("-dev"):
        return "dev"
    match = _STABILITY_SUFFIX.search(version.translate(_ASCII_LOWER))
    if match is None:  # pragma: no cover - every part of the pattern is optional
        return "stable"
    if match[3]:
        return "dev"
    if match[1] in ("beta", "b"):
        return "beta"
    if match[1] in ("alpha", "a"):
        return "alpha"
    if match[1] == "rc":
        return "RC"
    return "stable"


def is_dev(composer_version: str) -> bool:
    """Tell whether Composer sees a version as a dev version (``1.x-dev``, ``dev-main``).

    Dev versions are the ones a Composer 2 repository serves in ``p2/<name>~dev.json``.
    Never raises.
    """
    return version_stability(composer_version) == "dev"


# ---------------------------------------------------------------------------
# Order: PHP's version_compare(), which Composer uses on normalized versions
# ---------------------------------------------------------------------------

# php_version_compare's special forms, matched by prefix in this order; unknown words rank -1.
_SPECIAL_FORMS: Final = (
    ("dev", 0),
    ("alpha", 1),
    ("a", 1),
    ("beta", 2),
    ("b", 2),
    ("RC", 3),
    ("rc", 3),
    ("#", 4),
    ("pl", 5),
    ("p", 5),
)
_NUMBER_RANK: Final = 4  # a number ranks like "#": above RC, below patch levels
# Marks where a version's parts end. It sorts below any number and, rank 4 being reserved for
# numbers, never ties with a word: a version that goes on is newer when its next part is a
# number or a patch level, older when it is dev, alpha, beta or RC, as in version_compare().
_END: Final = (_NUMBER_RANK, -1)
_EMPTY, _VERSION, _BRANCH = 0, 1, 2

VersionSortKey = tuple[int, tuple[tuple[int, int], ...], str]


@lru_cache(maxsize=16384)
def version_sort_key(version_normalized: str) -> VersionSortKey:
    """Return a key that orders normalized versions as Composer does, oldest first.

    ``sorted(versions, key=version_sort_key, reverse=True)`` is newest first: ``1.10.0.0`` before
    ``1.9.0.0``, and for the same number stable before RC before beta before alpha before dev.
    Numeric versions compare as PHP's ``version_compare()`` (which Composer uses); named branches
    (``dev-main``), which Composer does not order, sort above every numeric version, by name.
    Versions that compare equal are ordered by their text, so the order is total. Never raises.
    """
    if not version_normalized:
        return (_EMPTY, (), "")
    if version_normalized.startswith("dev-"):
        return (_BRANCH, (), version_normalized)
    parts = tuple(_part_rank(part) for part in _canonical_parts(version_normalized))
    return (_VERSION, (*parts, _END), version_normalized)


def _part_rank(part: str) -> tuple[int, int]:
    if part[:1].isascii() and part[:1].isdigit():
        return (_NUMBER_RANK, int(part))
    for form, rank in _SPECIAL_FORMS:
        if part.startswith(form):
            return (rank, 0)
    return (-1, 0)


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _canonical_parts(version: str) -> list[str]:
    """Split a version into parts as php_canonicalize_version() does before comparing.

    ``-``, ``_``, ``+`` and other non-alphanumerics separate parts, and so does every change
    between digits and letters: ``1.0.0.0-RC1`` → ``1 0 0 0 RC 1``.
    """
    out = [version[0]]
    previous = version[0]
    for char in version[1:]:
        separated = out[-1] == "."
        if char in "-_+":
            if not separated:
                out.append(".")
        elif (_is_digit(previous) != _is_digit(char)) and "." not in (previous, char):
            if not separated:
                out.append(".")
            out.append(char)
        elif not _is_alnum(char):
            if not separated:
                out.append(".")
        else:
            out.append(char)
        previous = char
    return [part for part in "".join(out).split(".") if part]
