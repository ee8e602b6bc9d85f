"""A node's own status pages as a ``StatusSource``: itself (its heartbeat and lag history),
the packages it holds, where each verified copy came from, and its region's rejections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import orjson

from connectors.object_store import ObjectStore, is_json
from schemas import layout
from schemas.errors import StoreUnavailableError
from schemas.federation import SILENT_AFTER, LagSample, NodeBook, NodeRegistration, NodeStatus
from schemas.package_state import StateReader
from schemas.trust import TrustRoot
from services.shared.status_pages import RejectionLog
from services.shared.status_views import (
    NetworkView,
    PackageView,
    RejectionRow,
    Series,
    node_rows,
    package_view,
)


class NodeOwnStatus:
    """A node's status pages: itself (its heartbeat and lag history), its packages and the
    rejections of its region. Blocking methods: call them in a thread."""

    # Long because the node and the frontend hand over different parts: one keyword each.
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
