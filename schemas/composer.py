"""The Composer v2 repository documents a node serves: packages.json and p2 files, minified.

The version entries they hold are ``schemas.version_entries``'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import orjson

from schemas.errors import InvalidVersionError, MalformedEventError
from schemas.names import check_package_name, is_package_name
from schemas.version_entries import object_without_nulls, servable_entry
from schemas.versions import is_dev, normalize_version, version_sort_key

__all__ = [
    "MINIFIED_FORMAT",
    "UNSET",
    "check_servable_entry",
    "expand",
    "minify",
    "render_p2",
    "render_packages_json",
    "render_servable",
]

MINIFIED_FORMAT: Final = "composer/2.0"
# Composer's MetadataMinifier marks a key the previous version had and this one lacks.
UNSET: Final = "__unset"

# What orjson can write as a JSON integer: i64 and u64.
_SMALLEST_INT: Final = -(1 << 63)
_LARGEST_INT: Final = (1 << 64) - 1
# How deep an entry's values may nest (the entry itself is level 1) for check_servable_entry to
# judge it without rendering. Real entries nest 4 levels; orjson writes up to 254 levels of a
# document, where an entry sits at level 4. Deeper ones are rendered: within that limit
# render_p2's own recursion could still exhaust Python's stack, which only rendering tells.
_PLAIN_DEPTH: Final = 32


def _p2_paths(name: str) -> tuple[str, str]:
    """Return the paths of a package's two p2 documents: stable, then dev (``~dev``).

    Raises:
        MalformedEventError: ``name`` is not a Composer package name.
    """
    check_package_name(name)
    return f"p2/{name}.json", f"p2/{name}~dev.json"


# ---------------------------------------------------------------------------
# composer/metadata-minifier
# ---------------------------------------------------------------------------


def minify(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Minify version entries as Composer's ``MetadataMinifier::minify`` (``composer/2.0``).

    The first entry is kept whole; each later one holds only the keys whose value differs from
    the previous entry's, and ``"__unset"`` for the keys the previous entry had and it lacks.
    Values are compared as PHP's ``!==`` does: type, value and key order must all match. Unlike
    Composer's, a key present with ``None`` is kept (Composer reads it as missing and unsets it).
    The inputs are not modified; nested values are shared with them.

    Raises:
        ValueError: a later entry changes a key to the string ``"__unset"``, which the format
            cannot carry (expanding would delete the key).
    """
    minified: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for position, version in enumerate(versions):
        # Like Composer, an empty previous entry makes the next one a whole entry again.
        if not last:
            last = dict(version)
            minified.append(dict(version))
            continue
        changes: dict[str, Any] = {}
        for key, value in version.items():
            if key not in last or not _same_json(last[key], value):
                if value == UNSET:
                    raise ValueError(
                        f"Cannot minify version entry {position}: its key {key!r} holds the string "
                        f"{UNSET!r}, which the composer/2.0 format reads as 'key removed'"
                    )
                changes[key] = value
                last[key] = value
        for key in list(last):
            if key not in version:
                changes[key] = UNSET
                del last[key]
        minified.append(changes)
    return minified


