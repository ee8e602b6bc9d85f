"""A node's Composer metadata over HTTP: ``packages.json``, rendered per request, and the p2
documents, from the local view in memory or from the region's bucket; each dated
(Last-Modified), with a 304 when the client's copy is current."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Final

from aiohttp import web

from connectors.object_store import ObjectStore, is_json
from connectors.view_store import ServedDocument
from schemas import layout
from schemas.composer import render_packages_json
from schemas.errors import StoreUnavailableError
from schemas.names import NAME_PATTERN, PACKAGE_NAME
from services.node.composer_requests import ADVISORIES_PATH, DOWNLOADS_PATH
from services.node.dist_rules import redirect_urls
from services.node.http_settings import RETRY_AFTER, NodeHttpSettings
from streams.artifacts import Source

#: packages.json variants remembered (one per public base URL seen, see ``packages_json``).
_ROOT_VARIANTS: Final = 32
#: Where other nodes send Composer for a zip (their ``mirrors``): ``/mirror/<package>/<version>.<type>``.
MIRROR_TEMPLATE: Final = "/mirror/%package%/%prettyVersion%.%type%"

_P2_FILE = re.compile(rf"^(?P<name>{NAME_PATTERN})(?P<dev>~dev)?\.json$")


def mirror_url_template(base_url: str) -> str:
    """The ``mirrors[].dist-url`` under which the node at ``base_url`` serves its zips. Never raises."""
    return base_url.rstrip("/") + MIRROR_TEMPLATE


class RepositoryDocuments:
    """The answers to ``/packages.json`` and ``/p2/...`` of one node.

    ``documents`` gives a p2 document of the local view by its key (without it, p2 documents
    are read from ``store``); ``peers`` gives the other nodes, listed as dist mirrors.
    """

    def __init__(
        self,
        settings: NodeHttpSettings,
        store: ObjectStore,
        *,
        clock: Callable[[], datetime],
        documents: Callable[[str], ServedDocument | None] | None = None,
        peers: Callable[[], Sequence[Source]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._clock = clock
        self._documents = documents
        self._peers = peers
        # Per public base URL: the packages.json last rendered and when it changed.
        self._root_documents: dict[str, tuple[bytes, datetime]] = {}

    async def packages_json(self, request: web.Request) -> web.StreamResponse:
        """The root document, with absolute URLs on this node and the other nodes as mirrors."""
        base = self.settings.public_base(request)
        policy = self.settings.jurisdictions
        peers = (
            [] if self._peers is None else _other_bases(redirect_urls(self._peers(), policy), base)
        )
        document = render_packages_json(
            patterns=self.settings.patterns,
            metadata_url=f"{base}/p2/%package%.json",
            notify_batch=base + DOWNLOADS_PATH,
            security_advisories_api=base + ADVISORIES_PATH,
            security_advisories_in_metadata=True,
            dist_mirrors=[mirror_url_template(peer) for peer in peers],
        )
        # Composer revalidates its cached packages.json with If-Modified-Since. The document
        # changes when the peers do, so it is dated by when this process first rendered these
        # bytes: a restart dates it later than any date sent before, never earlier.
        known = self._root_documents.get(base)
        if known is None or known[0] != document:
            if base not in self._root_documents and len(self._root_documents) >= _ROOT_VARIANTS:
                # The Host header is the client's to choose: keep the memory bounded.
                del self._root_documents[next(iter(self._root_documents))]
            known = (document, self._clock())
            self._root_documents[base] = known
        return self._dated_response(request, document, known[1])

    async def p2(self, request: web.Request) -> web.StreamResponse:
        """A package's p2 document (``~dev`` or not); 404 for a package not served here."""
        vendor = request.match_info["vendor"]
        match = _P2_FILE.fullmatch(request.match_info["file"])
        if match is None:
            raise web.HTTPNotFound(text="not a p2 file name\n")
        package = f"{vendor}/{match['name']}"
        if not PACKAGE_NAME.fullmatch(package):
            raise web.HTTPNotFound(text="not a package name\n")
        # Composer asks for every installed package (symfony/* too, for audits):
        # names outside our namespaces are answered without touching the store.
        if not self.settings.serves(package):
            raise web.HTTPNotFound(text=f"{package} is not served here\n")
        return await self._serve_document(
            request, layout.p2_key(package, dev=match["dev"] is not None)
        )

    async def _serve_document(self, request: web.Request, key: str) -> web.StreamResponse:
        if self._documents is not None:
            # The region's view, held in memory: no thread hop, no store request.
            document = self._documents(key)
            if document is None:
                raise web.HTTPNotFound(text=f"{key} not found\n")
            headers = {"Last-Modified": document.last_modified}
            since = request.headers.get("If-Modified-Since")
            # Dates change exactly when the bytes do, and strictly increase (schemas.view).
            if since is not None and since == document.last_modified:
                return web.Response(status=304, headers=headers)
            if since is not None:
                parsed = _parse_http_date(since)
                if parsed is not None and document.modified <= parsed.timestamp():
                    return web.Response(status=304, headers=headers)
            return web.Response(
                body=document.body, content_type="application/json", headers=headers
            )
        try:
            stored = await asyncio.to_thread(self.store.get, key, complete=is_json)
        except StoreUnavailableError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=RETRY_AFTER) from exc
        if stored is None:
            raise web.HTTPNotFound(text=f"{key} not found\n")
        return self._dated_response(request, stored.data, stored.last_modified)

    def _dated_response(
        self, request: web.Request, data: bytes, last_modified: datetime
    ) -> web.Response:
        """A JSON answer with Last-Modified, or an empty 304 when the client's copy is current."""
        modified = last_modified.replace(microsecond=0)
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
        return web.Response(body=data, content_type="application/json", headers=headers)


def _other_bases(peers: Iterable[str], own: str) -> list[str]:
    """The peers' base URLs without trailing '/', without this node and duplicates."""
    bases = (peer.rstrip("/") for peer in peers)
    return list(dict.fromkeys(base for base in bases if base and base != own))


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None
