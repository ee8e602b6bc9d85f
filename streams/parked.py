"""Parked fetches: a release's zip no source delivered, kept as a document in the bucket's
``pending/`` and retried with backoff until it is stored (or its version is gone)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from connectors.object_store import ObjectStore, is_json
from schemas import layout
from schemas.errors import ArtifactUnreachableError, RejectedError, TransientError
from schemas.events import Artifact
from schemas.package_state import PackageState

# The replicator's log lines keep the logger name they had before this module was split
# out of streams.replication (operators filter on it).
log = logging.getLogger("streams.replication")

#: Backoff of a parked fetch: first retry after this, doubling up to PENDING_MAX_DELAY.
PENDING_FIRST_DELAY = timedelta(seconds=15)
PENDING_MAX_DELAY = timedelta(hours=1)

#: A package's state as the region holds it (None: not applied here).
LoadState = Callable[[str], Awaitable[PackageState | None]]
#: Fetch (package, version, artifact, the release's position in the log)'s zip into the
#: bucket and announce it; raises as ``ReleaseReplicator`` does when no source delivers.
EnsureArtifact = Callable[[str, str, Artifact, str], Awaitable[bool]]


@dataclass(frozen=True)
class PendingReport:
    retried: int
    recovered: int
    still_pending: int


def pending_document(
    package: str, version: str, artifact: Artifact, attempts: int, due: datetime, error: str
) -> bytes:
    """A parked fetch: what to fetch, how often it failed, when to try again, the last error."""
    return orjson.dumps(
        {
            "package": package,
            "version": version,
            "sha256": artifact.sha256,
            "sha1": artifact.sha1,
            "size": artifact.size,
            "origin_url": artifact.origin_url,
            "attempts": attempts,
            "next_attempt_at": due.isoformat(),
            "last_error": error,
        },
        option=orjson.OPT_SORT_KEYS,
    )


class ParkedFetches:
    """The parked fetches of one region's bucket."""

    def __init__(
        self, store: ObjectStore, *, clock: Callable[[], datetime], first_delay: timedelta
    ) -> None:
        self._store = store
        self._clock = clock
        self._first_delay = first_delay

    async def park(self, package: str, version: str, artifact: Artifact, error: str) -> None:
        """Park the fetch of ``artifact``, first retried after the first delay."""
        now = self._clock()
        log.warning("%s %s: zip unreachable, parked for retry: %s", package, version, error)
        document = pending_document(package, version, artifact, 0, now + self._first_delay, error)
        await asyncio.to_thread(
            self._store.put_bytes,
            layout.pending_key(artifact.sha256),
            document,
            content_type="application/json",
        )

    async def request(self, package: str, version: str, artifact: Artifact) -> None:
        """Park a fetch due now, unless one is parked already; a store that does not answer
        is logged, not raised (a client's request only hastens the fetch)."""
        key = layout.pending_key(artifact.sha256)
        try:
            for parked in layout.pending_keys(artifact.sha256):
                if await asyncio.to_thread(self._store.stat, parked) is not None:
                    return
            document = pending_document(
                package, version, artifact, 0, self._clock(), "requested while not held"
            )
            await asyncio.to_thread(
                self._store.put_bytes, key, document, content_type="application/json"
            )
        except TransientError as exc:
            log.warning("refetch of %s not scheduled: %s", artifact.sha256[:12], exc)

    async def count(self) -> int:
        keys = await asyncio.to_thread(self._store.list_keys, layout.PENDING_PREFIX)
        return len(keys)

    async def retry_due(self, load: LoadState, ensure: EnsureArtifact) -> PendingReport:
        """Try the parked fetches that are due with ``ensure``; a fetch whose version
        ``load`` no longer shows with that zip (expunged) is dropped."""
        keys = await asyncio.to_thread(self._store.list_keys, layout.PENDING_PREFIX)
        retried = recovered = 0
        now = self._clock()
        for key in keys:
            doc = await self._due(key, now)
            if doc is None:
                continue
            package, version = doc["package"], doc["version"]
            artifact = Artifact(
                sha256=doc["sha256"],
                sha1=doc["sha1"],
                size=doc["size"],
                origin_url=doc["origin_url"],
            )
            state = await load(package)
            record = state.versions.get(version) if state is not None else None
            if record is None or record.sha256 != artifact.sha256:
                # Expunged (or never applied here): nothing to fetch any more.
                await asyncio.to_thread(self._store.delete, key)
                continue
            retried += 1
            if await self._retry(key, doc, artifact, record.position, now, ensure):
                recovered += 1
        return PendingReport(retried, recovered, len(keys) - recovered)

    async def _due(self, key: str, now: datetime) -> dict[str, Any] | None:
        """The parked document at ``key`` when its next attempt is due, else None."""
        body = await asyncio.to_thread(self._store.get, key, complete=is_json)
        if body is None:
            return None
        doc: dict[str, Any] = orjson.loads(body.data)
        if datetime.fromisoformat(doc["next_attempt_at"]) > now:
            return None
        return doc

    async def _retry(
        self,
        key: str,
        doc: dict[str, Any],
        artifact: Artifact,
        position: str,
        now: datetime,
        ensure: EnsureArtifact,
    ) -> bool:
        """One more attempt at a parked fetch: True when the zip is now held (the document
        is dropped), else False (parked again, later)."""
        package, version = doc["package"], doc["version"]
        try:
            await ensure(package, version, artifact, position)
        except (ArtifactUnreachableError, RejectedError) as exc:
            attempts = doc["attempts"] + 1
            delay = min(self._first_delay * 2**attempts, PENDING_MAX_DELAY)
            log.warning(
                "%s %s: zip still unreachable after %d retries, next in %s: %s",
                package,
                version,
                attempts,
                delay,
                exc,
            )
            document = pending_document(package, version, artifact, attempts, now + delay, str(exc))
            await asyncio.to_thread(
                self._store.put_bytes, key, document, content_type="application/json"
            )
            return False
        await asyncio.to_thread(self._store.delete, key)
        log.info("%s %s: parked zip fetched and stored", package, version)
        return True
