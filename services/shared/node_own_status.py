"""A node's own status pages as a ``StatusSource``: itself (its heartbeat and lag history),
the packages it holds, where each verified copy came from, and its region's rejections."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from connectors.object_store import ObjectStore, is_json
from schemas import layout
from schemas.errors import StoreUnavailableError
from schemas.federation import SILENT_AFTER, LagSample, NodeBook, NodeRegistration, NodeStatus
from schemas.package_state import StateReader
from schemas.trust import TrustRoot
from services.shared.status_pages import RejectionLog
from services.shared.status_views import (
    NOT_RECORDED,
    STORE_SILENT,
    Copy,
    NetworkView,
    PackageView,
    Provenance,
    RejectionRow,
    Series,
    node_rows,
    package_view,
)

log = logging.getLogger(__name__)


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
        held: dict[str, Copy] = {}
        registration = self._registration
        where = f"this node ({registration.region})" if registration else "this node"
        if self._keeps_zips:
            for record in state.versions.values():
                if self._store.stat(layout.artifact_key(record.sha256)) is not None:
                    held[record.sha256] = self._copy(where, record.sha256)
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

    def _copy(self, where: str, sha256: str) -> Copy:
        """This node's copy of ``sha256`` and where its bytes came from (the replicator's
        record beside the zip: a sovereign region's proof), or why that is not known."""
        registration = self._registration
        region = registration.region if registration else None
        base_url = registration.base_url if registration else None
        try:
            body = self._store.get(layout.provenance_key(sha256), complete=is_json)
        except StoreUnavailableError:
            return Copy(where, region, base_url, unknown=STORE_SILENT)
        if body is None:
            return Copy(where, region, base_url, unknown=NOT_RECORDED)
        try:
            came = Provenance.from_record(body.data)
        except ValueError as exc:
            log.warning("%s: %s", layout.provenance_key(sha256), exc)
            return Copy(where, region, base_url, unknown="its provenance record is unreadable")
        return Copy(where, region, base_url, provenance=came)

    def rejections(self) -> list[RejectionRow]:
        return self._rejections.rows() if self._rejections is not None else []
