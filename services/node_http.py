"""A regional node's HTTP face: the Composer repository (packages.json, p2) and dist redirects.

Documents are served from the region's bucket as the stream wrote them; a zip
is answered with a 302 to a presigned URL of its content-addressed object.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from aiohttp import web

from connectors.store import ObjectStore, is_json
from schemas import layout
from schemas.errors import StoreUnavailableError
from schemas.events import PACKAGE_NAME
from schemas.trust import TrustRoot

_P2_FILE = re.compile(r"^(?P<name>[a-z0-9]([_.-]?[a-z0-9]+)*)(?P<dev>~dev)?\.json$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class NodeHttpSettings:
    region: str
    patterns: tuple[str, ...] = ("drupal/*",)
    presign_expiry: timedelta = timedelta(minutes=15)


class NodeHttp:
    """The aiohttp application of one regional node."""

    def __init__(
        self,
        settings: NodeHttpSettings,
        store: ObjectStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        trust_root: Callable[[], TrustRoot] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._clock = clock
        self._trust_root = trust_root
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/packages.json", self.packages_json),
                web.get("/p2/{vendor}/{file}", self.p2),
                web.get("/dist/{vendor}/{name}/{version}/{sha256}.zip", self.dist),
                web.get("/health", self.health),
            ]
        )

    async def health(self, request: web.Request) -> web.Response:
        body: dict[str, object] = {"region": self.settings.region, "status": "ok"}
        if self._trust_root is not None:
            root = self._trust_root()
            expired = root.expires <= self._clock()
            body["trust_root"] = {"version": root.version, "expires": root.expires.isoformat()}
            if expired:
                # Fail closed, visibly: the node applies nothing until a newer root.
                body["status"] = "frozen: trust root expired"
        return web.json_response(body)

    async def packages_json(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_document(request, layout.PACKAGES_JSON)

    async def p2(self, request: web.Request) -> web.StreamResponse:
        vendor = request.match_info["vendor"]
        match = _P2_FILE.fullmatch(request.match_info["file"])
        if match is None:
            raise web.HTTPNotFound(text="not a p2 file name\n")
        package = f"{vendor}/{match['name']}"
        if not PACKAGE_NAME.fullmatch(package):
            raise web.HTTPNotFound(text="not a package name\n")
        # Composer asks for every installed package (symfony/* too, for audits):
        # names outside our namespaces are answered without touching the store.
        if not any(fnmatch.fnmatchcase(package, p) for p in self.settings.patterns):
            raise web.HTTPNotFound(text=f"{package} is not served here\n")
        return await self._serve_document(
            request, layout.p2_key(package, dev=match["dev"] is not None)
        )

    async def dist(self, request: web.Request) -> web.StreamResponse:
        sha256 = request.match_info["sha256"]
        if not _SHA256.fullmatch(sha256):
            raise web.HTTPNotFound(text="not a sha256\n")
        key = layout.artifact_key(sha256)
        try:
            stored = await asyncio.to_thread(self.store.stat, key)
        except StoreUnavailableError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers={"Retry-After": "5"}) from exc
        if stored is None:
            raise web.HTTPNotFound(text=f"no artifact {sha256} in region {self.settings.region}\n")
        url = self.store.presigned_url(key, expires=self.settings.presign_expiry)
        raise web.HTTPFound(url)

    async def _serve_document(self, request: web.Request, key: str) -> web.StreamResponse:
        try:
            stored = await asyncio.to_thread(self.store.get, key, complete=is_json)
        except StoreUnavailableError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers={"Retry-After": "5"}) from exc
        if stored is None:
            raise web.HTTPNotFound(text=f"{key} not found\n")
        modified = stored.last_modified.replace(microsecond=0)
        headers: dict[str, str] = {}
        # HTTP dates have one-second precision: a document written in the current
        # second may be written again within it under the same date, and a client
        # holding the first version would get a 304 for the second. Such a
        # document is served without Last-Modified, so the client asks again.
        if modified < self._clock().replace(microsecond=0):
            headers["Last-Modified"] = format_datetime(modified, usegmt=True)
            since = _parse_http_date(request.headers.get("If-Modified-Since"))
            if since is not None and modified <= since:
                return web.Response(status=304, headers=headers)
        return web.Response(body=stored.data, content_type="application/json", headers=headers)


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None
