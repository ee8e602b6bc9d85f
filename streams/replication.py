"""Replicating one release event into a region: verify, fetch, store, derive the package's metadata.

``apply_release`` is the pure decision; ``ReleaseReplicator`` performs it
against the region's object store, in an order that makes every step
idempotent: artifact (content addressed) first, then the p2 documents, then
the package state they derive from. Running it twice for the same event changes
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from connectors.origin import FetchLimits, fetch_artifact
from connectors.store import ObjectStore
from schemas import layout
from schemas.composer import render_p2, with_dist_url
from schemas.errors import MalformedEventError, VersionConflictError
from schemas.events import ReleasePublished
from schemas.signing import PublicKey, open_sealed
from schemas.versions import drupal_to_composer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionRecord:
    """A verified version of a package as a node keeps it."""

    drupal_version: str
    sha256: str
    sha1: str
    size: int
    composer: dict[str, Any]


@dataclass(frozen=True)
class PackageState:
    """Everything a node knows of one package: its verified versions, by Composer version."""

    package: str
    versions: Mapping[str, VersionRecord] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "package": self.package,
                "versions": {v: record.__dict__ for v, record in self.versions.items()},
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_json(cls, data: bytes) -> PackageState:
        document = orjson.loads(data)
        return cls(
            package=document["package"],
            versions={v: VersionRecord(**r) for v, r in document["versions"].items()},
        )


def apply_release(state: PackageState, event: ReleasePublished) -> PackageState | None:
    """The state after ``event``, or None when the event is already applied.

    Raises ``VersionConflictError`` when the version exists with other bytes:
    a published (package, version) is immutable.
    """
    current = state.versions.get(event.version)
    if current is not None:
        if (current.sha256, current.sha1, current.size) == (
            event.artifact.sha256,
            event.artifact.sha1,
            event.artifact.size,
        ):
            return None
        raise VersionConflictError(
            f"{event.package} {event.version} was already published with sha256 "
            f"{current.sha256}; this event claims {event.artifact.sha256}. Published versions "
            "are immutable: publish a new version instead"
        )
    record = VersionRecord(
        drupal_version=event.drupal_version,
        sha256=event.artifact.sha256,
        sha1=event.artifact.sha1,
        size=event.artifact.size,
        composer=event.composer,
    )
    return PackageState(package=state.package, versions={**state.versions, event.version: record})


def render_documents(state: PackageState, public_url: str) -> dict[str, bytes]:
    """The p2 documents of a package, with dist URLs on this node."""
    entries = [
        with_dist_url(
            record.composer,
            public_url.rstrip("/") + layout.dist_path(state.package, version, record.sha256),
        )
        for version, record in state.versions.items()
    ]
    return render_p2(state.package, entries)


def verify_release(value: bytes, trusted: Mapping[str, PublicKey]) -> ReleasePublished:
    """Decode and verify a record of the releases topic.

    Raises ``MalformedEventError``, ``UnknownSchemaError``, ``SignatureError``
    or ``InvalidVersionError`` (all ``RejectedError``).
    """
    event = ReleasePublished.from_bytes(open_sealed(value, trusted))
    expected = drupal_to_composer(event.drupal_version)
    if event.version != expected:
        raise MalformedEventError(
            f"{event.package}: Drupal version {event.drupal_version} maps to {expected}, "
            f"the event says {event.version}"
        )
    return event


@dataclass(frozen=True)
class Applied:
    """What one event did to the region."""

    package: str
    version: str
    fetched: bool
    changed: bool


class ReleaseReplicator:
    """Applies verified release events to one region's bucket."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        session: aiohttp.ClientSession,
        trusted: Mapping[str, PublicKey],
        public_url: str,
        work_dir: Path,
        limits: FetchLimits = FetchLimits(),
    ) -> None:
        self._store = store
        self._session = session
        self._trusted = trusted
        self._public_url = public_url
        self._work_dir = work_dir
        self._limits = limits

    async def apply(self, value: bytes) -> Applied:
        """Verify and apply one record; every effect is durable when this returns.

        Raises ``RejectedError`` (never applicable) or ``TransientError`` (retry).
        """
        event = verify_release(value, self._trusted)
        state_doc = await asyncio.to_thread(self._store.get, layout.state_key(event.package))
        state = PackageState.from_json(state_doc.data) if state_doc else PackageState(event.package)
        new_state = apply_release(state, event)
        fetched = await self._ensure_artifact(event)
        if new_state is None:
            return Applied(event.package, event.version, fetched=fetched, changed=False)
        # Documents before state: the state is the record that the event was
        # applied, so it is written last. A crash in between leaves the state
        # behind, and the replay renders and writes the same documents again.
        await self._write_documents(new_state)
        await asyncio.to_thread(
            self._store.put_bytes,
            layout.state_key(event.package),
            new_state.to_json(),
            content_type="application/json",
        )
        return Applied(event.package, event.version, fetched=fetched, changed=True)

    async def _ensure_artifact(self, event: ReleasePublished) -> bool:
        key = layout.artifact_key(event.artifact.sha256)
        existing = await asyncio.to_thread(self._store.stat, key)
        if existing is not None and existing.size == event.artifact.size:
            return False
        path = await fetch_artifact(
            self._session,
            event.artifact.origin_url,
            event.artifact,
            work_dir=self._work_dir,
            limits=self._limits,
        )
        try:
            await asyncio.to_thread(self._store.put_file, key, path, content_type="application/zip")
        finally:
            path.unlink(missing_ok=True)
        return True

    async def _write_documents(self, state: PackageState) -> None:
        for key, document in render_documents(state, self._public_url).items():
            await asyncio.to_thread(
                self._store.put_bytes, key, document, content_type="application/json"
            )
