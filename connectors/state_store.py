"""Package states and their p2 documents in a region's bucket, safe against a stale writer.

The embedded store ignores conditional PUTs, so "write only if nobody wrote a
newer one" cannot be asked of it. Instead each state is a new object named by
its per-package sequence (``layout.state_key``) that is never overwritten, and
the mutable p2 documents are fenced by a check after the write:

1. write the state object, then the p2 documents rendered from it;
2. list the package's state objects; if one is newer than what was just
   rendered, render that one and write again, and check again.

Why this cannot leave older documents in place: a writer of a newer state writes
its state object before its documents. If its document write came before our
last one, its state object came before our last listing, which saw it and made
us write its documents. If it came after, the newer documents win. So once
every writer has returned, the documents are those of the newest state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from connectors.object_store import ObjectStore, is_json
from schemas import layout
from schemas.package_state import PackageState

log = logging.getLogger(__name__)

#: State objects kept per package besides the newest, for a look back after an incident.
KEPT_STATES = 2
#: Older state objects are deleted once this many more than KEPT_STATES have piled up.
PRUNE_SLACK = 6
#: A fence that keeps finding newer states gives up after this many rounds: the
#: writers of those states finish the job themselves.
MAX_FENCE_ROUNDS = 8

Renderer = Callable[[PackageState], Mapping[str, bytes]]


@dataclass(frozen=True)
class Saved:
    """What ``PackageStates.save`` wrote."""

    state_written: bool
    documents_written: tuple[str, ...]
    superseded_by: int | None = None  # a newer state found by the fence, if any


class PackageStates:
    """Reads and writes the derived state of packages in one bucket (blocking calls)."""

    def __init__(self, store: ObjectStore, render: Renderer) -> None:
        self._store = store
        self._render = render

    def sequences(self, package: str) -> list[int]:
        """The sequences of the state objects of ``package``, ascending."""
        keys = self._store.list_keys(layout.state_prefix(package))
        return sorted(s for s in map(layout.state_sequence, keys) if s is not None)

    def load(self, package: str) -> PackageState | None:
        """The newest state of ``package``, or None when nothing of it was applied here.

        Raises ``StoreUnavailableError``.
        """
        sequences = self.sequences(package)
        for sequence in reversed(sequences):
            body = self._store.get(layout.state_key(package, sequence), complete=is_json)
            if body is not None:  # deleted by a concurrent prune: take the next older
                return PackageState.from_json(body.data)
        return None

    def documents(self, package: str) -> dict[str, bytes]:
        """The p2 documents of ``package`` as stored now (missing ones left out)."""
        found: dict[str, bytes] = {}
        for key in (layout.p2_key(package), layout.p2_key(package, dev=True)):
            body = self._store.get(key, complete=is_json)
            if body is not None:
                found[key] = body.data
        return found

    def save(
        self,
        state: PackageState,
        *,
        state_changed: bool = True,
        stored_documents: Mapping[str, bytes] | None = None,
    ) -> Saved:
        """Make ``state`` durable and its p2 documents current, unless a newer state exists.

        ``stored_documents`` are the documents as the caller knows them to be
        stored; a document equal to its stored bytes is not written again (its
        Last-Modified stays). Without them, the stored documents are read first.
        Raises ``StoreUnavailableError``; a retry after it is safe.
        """
        if state_changed:
            self._store.put_bytes(
                layout.state_key(state.package, state.sequence),
                state.to_json(),
                content_type="application/json",
            )
        known = dict(stored_documents) if stored_documents is not None else None
        return self._fence(state, known, state_changed, superseded=None)

    def _fence(
        self,
        state: PackageState,
        known: dict[str, bytes] | None,
        state_changed: bool,
        *,
        superseded: int | None,
    ) -> Saved:
        """Write the documents of ``state``, then of any newer state found, until none is."""
        written: list[str] = []
        current = state
        for _ in range(MAX_FENCE_ROUNDS):
            if known is None:
                known = self.documents(current.package)
            for key, document in self._render(current).items():
                if known.get(key) != document:
                    self._store.put_bytes(key, document, content_type="application/json")
                    known[key] = document
                    written.append(key)
            sequences = self.sequences(current.package)
            self._prune(current.package, sequences)
            newest = sequences[-1] if sequences else current.sequence
            if newest <= current.sequence:
                break
            # A worker that now owns this package wrote a newer state: its documents win.
            log.warning(
                "%s: state #%d superseded by #%d written by another worker; rendering that",
                state.package,
                current.sequence,
                newest,
            )
            superseded = newest
            loaded = self.load(current.package)
            if loaded is None or loaded.sequence <= current.sequence:
                break
            current = loaded
            known = None
        return Saved(
            state_written=state_changed,
            documents_written=tuple(written),
            superseded_by=superseded,
        )

    def _prune(self, package: str, sequences: list[int]) -> None:
        # In rounds, not on every write: a delete per write would be a third more
        # requests on a store that answers a few hundred a second (rclone).
        if len(sequences) <= KEPT_STATES + 1 + PRUNE_SLACK:
            return
        for sequence in sequences[: -(KEPT_STATES + 1)]:
            self._store.delete(layout.state_key(package, sequence))

    def packages(self) -> list[str]:
        """Every package with a state in the bucket (one listing of ``state/``)."""
        names: set[str] = set()
        for key in self._store.list_keys("state/"):
            parts = key.split("/")
            if len(parts) == 4 and layout.state_sequence(key) is not None:
                names.add(f"{parts[1]}/{parts[2]}")
        return sorted(names)
