"""A region's view of one package (state + the p2 bytes it serves) and the rules for keeping it.

The view is derived state: a worker makes it from the log, writes it to its own
local store and to the region's compacted view topic, and every other worker and
frontend of the region follows that topic. Two pure rules keep every copy right:

- ``supersedes``: a copy is replaced only by a record of a higher per-package
  sequence (a stale worker's late record is older and is ignored), or by one a
  rebuild wrote (``replace``) of at least the same sequence (a re-render, or a
  removal; a rebuild never takes a package back to an older event).
- ``next_view``: a document's Last-Modified changes exactly when its bytes do, and
  then strictly increases (at least one second), so no client holding the old bytes
  is ever answered 304 for new ones, even when both were written in one second.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas import layout
from schemas.codec import Decoder, encode, load_schema, schema_family
from schemas.errors import MalformedEventError

#: zlib level of the view record's blobs: fast, and p2 JSON still shrinks about 5x.
COMPRESSION_LEVEL = 1

_DECODER = Decoder(schema_family("view_record"))


@dataclass(frozen=True)
class PackageView:
    """One package as a region serves it. ``state`` is None once the package was removed."""

    package: str
    sequence: int
    position: str
    state: bytes | None
    stable: bytes
    dev: bytes
    stable_modified: int
    dev_modified: int
    written_by: str
    written_at: datetime
    replace: bool = False

    @property
    def removed(self) -> bool:
        return self.state is None

    def documents(self) -> dict[str, tuple[bytes, int]]:
        """The p2 documents by bucket-style key (``p2/drupal/token.json``) with Last-Modified."""
        if self.removed:
            return {}
        return {
            layout.p2_key(self.package): (self.stable, self.stable_modified),
            layout.p2_key(self.package, dev=True): (self.dev, self.dev_modified),
        }

    def to_bytes(self) -> bytes:
        """The view record (Avro single object, blobs compressed). Never raises for a valid view."""
        record: dict[str, Any] = {
            "package": self.package,
            "sequence": self.sequence,
            "position": self.position,
            "state": None if self.state is None else zlib.compress(self.state, COMPRESSION_LEVEL),
            "stable": zlib.compress(self.stable, COMPRESSION_LEVEL) if self.stable else b"",
            "dev": zlib.compress(self.dev, COMPRESSION_LEVEL) if self.dev else b"",
            "stable_modified": self.stable_modified,
            "dev_modified": self.dev_modified,
            "written_by": self.written_by,
            "written_at": self.written_at,
            "replace": self.replace,
        }
        return encode(load_schema("view_record"), record)

    @classmethod
    def from_bytes(cls, data: bytes) -> PackageView:
        """Decode a view record. Raises ``MalformedEventError`` (or ``UnknownSchemaError``)."""
        _, record = _DECODER.decode(data)
        try:
            state = record["state"]
            return cls(
                package=record["package"],
                sequence=record["sequence"],
                position=record["position"],
                state=None if state is None else zlib.decompress(state),
                stable=zlib.decompress(record["stable"]) if record["stable"] else b"",
                dev=zlib.decompress(record["dev"]) if record["dev"] else b"",
                stable_modified=record["stable_modified"],
                dev_modified=record["dev_modified"],
                written_by=record["written_by"],
                written_at=record["written_at"],
                replace=record["replace"],
            )
        except zlib.error as exc:
            raise MalformedEventError(
                f"view record of {record.get('package')!r} has a blob that does not inflate "
                f"({exc}); it was not written by fairstream"
            ) from exc


def supersedes(incoming: PackageView, held: PackageView | None) -> bool:
    """Whether ``incoming`` replaces the copy ``held`` (None: nothing held). Never raises."""
    if held is None:
        return True
    if incoming.replace:
        return incoming.sequence >= held.sequence
    return incoming.sequence > held.sequence


# Long because keyword-only: each part of the next view, named at every call.
def next_view(
    *,
    package: str,
    sequence: int,
    position: str,
    state: bytes,
    documents: Mapping[str, bytes],
    held: PackageView | None,
    now: datetime,
    written_by: str,
    replace: bool = False,
) -> PackageView:
    """The view after a write of ``state`` and its rendered ``documents`` over ``held``.

    A document equal to the held one keeps its Last-Modified; a changed one gets
    ``max(now, held + 1)`` in whole seconds. Raises ``KeyError`` when ``documents``
    lacks one of the package's two p2 documents.
    """
    stable = documents[layout.p2_key(package)]
    dev = documents[layout.p2_key(package, dev=True)]
    second = int(now.timestamp())
    return PackageView(
        package=package,
        sequence=sequence,
        position=position,
        state=state,
        stable=stable,
        dev=dev,
        stable_modified=_stamp(stable, held.stable if held else None, held, "stable", second),
        dev_modified=_stamp(dev, held.dev if held else None, held, "dev", second),
        written_by=written_by,
        written_at=now,
        replace=replace,
    )


def changed_documents(view: PackageView, held: PackageView | None) -> int:
    """How many of the two p2 documents ``view`` writes differ from ``held``'s. Never raises."""
    if held is None:
        return 2
    return int(held.stable != view.stable) + int(held.dev != view.dev)


def removal(held: PackageView, *, now: datetime, written_by: str) -> PackageView:
    """The record that removes ``held``'s package from the region (a rebuild's). Never raises."""
    return PackageView(
        package=held.package,
        sequence=held.sequence,
        position=held.position,
        state=None,
        stable=b"",
        dev=b"",
        stable_modified=held.stable_modified,
        dev_modified=held.dev_modified,
        written_by=written_by,
        written_at=now,
        replace=True,
    )


def _stamp(
    document: bytes, before: bytes | None, held: PackageView | None, which: str, second: int
) -> int:
    if held is None or held.removed:
        floor = 0 if held is None else max(held.stable_modified, held.dev_modified)
        return max(second, floor + 1) if floor else second
    previous = held.stable_modified if which == "stable" else held.dev_modified
    if document == before:
        return previous
    return max(second, previous + 1)
