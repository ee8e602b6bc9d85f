"""Status pages a person reads in a browser: the network, a package, recent rejections.

Served by the directory (every node of the federation) and by each node (itself), all
server-rendered HTML with an inline SVG chart: no script, no asset to fetch, light
enough for a phone on a slow link. The views are plain data built from what the process
already holds (heartbeats, package states, the rejected topic); the templates only lay
them out, and Jinja2 escapes every value (package metadata and rejection details come
from the network).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jinja2
import orjson
from aiohttp import web
from markupsafe import escape

from connectors.kafka import TopicFollower
from connectors.object_store import ObjectStore, is_json
from schemas import layout
from schemas.errors import MalformedEventError, RejectedError, StoreUnavailableError
from schemas.events import ReleaseRejected
from schemas.federation import (
    SILENT_AFTER,
    LagSample,
    NodeBook,
    NodeRegistration,
    NodeStatus,
    shown_state,
    split_position,
)
from schemas.names import PACKAGE_NAME
from schemas.package_state import PackageState, StateReader, VersionRecord
from schemas.trust import TrustRoot, namespace_of

log = logging.getLogger(__name__)

#: Rejections kept for the page (the rejected topic keeps them all).
REJECTIONS_KEPT = 200
#: Colours of the chart's lines, one per node (cycled).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


# --- the views ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRow:
    """One node as the network table shows it."""

    region: str
    node_id: str
    base_url: str
    sync: str
    #: What the reader says of the node, one of ``SHOWN_STATES`` (``silent``, ``stopped``...).
    state: str
    #: ``ok``, ``behind`` or ``down``: the row's colour.
    health: str
    heartbeat: str
    store: str
    trust_root: str
    #: The directory's admission and why; None on a node's own page.
    admission: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Series:
    """One line of the lag chart."""

    label: str
    samples: Sequence[LagSample]


@dataclass(frozen=True)
class NetworkView:
    title: str
    rows: Sequence[NodeRow]
    series: Sequence[Series]
    rejected_by_reason: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True)
class Signer:
    keyid: str
    #: Whether the trust root in force still delegates the package's namespace to it.
    delegated_now: bool


@dataclass(frozen=True)
class VersionView:
    version: str
    drupal_version: str
    sha256: str
    sha1: str
    size: int
    origin_url: str
    position: str
    signers: Sequence[Signer]
    yanked: str | None
    holders: Sequence[str]


@dataclass(frozen=True)
class PackageView:
    package: str
    namespace: str
    publisher: str
    threshold: int
    root_version: int
    versions: Sequence[VersionView]
    advisories: Sequence[dict[str, Any]]
    expunged: Sequence[tuple[str, str]]
    holders_note: str


@dataclass(frozen=True)
class RejectionRow:
    at: str
    region: str
    where: str
    key: str
    reason: str
    detail: str


class StatusSource(Protocol):
    """What a process shows on its status pages."""

    title: str

    def network(self, now: datetime) -> NetworkView: ...

    async def package(self, name: str) -> PackageView | None: ...

    def rejections(self) -> Sequence[RejectionRow]: ...


# --- building the views ------------------------------------------------------------------


def age_text(then: datetime, now: datetime) -> str:
    """``12 s ago``, ``4 min ago``, ``3 h ago``, ``2 d ago``."""
    seconds = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * 2 or (unit == "min" and seconds >= size):
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def package_view(
    state: PackageState,
    root: TrustRoot,
    holders: Callable[[VersionRecord], Sequence[str]],
    note: str,
) -> PackageView:
    """A package page's content from its state, the trust root in force and who holds what."""
    delegation = root.delegation_for(state.package)
    delegated = set(delegation.keyids) if delegation else set()
    versions = [
        VersionView(
            version=version,
            drupal_version=record.drupal_version,
            sha256=record.sha256,
            sha1=record.sha1,
            size=record.size,
            origin_url=record.origin_url,
            position=record.position,
            signers=[Signer(k, k in delegated) for k in record.signed_by],
            yanked=record.yanked,
            holders=holders(record),
        )
        for version, record in sorted(
            state.versions.items(), key=lambda item: _offset(item[1].position), reverse=True
        )
    ]
    return PackageView(
        package=state.package,
        namespace=namespace_of(state.package),
        publisher=delegation.publisher if delegation else "no publisher (not delegated)",
        threshold=delegation.threshold if delegation else 0,
        root_version=root.version,
        versions=versions,
        advisories=list(state.advisories.values()),
        expunged=sorted(state.expunged.items()),
        holders_note=note,
    )


def _offset(position: str) -> int:
    """The log offset of a version's position; -1 for a state without one."""
    try:
        return split_position(position)[2]
    except MalformedEventError:
        return -1