def expand(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Expand minified version entries as Composer's ``MetadataMinifier::expand``.

    Each entry is the previous expanded entry updated with this one's keys, without the keys
    whose value is ``"__unset"``. ``expand(minify(x)) == x``, though an entry's keys come in the
    order they first appeared in the list (the format does not carry each entry's own order). Accepts ``[]`` for an empty entry,
    as Composer-written documents hold. The inputs are not modified; nested values are shared
    with them. Never raises.
    """
    expanded: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for version in versions:
        if not current:
            current = dict(version)
        else:
            current = dict(current)
            # PHP's json_encode() writes an entry equal to the previous one as [], not {}.
            for key, value in (version or {}).items():
                if value == UNSET:
                    current.pop(key, None)
                else:
                    current[key] = value
        expanded.append(current)
    return expanded


def _same_json(a: object, b: object) -> bool:
    """Compare two JSON values as PHP's ``===`` compares their decoded arrays."""
    # 1 and 1.0, or True and 1, are equal in Python but not to PHP: type first.
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is str or kind is int or kind is bool:
        return a == b
    if kind is dict or kind is list:
        # orjson writes type, value and key order, as === compares them, and much faster
        # than walking the values here. Only null is ambiguous (NaN is written as null too);
        # a value orjson refuses (a key that is not a string, a 65-bit integer) is walked.
        try:
            encoded = orjson.dumps(a)
            if encoded != orjson.dumps(b):
                return False
            if b"null" not in encoded:
                return True
        except orjson.JSONEncodeError:
            pass
    return _same_json_walked(a, b)


def _same_json_walked(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(
            key_a == key_b and _same_json_walked(value_a, value_b)
            for (key_a, value_a), (key_b, value_b) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json_walked(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        # PHP has 0.0 === -0.0 and loses the sign; keeping it costs nothing.
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


# ---------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------


def render_p2(
    name: str, versions: list[dict[str, Any]], *, advisories: list[dict[str, Any]] | None = None
) -> dict[str, bytes]:
    """Render the two p2 documents Composer 2 fetches for a package, keyed by their path.

    ``{"p2/<name>.json": ..., "p2/<name>~dev.json": ...}``: the stable versions in the first,
    the dev versions in the second, each newest first, minified (``composer/2.0``), as compact
    JSON ``{"packages": {name: [...]}, "minified": "composer/2.0"}``. Keys whose value is
    ``None`` (and ``None`` list items) are dropped at every depth first: Composer's minifier
    mishandles nulls. An entry without ``name`` gets ``name``; one without ``version_normalized``
    gets it. A package without dev (or stable) versions gets an empty list there. The bytes
    depend only on the set of entries (and the key order inside each), not on their order.
    ``advisories``, when given, go into the stable document as ``"security-advisories"``.

    Raises:
        InvalidVersionError: an entry's ``version`` is one Composer refuses.
        MalformedEventError: ``name`` is not a package name, or an entry would make Composer
            refuse the whole document: another package's ``name``, no ``version``, a
            ``version_normalized`` that is not its normalization, the same version twice,
            a ``dist`` without ``type`` and ``url``, a value JSON cannot hold (NaN, infinity,
            non-string keys, integers beyond 64 bits).
    """
    return render_servable(
        name, [servable_entry(name, version) for version in versions], advisories=advisories
    )


def render_servable(
    name: str, entries: list[dict[str, Any]], *, advisories: list[dict[str, Any]] | None = None
) -> dict[str, bytes]:
    """``render_p2`` of entries already made servable (``servable_entry``): a caller that keeps
    them (a node re-rendering a package for each release) makes each entry once. The entries
    are not modified. Raises ``MalformedEventError`` as ``render_p2`` does."""
    stable_path, dev_path = _p2_paths(name)
    seen: dict[str, str] = {}
    for entry in entries:
        normalized, version = entry["version_normalized"], entry["version"]
        if normalized in seen:
            raise MalformedEventError(
                f"Cannot render {name}: versions {seen[normalized]!r} and {version!r} are the "
                f"same version to Composer ({normalized!r}); a published version is unique"
            )
        seen[normalized] = version

    ordered = sorted(
        entries, key=lambda entry: version_sort_key(entry["version_normalized"]), reverse=True
    )
    stable: list[dict[str, Any]] = []
    dev: list[dict[str, Any]] = []
    for entry in ordered:
        (dev if is_dev(entry["version"]) else stable).append(entry)
    return {
        stable_path: _p2_document(name, stable, advisories),
        dev_path: _p2_document(name, dev, None),
    }


# Here rather than beside servable_entry in schemas.version_entries: its verdict is
# rendering's own (it falls back on render_p2), and rendering imports the entries.
def check_servable_entry(name: str, entry: dict[str, Any]) -> None:
    """Raise what ``render_p2(name, [entry])`` would raise, without rendering in the usual case.

    An entry of plain JSON values (``str``, ``int`` within 64 bits, finite ``float``, ``bool``,
    ``None``, ``list``, ``dict`` with string keys; at most 32 levels deep, counting the entry)
    whose ``name``, ``version``, ``version_normalized`` and ``dist`` pass render_p2's checks is
    judged by walking it once, about a third of the cost of rendering it. Anything else is
    rendered alone, so that the verdict and the message are render_p2's own. A set of entries
    with distinct normalized versions, none holding the ``UNSET`` marker as a value, renders if
    and only if each of them does.

    Raises:
        InvalidVersionError: as render_p2, the entry's ``version`` is one Composer refuses.
        MalformedEventError: as render_p2; also for an entry nested so deep that rendering it
            exhausts Python's stack (render_p2 itself raises ``RecursionError`` then).
    """
    if _plainly_servable(name, entry):
        return
    try:
        render_p2(name, [entry])
    except RecursionError as exc:
        raise MalformedEventError(
            f"Cannot render {name} {entry.get('version')!r}: its values nest too deep "
            "for a p2 document"
        ) from exc


def _plainly_servable(name: str, entry: dict[str, Any]) -> bool:
    """True when render_p2(name, [entry]) certainly succeeds; False when only rendering can tell.

    Mirrors ``_p2_paths`` and ``schemas.version_entries.servable_entry`` check for check, on
    the entry before its ``None`` values are dropped (a key holding ``None`` counts as absent
    there).
    """
    if type(entry) is not dict or not is_package_name(name):
        return False
    version = entry.get("version")
    if type(version) is not str:
        return False
    listed_as = entry.get("name")
    if listed_as is not None and not (type(listed_as) is str and listed_as == name):
        return False
    try:
        normalized = normalize_version(version)
    except InvalidVersionError:
        return False
    given = entry.get("version_normalized")
    if given is not None and not (type(given) is str and given == normalized):
        return False
    dist = entry.get("dist")
    if dist is not None and not (
        type(dist) is dict
        and type(dist.get("type")) is str
        and type(dist.get("url")) is str
        and dist["url"]
    ):
        return False
    return _plain_json(entry, 1)


def _plain_json(value: object, depth: int) -> bool:
    """True if orjson writes ``value`` (at nesting ``depth``) and render_p2 keeps it as it is."""
    # Exact types, not isinstance: orjson and render_p2 treat subclasses (and bool, an int)
    # in ways of their own, which rendering judges. A loop over objects, not all() over a
    # generator: this runs for every value of every entry an import plans (objects are most of
    # them), and the generator costs about twice as much.
    if type(value) is str:
        return value.isascii() or _utf8(value)
    if type(value) is dict:
        if depth > _PLAIN_DEPTH:
            return False
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or _utf8(key)):
                return False
            if type(item) is str:
                if not (item.isascii() or _utf8(item)):
                    return False
            elif not _plain_json(item, depth + 1):
                return False
        return True
    if type(value) is list:
        return depth <= _PLAIN_DEPTH and all(_plain_json(item, depth + 1) for item in value)
    if type(value) is int:
        return _SMALLEST_INT <= value <= _LARGEST_INT
    if type(value) is float:
        return math.isfinite(value)
    return value is None or type(value) is bool


def _utf8(text: str) -> bool:
    """True if orjson writes ``text``: it refuses lone surrogates, which UTF-8 cannot encode."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _p2_document(
    name: str, entries: list[dict[str, Any]], advisories: list[dict[str, Any]] | None
) -> bytes:
    document: dict[str, Any] = {"packages": {name: minify(entries)}, "minified": MINIFIED_FORMAT}
    if advisories is not None:
        document["security-advisories"] = [
            object_without_nulls(advisory, where=f"{name} advisory") for advisory in advisories
        ]
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError as exc:
        raise MalformedEventError(f"Cannot render p2 of {name}: {exc}") from exc


def render_packages_json(
    *,
    patterns: tuple[str, ...] = ("drupal/*",),
    notify_batch: str | None = None,
    metadata_url: str = "/p2/%package%.json",
    security_advisories_api: str | None = None,
    security_advisories_in_metadata: bool = False,
    dist_mirrors: Sequence[str] = (),
) -> bytes:
    """Render the root ``packages.json`` of a Composer v2 repository, as compact JSON.

    ``{"packages": [], "metadata-url": ..., "available-package-patterns": [...]}``, plus
    ``"notify-batch"`` when given; ``"security-advisories"`` (``{"metadata": ...}``, with
    ``"api-url"`` when given) when ``security_advisories_api`` is given or
    ``security_advisories_in_metadata`` is true; ``"mirrors"`` with one
    ``{"dist-url": ..., "preferred": false}`` per ``dist_mirrors`` template (Composer fills in
    ``%package%``, ``%version%`` (normalized), ``%prettyVersion%``, ``%reference%`` and
    ``%type%``, and tries these after the package's own dist URL). Composer resolves a URL
    starting with ``/`` against the scheme and host of the repository URL, dropping its path: a
    node served below a path prefix must pass absolute URLs. Without patterns the key is left out
    (Composer reads an empty list as "no list" and then asks this repository for every package).
    Never raises.
    """
    document: dict[str, Any] = {"packages": [], "metadata-url": metadata_url}
    if patterns:
        document["available-package-patterns"] = list(patterns)
    if notify_batch is not None:
        document["notify-batch"] = notify_batch
    if security_advisories_api is not None or security_advisories_in_metadata:
        advisories: dict[str, Any] = {"metadata": security_advisories_in_metadata}
        if security_advisories_api is not None:
            advisories["api-url"] = security_advisories_api
        document["security-advisories"] = advisories
    if dist_mirrors:
        # "preferred": false keeps the package's own dist URL (this node) first.
        document["mirrors"] = [{"dist-url": url, "preferred": False} for url in dist_mirrors]
    return orjson.dumps(document)
