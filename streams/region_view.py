"""Where a worker's derived metadata goes: its local view first, then the region's view topic.

``RegionView.write`` renders a package's p2 documents, dates them
(``schemas.view.next_view``), produces the view record and, once the broker
acknowledged it, holds them in the worker's ``LocalView`` (served from then on);
the returned acknowledgement, which resolves after both, is what a batch waits
for before its offsets may be committed. ``BucketView`` is the
earlier design (states and p2 in the object store, ``connectors.state_store``),
kept behind the same interface for the tests that still drive it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from connectors.state_store import PackageStates
from connectors.view_store import LocalView
from schemas.package_state import PackageState
from schemas.view import PackageView, changed_documents, next_view
from streams.faults import BEFORE_LOCAL_WRITE, FaultPoints

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0

#: Produce one record (key, value); the awaitable it returns resolves once the broker
#: acknowledged it (Faust's ``topic.send``).
SendRecord = Callable[[bytes, bytes], Awaitable[Awaitable[object]]]
Renderer = Callable[[PackageState], Mapping[str, bytes]]


@dataclass(frozen=True)
class ViewWrite:
    """What one write did; ``acked`` resolves once it is durable in the region."""

    documents_written: int
    state_written: bool
    acked: Awaitable[None]
    superseded: bool = False


class MetadataView(Protocol):
    """Where the replicator reads package states and writes what it derived."""

    async def load(self, package: str) -> PackageState | None: ...

    async def write(
        self, state: PackageState, *, previous: PackageState | None, redelivered: bool
    ) -> ViewWrite: ...


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


class RegionView:
    """A worker's view of its region: a ``LocalView`` plus the view topic it produces to."""

    def __init__(
        self,
        local: LocalView,
        *,
        render: Renderer,
        send: SendRecord,
        written_by: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        faults: FaultPoints | None = None,
    ) -> None:
        self.local = local
        self._faults = faults or FaultPoints(None)
        self._render = render
        self._send = send
        self._written_by = written_by
        self._clock = clock
        # Views produced and not acknowledged yet (so not held yet), by package: the next
        # write of a package builds on its newest view, acknowledged or not, so its dates
        # still move forward while the previous batch's records are in flight.
        self._unacked: dict[str, tuple[PackageState, PackageView]] = {}
        #: Views acknowledged and not held yet, each with what waits for it: held together,
        #: in one transaction, once the acknowledgements that came in together are in.
        self._to_hold: list[tuple[PackageView, bytes, PackageState, asyncio.Future[None]]] = []

    async def load(self, package: str) -> PackageState | None:
        unacked = self._unacked.get(package)
        return unacked[0] if unacked is not None else self.local.load(package)

    def newest(self, package: str) -> PackageView | None:
        """The newest view of ``package`` this worker wrote or holds, acknowledged or not."""
        unacked = self._unacked.get(package)
        return unacked[1] if unacked is not None else self.local.held(package)

    def prepare(self, state: PackageState) -> tuple[PackageView, bytes]:
        """The view of ``state`` over the newest one, and its record."""
        view = view_of(
            state,
            self.newest(state.package),
            render=self._render,
            now=self._clock(),
            written_by=self._written_by,
        )
        return view, view.to_bytes()

    async def write(
        self, state: PackageState, *, previous: PackageState | None, redelivered: bool
    ) -> ViewWrite:
        """Produce ``state``'s view record, then, once the broker acknowledged it, hold it
        locally (served from then on); ``acked`` resolves after both. A redelivery that
        changes nothing writes nothing.

        Served only once durable: whatever any process of the region ever answered is in
        the view topic, so every other process (and this one after a restart, even with its
        local store lost) holds it once it has read the topic that far."""
        if redelivered and previous is state:
            # Nothing new: what this worker holds came through the view topic (it holds only
            # what was acknowledged there), so a redelivery or a replay writes nothing.
            return ViewWrite(0, False, _done())
        held = self.newest(state.package)
        view, encoded = self.prepare(state)
        changed = changed_documents(view, held)
        self._unacked[state.package] = (state, view)
        acked = asyncio.ensure_future(self._deliver_then_hold(state, view, encoded))
        return ViewWrite(changed, previous is None or previous is not state, acked)

    async def _deliver_then_hold(
        self, state: PackageState, view: PackageView, encoded: bytes
    ) -> None:
        try:
            # Expected before it is produced: the follower may read it back before the
            # acknowledgement reaches this loop, and would hold it a second time.
            self.local.expect_echo(state.package, encoded)
            await self.deliver(state.package.encode(), encoded)
            self._faults.reached(BEFORE_LOCAL_WRITE)
            await self._hold(view, encoded, state)
        finally:
            if self._unacked.get(state.package, (None, None))[1] is view:
                del self._unacked[state.package]

    async def _hold(self, view: PackageView, encoded: bytes, state: PackageState) -> None:
        """Hold ``view`` locally, with every other view acknowledged in the same turn of the
        event loop (one sqlite transaction and one hand-over to the docroot's writer for a
        batch's packages, not one each: measured, 68 µs of CPU a package alone, 35 in
        hundreds). Raises what ``LocalView.put_newest`` raises."""
        loop = asyncio.get_running_loop()
        held = loop.create_future()
        self._to_hold.append((view, encoded, state, held))
        if len(self._to_hold) == 1:
            loop.call_soon(self._hold_pending)
        await held

    def _hold_pending(self) -> None:
        pending, self._to_hold = self._to_hold, []
        try:
            self.local.put_newest((view, encoded, state) for view, encoded, state, _ in pending)
        except Exception as exc:
            for *_, held in pending:
                if not held.done():
                    held.set_exception(exc)
            return
        for *_, held in pending:
            if not held.done():
                held.set_result(None)

    async def deliver(self, key: bytes, value: bytes) -> None:
        """Produce a view record and wait for its acknowledgement, retrying until it comes: a
        batch's offsets wait for it. Re-sending is harmless (readers keep the highest sequence)."""
        attempt = 0
        while True:
            try:
                pending = await self._send(key, value)
                await pending
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the producer's errors, whatever the broker's state
                attempt += 1
                delay = min(0.25 * 2**attempt, MAX_BACKOFF_SECONDS)
                log.warning(
                    "view record of %s not acknowledged yet (%s: %s); retrying in %.1f s",
                    key.decode(errors="replace"),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def resend(self, package: str) -> None:
        """Produce the held record of ``package`` again (an older one landed after it)."""
        state = self.local.load(package)
        if state is None:
            return
        _, encoded = self.prepare(state)
        await self.deliver(package.encode(), encoded)


def view_of(
    state: PackageState,
    held: PackageView | None,
    *,
    render: Renderer,
    now: datetime,
    written_by: str,
    replace: bool = False,
) -> PackageView:
    """The view of ``state`` rendered and dated over ``held``, the package's view before it.

    Raises ``MalformedEventError`` when the state cannot be rendered (never for a state
    ``apply_event`` made)."""
    return next_view(
        package=state.package,
        sequence=state.sequence,
        position=state.last_position,
        state=state.to_json(),
        documents=render(state),
        held=held,
        now=now,
        written_by=written_by,
        replace=replace,
    )


class BucketView:
    """The earlier design: states and p2 documents in the region's bucket, fenced after the
    write (``connectors.state_store``). Blocking store calls run in threads."""

    def __init__(self, states: PackageStates, render: Renderer) -> None:
        self.states = states
        self._render = render

    async def load(self, package: str) -> PackageState | None:
        return await asyncio.to_thread(self.states.load, package)

    async def write(
        self, state: PackageState, *, previous: PackageState | None, redelivered: bool
    ) -> ViewWrite:
        changed = previous is not state
        if redelivered:
            known: Mapping[str, bytes] | None = None  # a crash may have cut a write short
        elif previous is not None:
            known = self._render(previous)
        else:
            known = {}
        saved = await asyncio.to_thread(
            self.states.save, state, state_changed=changed, stored_documents=known
        )
        return ViewWrite(
            len(saved.documents_written),
            saved.state_written,
            _done(),
            superseded=saved.superseded_by is not None,
        )
