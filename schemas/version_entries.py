"""Composer version entries: one Drupal.org release's entry, its dist URL, and the servable copy.

A servable entry is what ``schemas.composer`` renders into p2 documents: checked and completed
for Composer, without nulls.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, Final

import orjson

from schemas.errors import InvalidVersionError, MalformedEventError
from schemas.names import check_package_name
from schemas.versions import drupal_to_composer, normalize_version

__all__ = [
    "object_without_nulls",
    "servable_entry",
    "version_entry",
    "with_dist_url",
]

_SHA1_HEX: Final = re.compile(r"[0-9a-f]{40}", re.ASCII)
_OUR_KEYS: Final = ("name", "version", "version_normalized", "dist")


def version_entry(
    *,
    name: str,
    drupal_version: str,
    sha1: str,
    dist_url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the Composer version entry of one Drupal.org release, as packages.drupal.org does.

    ``name``, ``version``, ``version_normalized``, ``type`` (``drupal-module``), ``dist`` (zip,
    ``dist_url`` if given, ``reference`` = the Drupal version, ``shasum`` = ``sha1``),
    ``source`` (git.drupalcode.org at the Drupal version; at the branch for a ``-dev`` release)
    and ``extra.drupal.version``; then ``metadata`` (the project's composer.json: ``require``,
    ``description``, ``type``, ``extra``...) on top, except that ``name``, ``version``,
    ``version_normalized``, ``dist`` and ``extra.drupal.version`` stay ours. ``metadata`` is
    copied, not shared; its ``None`` values stay (render_p2 drops them).

    Raises:
        InvalidVersionError: ``drupal_version`` is not a Drupal.org release version.
        MalformedEventError: ``name`` is not a package name, ``sha1`` is not 40 lower-case hex
            digits (Composer compares it with ``===``), or ``metadata.extra`` (or its
            ``drupal``) is not an object.
    """
    check_package_name(name)
    version = drupal_to_composer(drupal_version)
    if not _SHA1_HEX.fullmatch(sha1):
        raise MalformedEventError(
            f"Invalid sha1 {sha1!r} for {name} {drupal_version}: expected 40 lower-case hex "
            "digits (Composer compares the zip's sha1 with it as a string)"
        )
    project = name.split("/", 1)[1]
    # A dev release (8.x-1.x-dev) is built from its branch (8.x-1.x): that is the git ref.
    git_ref = drupal_version.removesuffix("-dev")
    dist: dict[str, Any] = {"type": "zip"}
    if dist_url is not None:
        dist["url"] = dist_url
    dist.update(reference=drupal_version, shasum=sha1)

    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "version_normalized": normalize_version(version),
        "type": "drupal-module",
        "dist": dist,
        "source": {
            "type": "git",
            "url": f"https://git.drupalcode.org/project/{project}.git",
            "reference": git_ref,
        },
        "extra": {"drupal": {"version": drupal_version}},
    }
    for key, value in copy.deepcopy(metadata or {}).items():
        if key in _OUR_KEYS:
            continue
        if key == "extra":
            value = _extra_with_drupal_version(value, drupal_version, where=f"{name} {version}")
        entry[key] = value
    return entry


def _extra_with_drupal_version(extra: Any, drupal_version: str, *, where: str) -> dict[str, Any]:
    if not isinstance(extra, dict):
        raise MalformedEventError(f"Invalid metadata of {where}: extra must be an object")
    drupal = extra.get("drupal", {})
    if not isinstance(drupal, dict):
        raise MalformedEventError(f"Invalid metadata of {where}: extra.drupal must be an object")
    extra["drupal"] = {**drupal, "version": drupal_version}
    return extra


def with_dist_url(entry: dict[str, Any], url: str) -> dict[str, Any]:
    """Return a copy of a version entry whose ``dist.url`` is ``url`` (the rest shared).

    Raises:
        MalformedEventError: the entry has no ``dist`` object.
    """
    dist = entry.get("dist")
    if not isinstance(dist, dict):
        raise MalformedEventError(
            f"Cannot set the dist URL of {entry.get('name')} {entry.get('version')}: "
            "the entry has no dist object"
        )
    # "url" goes right after "type", where Composer repositories write it.
    new_dist: dict[str, Any] = {}
    for key, value in dist.items():
        if key != "url":
            new_dist[key] = value
        if key == "type":
            new_dist["url"] = url
    new_dist.setdefault("url", url)
    return {**entry, "dist": new_dist}


def servable_entry(name: str, version: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of one version entry without nulls, checked and completed for Composer
    (what ``schemas.composer.render_servable`` takes). Raises as ``render_p2`` does."""
    entry = _copy_without_nulls(version, where=f"{name} version entry")
    pretty = entry.get("version")
    if not isinstance(pretty, str):
        raise MalformedEventError(
            f"Cannot render {name}: a version entry has no string 'version' (keys: {sorted(entry)})"
        )
    where = f"{name} {pretty}"
    if entry.setdefault("name", name) != name:
        raise MalformedEventError(
            f"Cannot render {where}: the entry names package {entry['name']!r}; "
            f"p2/{name}.json may only hold {name}"
        )
    try:
        normalized = normalize_version(pretty)
    except InvalidVersionError as exc:
        raise InvalidVersionError(f"Cannot render {name}: {exc}") from exc
    if entry.setdefault("version_normalized", normalized) != normalized:
        raise MalformedEventError(
            f"Cannot render {where}: version_normalized is {entry['version_normalized']!r}, "
            f"Composer normalizes {pretty!r} to {normalized!r}"
        )
    dist = entry.get("dist")
    if dist is not None and not (
        isinstance(dist, dict)
        and isinstance(dist.get("type"), str)
        and isinstance(dist.get("url"), str)
        and dist["url"]
    ):
        # Composer's ArrayLoader throws on such a dist, and with it refuses every version of
        # the document; set dist.url (with_dist_url) before rendering.
        raise MalformedEventError(
            f"Cannot render {where}: dist must be an object with 'type' and a non-empty 'url', "
            f"got {dist!r}"
        )
    return entry


def _copy_without_nulls(value: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``object_without_nulls``, through orjson when that is the same and faster.

    orjson writes None, NaN and the infinities all as ``null``: an object whose JSON holds no
    ``null`` has none of them, and reading its JSON back is a deep copy (a value orjson
    refuses, or any ``null``, even inside a string, takes the walk, which says what is wrong).
    """
    if type(value) is dict:
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass
        else:
            if b"null" not in encoded:
                copied: dict[str, Any] = orjson.loads(encoded)
                return copied
    return object_without_nulls(value, where=where)


def object_without_nulls(value: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Return a deep copy of a JSON object without None values or list items, at any depth
    (``schemas.composer`` cleans a p2 document's advisories with it too).

    Raises:
        MalformedEventError: a key is not a string, or a value is NaN or infinite.
    """
    copied: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise MalformedEventError(
                f"Cannot render {where}: JSON object keys must be strings, got {key!r}"
            )
        if item is not None:
            copied[key] = _without_nulls(item, where=where)
    return copied


def _without_nulls(value: Any, *, where: str) -> Any:
    if isinstance(value, dict):
        return object_without_nulls(value, where=where)
    if isinstance(value, list):
        return [_without_nulls(item, where=where) for item in value if item is not None]
    if isinstance(value, float) and not math.isfinite(value):
        raise MalformedEventError(f"Cannot render {where}: JSON has no {value!r}")
    return value