def rejection_row(record: ReleaseRejected) -> RejectionRow:
    return RejectionRow(
        at=record.rejected_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        region=record.region,
        where=f"{record.topic}[{record.partition}]@{record.offset}",
        key=record.key or "",
        reason=record.reason,
        detail=record.detail,
    )


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


def sync_text(status: NodeStatus) -> str:
    """ "in sync", "behind by N events (S s)", or the state and why."""
    if status.state in ("degraded", "stopped"):
        return f"{status.state}: {status.detail}" if status.detail else status.state
    if status.events_behind == 0:
        return "in sync"
    more = "+" if status.behind_is_lower_bound else ""
    age = f", {status.seconds_behind:.0f} s" if status.seconds_behind is not None else ""
    return f"behind by {status.events_behind}{more} events{age}"


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return "-"


#: The colour of each shown state: green only in sync.
_HEALTH = {
    "in-sync": "ok",
    "catching-up": "behind",
    "starting": "behind",
    "degraded": "down",
    "stopped": "down",
    "silent": "down",
}
#: Directory admissions that mean it sends the node no clients.
_NOT_ROUTED = ("refused", "dropped", "silent", "stopped")


def node_rows(
    book: NodeBook,
    *,
    regions: Sequence[str] = (),
    admissions: Mapping[str, tuple[str, str]] | None = None,
    heard: Mapping[str, datetime] | None = None,
    silent_after: timedelta = SILENT_AFTER,
    now: datetime,
) -> list[NodeRow]:
    """One row per registered node, by region: URL, sync state, last heartbeat, store usage
    and, given ``admissions``, the directory's admission.

    A node not heard from within ``silent_after`` is shown ``silent``, one that said
    goodbye ``stopped`` (``shown_state``), never in sync. ``heard`` gives, per node id, when
    the reader last heard from it on its own clock (the directory's); without it, the
    heartbeat's own time (else the registration's) against ``now``.
    """
    rows = []
    registrations = sorted(
        book.registrations.values(), key=lambda r: (r.region, r.base_url, r.node_id)
    )
    for registration in registrations:
        if regions and registration.region not in regions:
            continue
        status = book.statuses.get(registration.node_id)
        heard_at = (heard or {}).get(registration.node_id) or (
            status.heartbeat_at if status is not None else registration.registered_at
        )
        state = shown_state(status, heard_at=heard_at, now=now, silent_after=silent_after)
        if state == "silent":
            sync = f"silent: no heartbeat for more than {silent_after.total_seconds():g} s"
        elif status is None:
            sync = "no heartbeat yet"
        else:
            sync = sync_text(status)
        health = _HEALTH[state]
        heartbeat, store, root = "-", "-", "-"
        if status is not None:
            heartbeat = age_text(status.heartbeat_at, now)
            store = _size(status.store_bytes) if registration.mode == "full" else "metadata only"
            root = f"v{status.trust_root_version}"
        admission, reason = (None, "")
        if admissions is not None:
            admission, reason = admissions.get(registration.node_id, ("unknown", ""))
            if admission in _NOT_ROUTED:
                health = "down"
        rows.append(
            NodeRow(
                region=registration.region,
                node_id=registration.node_id,
                base_url=registration.base_url,
                sync=sync,
                state=state,
                health=health,
                heartbeat=heartbeat,
                store=store,
                trust_root=root,
                admission=admission,
                reason=reason,
            )
        )
    return rows


# --- the lag chart -----------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """An SVG line chart of events behind over time, as markup-safe text and a summary."""

    svg: str
    summary: str
    #: Each line's label, colour and latest value: the legend, written beside the chart.
    lines: Sequence[tuple[str, str, int]] = field(default_factory=tuple)


