"""Replicating one publisher event into a region: verify, decide, fetch, store, derive metadata.

``ReleaseReplicator.apply`` verifies the signed event against the trust root
in force before anything else, asks the pure ``apply_event`` what the event
does, and performs that against the region's object store in an order that
makes every step idempotent: artifact (content addressed) first, then the p2
documents, then the package state they derive from (the record that the event
was applied). A redelivered event changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from connectors.origin import FetchLimits, fetch_artifact
from connectors.store import ObjectStore, is_json
from schemas import layout
from schemas.errors import WrongPackageError
from schemas.events import Artifact, PackageEvent, ReleasePublished
from schemas.signing import SignedEvent
from schemas.trust import TrustRoot, verify_event
from streams.package_state import PackageState, Transition, apply_event, render_documents

log = logging.getLogger(__name__)

#: A release zip over this size is refused unless the node's configuration says otherwise.
DEFAULT_MAX_ARTIFACT_SIZE = 1 << 30


@dataclass(frozen=True)
class Applied:
    """What one event did to the region."""

    package: str
    kind: str
    sequence: int
    fetched: bool
    changed: bool


class ReleaseReplicator:
    """Applies verified publisher events to one region's bucket."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        session: aiohttp.ClientSession,
        root: Callable[[], TrustRoot],
        public_url: str,
        work_dir: Path,
        limits: FetchLimits = FetchLimits(),
        max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._session = session
        self._root = root
        self._public_url = public_url
        self._work_dir = work_dir
        self._limits = limits
        self._max_artifact_size = max_artifact_size
        self._clock = clock

    def verify(self, value: bytes) -> PackageEvent:
        """Verify a record against the trust root in force; raises ``RejectedError``."""
        return verify_event(
            value, self._root(), now=self._clock(), max_artifact_size=self._max_artifact_size
        )

    async def apply(self, value: bytes, position: str) -> Applied:
        """Verify and apply one record found at ``position``; effects are durable on return.

        Raises ``RejectedError`` (never applicable) or ``TransientError`` (retry).
        """
        event = self.verify(value)
        digest = hashlib.sha256(SignedEvent.from_bytes(value).payload).hexdigest()
        state_doc = await asyncio.to_thread(
            self._store.get, layout.state_key(event.package), complete=is_json
        )
        state = PackageState.from_json(state_doc.data) if state_doc else PackageState(event.package)
        transition = apply_event(state, event, digest=digest, position=position)
        if transition is None:
            return Applied(event.package, type(event).__name__, event.sequence, False, False)
        fetched = False
        if transition.fetch is not None and isinstance(event, ReleasePublished):
            fetched = await self._ensure_artifact(event.package, transition.fetch)
        await self._write(transition)
        if transition.delete is not None:
            # After the state: a crash before this leaves an orphan zip, never a
            # version whose zip is gone.
            await asyncio.to_thread(self._store.delete, layout.artifact_key(transition.delete))
        return Applied(event.package, type(event).__name__, event.sequence, fetched, True)

    async def _ensure_artifact(self, package: str, artifact: Artifact) -> bool:
        key = layout.artifact_key(artifact.sha256)
        existing = await asyncio.to_thread(self._store.stat, key)
        if existing is not None and existing.size == artifact.size:
            return False
        path = await fetch_artifact(
            self._session,
            artifact.origin_url,
            artifact,
            work_dir=self._work_dir,
            limits=self._limits,
        )
        try:
            check_top_directory(path, package)
            await asyncio.to_thread(self._store.put_file, key, path, content_type="application/zip")
        finally:
            path.unlink(missing_ok=True)
        return True

    async def _write(self, transition: Transition) -> None:
        state = transition.state
        for key, document in render_documents(state, self._public_url).items():
            await asyncio.to_thread(
                self._store.put_bytes, key, document, content_type="application/json"
            )
        await asyncio.to_thread(
            self._store.put_bytes,
            layout.state_key(state.package),
            state.to_json(),
            content_type="application/json",
        )


def check_top_directory(path: Path, package: str) -> None:
    """A release zip holds one top directory named after the project (``token/`` for drupal/token).

    Raises ``WrongPackageError`` when it holds another project's files (wrong
    software under a right name) or is not a zip.
    """
    project = package.split("/", 1)[1]
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise WrongPackageError(f"the artifact of {package} is not a zip file: {exc}") from exc
    tops = {name.split("/", 1)[0] for name in names if name.strip("/")}
    if tops != {project} or not any(name.startswith(f"{project}/") for name in names):
        raise WrongPackageError(
            f"the artifact of {package} holds {sorted(tops)[:3]}, not one {project}/ "
            "directory: it is another project's release"
        )
