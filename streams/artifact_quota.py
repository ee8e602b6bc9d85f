"""A full mirror's zips counted against its quota: room made for a new one by evicting cold
ones (the choice is ``streams.artifacts.choose_evictions``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from connectors.object_store import ObjectStore
from schemas import layout
from schemas.events import Artifact
from streams.artifacts import HotStats, choose_evictions

# The replicator's log lines keep the logger name they had before this module was split
# out of streams.replication (operators filter on it).
log = logging.getLogger("streams.replication")


class ArtifactQuota:
    """The sizes of the zips in a region's bucket, as this worker counted them; listed once,
    on the first zip stored under a quota, then kept up to date."""

    def __init__(self, store: ObjectStore, hot: HotStats, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._hot = hot
        self._clock = clock
        self._sizes: dict[str, int] | None = None

    async def make_room(self, artifact: Artifact, quota: int | None) -> bool:
        """Evict cold zips so this one fits under ``quota`` (None: no quota); False when it
        cannot fit."""
        if quota is None:
            return True
        if self._sizes is None:
            listed = await asyncio.to_thread(self._store.list_objects, layout.ARTIFACT_PREFIX)
            self._sizes = {
                sha: stored.size
                for key, stored in listed
                if (sha := layout.artifact_sha256(key)) is not None
            }
        chosen = choose_evictions(
            self._sizes,
            self._hot.snapshot(),
            quota=quota,
            incoming=artifact.size,
            protected={artifact.sha256},
            now=self._clock(),
        )
        if chosen is None:
            log.warning(
                "quota %d bytes: no room for %s (%d bytes) without evicting recently downloaded "
                "zips; not kept, served by redirect",
                quota,
                artifact.sha256[:12],
                artifact.size,
            )
            return False
        for sha256 in chosen:
            await asyncio.to_thread(self._store.delete, layout.artifact_key(sha256))
            await asyncio.to_thread(self._store.delete, layout.provenance_key(sha256))
            self._sizes.pop(sha256, None)
            log.info("quota: evicted cold artifact %s", sha256[:12])
        return True

    def stored(self, artifact: Artifact) -> None:
        """``artifact``'s zip is now in the bucket."""
        if self._sizes is not None:
            self._sizes[artifact.sha256] = artifact.size

    def deleted(self, sha256: str) -> None:
        """The zip of ``sha256`` is no longer in the bucket."""
        if self._sizes is not None:
            self._sizes.pop(sha256, None)

    def total(self) -> int | None:
        """Bytes of zips the region holds, as this worker last counted (None: not counted)."""
        return None if self._sizes is None else sum(self._sizes.values())
