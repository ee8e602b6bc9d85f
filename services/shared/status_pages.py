"""Status pages a person reads in a browser: the network, a package, recent rejections.

Served by the directory (every node of the federation) and by each node (itself), all
server-rendered HTML with an inline SVG chart: no script, no asset to fetch, light
enough for a phone on a slow link. The views are plain data built from what the process
already holds (heartbeats, package states, the rejected topic: ``status_views``); the
templates only lay them out, and Jinja2 escapes every value (package metadata and
rejection details come from the network). The chart is ``lag_chart``; a node's own
source of views is ``node_own_status``. A package's page has a JSON twin
(``/status/packages/<name>.json``, ``status_views.package_document``): the same versions,
digests and copies, with each copy's provenance as fields an auditor can script against.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jinja2
import orjson
from aiohttp import web

from connectors.kafka_followers import TopicFollower
from schemas.errors import RejectedError
from schemas.events import ReleaseRejected
from schemas.names import PACKAGE_NAME
from services.shared.lag_chart import lag_chart
from services.shared.status_views import (
    RejectionRow,
    StatusSource,
    package_document,
    rejection_row,
)

log = logging.getLogger(__name__)

#: Rejections kept for the page (the rejected topic keeps them all).
REJECTIONS_KEPT = 200


# --- the rejections the pages show ----------------------------------------------------


class RejectionLog:
    """The recent records of the rejected topic (of one region, or all), kept for the page.

    Follows the topic from its beginning in a thread, so a restarted process shows what
    was refused before it started; counts every rejection by reason.
    """

    def __init__(self, broker_url: str, topic: str, *, region: str | None = None) -> None:
        self._region = region
        self._recent: deque[ReleaseRejected] = deque(maxlen=REJECTIONS_KEPT)
        self.by_reason: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._follower = TopicFollower(broker_url, topic, self._on_record, name="status-page")

    def _on_record(self, value: bytes) -> None:
        try:
            record = ReleaseRejected.from_bytes(value)
        except RejectedError as exc:
            log.warning("a record of the rejected topic is not a rejection: %s", exc)
            return
        if self._region is not None and record.region != self._region:
            return
        with self._lock:
            self._recent.append(record)
            self.by_reason[record.reason] += 1

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

    def rows(self) -> list[RejectionRow]:
        """The recent rejections, newest first."""
        with self._lock:
            recent = list(self._recent)
        return [rejection_row(r) for r in reversed(recent)]

    def counts(self) -> list[tuple[str, int]]:
        with self._lock:
            return self.by_reason.most_common()


# --- the pages ---------------------------------------------------------------------------

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("services.shared", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class StatusPages:
    """The ``/status`` routes of one process, over a ``StatusSource``."""

    def __init__(
        self, source: StatusSource, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._source = source
        self._clock = clock

    def register(self, app: web.Application) -> None:
        app.router.add_get("/status", self.network)
        app.router.add_get("/status/", self.network)
        app.router.add_get("/status/packages", self.find_package)
        # Before the page's route, which would take ``token.json`` for a name: as p2's
        # documents, the JSON of package P is P.json (so a package whose name ends in .json
        # has its JSON at P.json.json, and its HTML page is not reachable).
        app.router.add_get("/status/packages/{vendor}/{name}.json", self.package_json)
        app.router.add_get("/status/packages/{vendor}/{name}", self.package)
        app.router.add_get("/status/rejections", self.rejections)

    def _page(self, template: str, status: int = 200, **values: Any) -> web.Response:
        now = self._clock()
        body = _TEMPLATES.get_template(template).render(
            title=self._source.title, now=now.strftime("%Y-%m-%d %H:%M:%S UTC"), **values
        )
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def network(self, request: web.Request) -> web.Response:
        view = await asyncio.to_thread(self._source.network, self._clock())
        return self._page("network.html", view=view, chart=lag_chart(view.series))

    async def find_package(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "").strip().lower()
        if not name:
            return self._page("find.html", name="", problem="")
        if not PACKAGE_NAME.fullmatch(name):
            problem = f"{name!r} is not a Composer package name (vendor/name, e.g. drupal/token)"
            return self._page("find.html", status=400, name=name, problem=problem)
        raise web.HTTPFound(f"/status/packages/{name}")

    async def package(self, request: web.Request) -> web.Response:
        name = f"{request.match_info['vendor']}/{request.match_info['name']}"
        if not PACKAGE_NAME.fullmatch(name):
            problem = f"{name!r} is not a Composer package name (vendor/name, e.g. drupal/token)"
            return self._page("find.html", status=400, name=name, problem=problem)
        view = await self._source.package(name)
        if view is None:
            problem = f"{name} is not known here: no verified event of it has been applied"
            return self._page("find.html", status=404, name=name, problem=problem)
        return self._page("package.html", view=view)

    async def package_json(self, request: web.Request) -> web.Response:
        """The package page's JSON (``package_document``); 400 or 404 with ``error``."""
        name = f"{request.match_info['vendor']}/{request.match_info['name']}"
        if not PACKAGE_NAME.fullmatch(name):
            problem = f"{name!r} is not a Composer package name (vendor/name, e.g. drupal/token)"
            return _json(400, {"package": name, "error": problem})
        view = await self._source.package(name)
        if view is None:
            problem = f"{name} is not known here: no verified event of it has been applied"
            return _json(404, {"package": name, "error": problem})
        document = package_document(view, answered_by=self._source.title, now=self._clock())
        return _json(200, document)

    async def rejections(self, request: web.Request) -> web.Response:
        rows = await asyncio.to_thread(self._source.rejections)
        return self._page("rejections.html", rows=rows)


def _json(status: int, document: dict[str, Any]) -> web.Response:
    return web.Response(
        body=orjson.dumps(document, option=orjson.OPT_INDENT_2),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def serve_status_pages(
    app: web.Application,
    source: StatusSource,
    *,
    rejections: RejectionLog | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Register the status pages on ``app``, and follow the rejected topic while it runs."""
    StatusPages(source, clock=clock).register(app)
    if rejections is None:
        return

    async def start(app: web.Application) -> None:
        rejections.start()

    async def stop(app: web.Application) -> None:
        await asyncio.to_thread(rejections.stop)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