def lag_chart(series: Iterable[Series], *, width: int = 720, height: int = 220) -> Chart:
    """Draw each series' events behind over the time the samples span.

    Empty when no series has two samples. The axis labels are text in the SVG, each
    line carries a ``<title>`` with its node and value, and the legend
    (``Chart.lines``) is written beside it as text, so the chart reads without colour.
    """
    drawn = [s for s in series if s.samples]
    if not drawn or sum(len(s.samples) for s in drawn) < 2:
        return Chart("", "no heartbeats yet")
    start = min(s.samples[0].at for s in drawn)
    end = max(s.samples[-1].at for s in drawn)
    span = max((end - start).total_seconds(), 1.0)
    top = max(max(p.events_behind for p in s.samples) for s in drawn)
    top = max(top, 1)
    left, right, upper, lower = 56, 12, 12, 28
    plot_w, plot_h = width - left - right, height - upper - lower

    def x(at: datetime) -> float:
        return left + (at - start).total_seconds() / span * plot_w

    def y(value: int) -> float:
        return upper + plot_h - value / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="lag-title">',
        f'<title id="lag-title">Events behind per node, over the last {_span_text(span)}</title>',
        f'<line x1="{left}" y1="{upper + plot_h}" x2="{left + plot_w}" y2="{upper + plot_h}" '
        'stroke="#888"/>',
        f'<line x1="{left}" y1="{upper}" x2="{left}" y2="{upper + plot_h}" stroke="#888"/>',
        f'<text x="{left - 6}" y="{upper + 4}" text-anchor="end" font-size="11">{top}</text>',
        f'<text x="{left - 6}" y="{upper + plot_h}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{left}" y="{height - 8}" font-size="11">-{_span_text(span)}</text>',
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" font-size="11">'
        f"{end:%H:%M:%S} UTC</text>",
    ]
    lines: list[tuple[str, str, int]] = []
    for index, one in enumerate(drawn):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{x(p.at):.1f},{y(p.events_behind):.1f}" for p in one.samples)
        label = escape(one.label)
        last = one.samples[-1].events_behind
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{label}: {last} events behind</title></polyline>"
        )
        lines.append((one.label, colour, last))
    parts.append("</svg>")
    summary = ", ".join(f"{s.label}: {s.samples[-1].events_behind} behind" for s in drawn)
    return Chart("".join(parts), summary, lines)


def _span_text(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


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

    async def rejections(self, request: web.Request) -> web.Response:
        rows = await asyncio.to_thread(self._source.rejections)
        return self._page("rejections.html", rows=rows)


class NodeOwnStatus:
    """A node's status pages: itself (its heartbeat and lag history), its packages and the
    rejections of its region. Blocking methods: call them in a thread."""

    def __init__(
        self,
        *,
        registration: NodeRegistration | None,
        last_status: Callable[[], NodeStatus | None],
        history: Callable[[], Sequence[LagSample]],
        states: StateReader,
        store: ObjectStore,
        trust_root: Callable[[], TrustRoot],
        rejections: RejectionLog | None,
        keeps_zips: bool,
        title: str,
        silent_after: timedelta = SILENT_AFTER,
    ) -> None:
        self.title = title
        #: Three of this node's heartbeat periods: its last sent heartbeat older than this
        #: (the broker refuses them) shows it silent on its own page too.
        self._silent_after = silent_after
        self._registration = registration
        self._last_status = last_status
        self._history = history
        self._states = states
        self._store = store
        self._trust_root = trust_root
        self._rejections = rejections
        self._keeps_zips = keeps_zips

    def network(self, now: datetime) -> NetworkView:
        book = NodeBook()
        series: list[Series] = []
        if self._registration is not None:
            book.registrations[self._registration.node_id] = self._registration
            status = self._last_status()
            if status is not None:
                book.statuses[status.node_id] = status
            label = f"{self._registration.region} {self._registration.base_url}"
            series.append(Series(label, list(self._history())))
        counts = self._rejections.counts() if self._rejections is not None else []
        rows = node_rows(book, silent_after=self._silent_after, now=now)
        return NetworkView("This node", rows, series, counts)

    async def package(self, name: str) -> PackageView | None:
        return await asyncio.to_thread(self._package, name)

    def _package(self, name: str) -> PackageView | None:
        state = self._states.load(name)
        if state is None:
            return None
        held: dict[str, str] = {}
        where = f"this node ({self._registration.region})" if self._registration else "this node"
        if self._keeps_zips:
            for record in state.versions.values():
                if self._store.stat(layout.artifact_key(record.sha256)) is not None:
                    held[record.sha256] = where + self._came_from(record.sha256)
        note = (
            "Verified copies: this node's store holds the zip, checked against the signed "
            "sha256 before it was written."
            if self._keeps_zips
            else "This node keeps metadata only: downloads go to a node holding a verified copy."
        )
        return package_view(
            state,
            self._trust_root(),
            lambda record: [held[record.sha256]] if record.sha256 in held else [],
            note,
        )

    def _came_from(self, sha256: str) -> str:
        """``, from de (EU), fetched 2026-12-06 12:00 UTC``: where the copy's bytes came
        from (the replicator's record; a sovereign region's proof), or nothing if unknown."""
        try:
            body = self._store.get(layout.provenance_key(sha256), complete=is_json)
        except StoreUnavailableError:
            return ", origin unknown (the store did not answer)"
        if body is None:
            return ""  # fetched before provenance was recorded
        record = orjson.loads(body.data)
        jurisdiction = record.get("jurisdiction") or "jurisdiction not declared"
        fetched = datetime.fromisoformat(record["fetched_at"]).astimezone(UTC)
        return f", from {record['from']} ({jurisdiction}), fetched {fetched:%Y-%m-%d %H:%M} UTC"

    def rejections(self) -> list[RejectionRow]:
        return self._rejections.rows() if self._rejections is not None else []


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
