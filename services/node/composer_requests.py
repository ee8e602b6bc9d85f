"""What Composer sends a node, read and bounded: advisory queries and install notifications.

Each reader answers a request it cannot take with aiohttp's HTTP error (400, 413, 415).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

#: This node's advisory API and install notification paths (``packages.json`` names them).
ADVISORIES_PATH: Final = "/api/security-advisories/"
DOWNLOADS_PATH: Final = "/downloads/"
#: Largest request body read (advisory queries, install notifications): Composer's are far smaller.
MAX_REQUEST_BODY: Final = 1024 * 1024
#: Most package names one advisory query may ask about (Packagist answers at most 1000 too).
MAX_ADVISORY_NAMES: Final = 1000
#: Most entries one install notification may carry (one per installed package).
MAX_NOTIFIED_DOWNLOADS: Final = 5000

# PHP's http_build_query writes a list as packages[0]=a&packages[1]=b (Composer's POST);
# packages[]=a is what people type (Packagist's documented GET).
_PACKAGES_FIELD = re.compile(r"^packages(\[\d*\])?$")


async def advisory_query_names(request: web.Request) -> list[str]:
    """The package names an advisory query asks about (query or form), each once, as sent.

    Raises ``HTTPBadRequest`` without names or with more than ``MAX_ADVISORY_NAMES``,
    ``HTTPUnsupportedMediaType`` for a body that is not a form, and
    ``HTTPRequestEntityTooLarge`` for one too large.
    """
    fields = list(request.query.items())
    if request.method == "POST":
        if request.content_type not in ("application/x-www-form-urlencoded", ""):
            raise web.HTTPUnsupportedMediaType(
                text=f"advisory query body is {request.content_type}; send "
                "application/x-www-form-urlencoded packages[]=vendor/name\n"
            )
        body = await _read_body(request, "advisory query")
        # Parsed here, not by aiohttp, whose form parser stops at 1000 fields with a 413:
        # too many names deserves its own answer below.
        fields += parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    names = list(
        dict.fromkeys(value for key, value in fields if _PACKAGES_FIELD.fullmatch(key) and value)
    )
    if not names:
        raise web.HTTPBadRequest(
            text="missing package names: send packages[]=vendor/name (query or form)\n"
        )
    if len(names) > MAX_ADVISORY_NAMES:
        raise web.HTTPBadRequest(
            text=f"{len(names)} package names asked; ask for at most "
            f"{MAX_ADVISORY_NAMES} per request\n"
        )
    return names


async def notified_downloads(request: web.Request) -> list[tuple[str, str]]:
    """The (name, version) pairs of an install notification (``notify-batch``), as sent.

    Raises ``HTTPBadRequest`` for a body of another shape, ``HTTPRequestEntityTooLarge`` for
    one too large or with more than ``MAX_NOTIFIED_DOWNLOADS`` entries.
    """
    body = await _read_body(request, "install notification")
    entries = _notified_downloads(body)
    if len(entries) > MAX_NOTIFIED_DOWNLOADS:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_NOTIFIED_DOWNLOADS,
            actual_size=len(entries),
            text=f"{len(entries)} downloads in one notification; at most "
            f"{MAX_NOTIFIED_DOWNLOADS} are accepted\n",
        )
    return entries


async def _read_body(request: web.Request, what: str) -> bytes:
    """The request's body. Raises ``HTTPRequestEntityTooLarge`` past ``MAX_REQUEST_BODY``."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_REQUEST_BODY,
            actual_size=request.content_length or MAX_REQUEST_BODY + 1,
            text=f"{what} body over {MAX_REQUEST_BODY} bytes\n",
        ) from exc


def _notified_downloads(body: bytes) -> list[tuple[str, str]]:
    """The (name, version) pairs of an install notification. Raises ``HTTPBadRequest``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"install notification is not JSON: {exc}\n") from exc
    downloads = document.get("downloads") if isinstance(document, Mapping) else None
    if not isinstance(downloads, list):
        raise web.HTTPBadRequest(
            text='install notification must be {"downloads": [{"name": ..., "version": ...}]}\n'
        )
    entries: list[tuple[str, str]] = []
    for position, entry in enumerate(downloads):
        if not (
            isinstance(entry, Mapping)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("version"), str)
        ):
            raise web.HTTPBadRequest(
                text=f"install notification entry {position} is not "
                '{"name": <string>, "version": <string>}\n'
            )
        entries.append((entry["name"], entry["version"]))
    return entries
