"""Copying one release's zip into the region's bucket: streamed from its first source that
delivers straight into the upload, checked (size, sha256, sha1, its top directory) before
its last bytes land, so nothing unchecked is ever stored under its content address and no
temporary file is written; then the record of where it came from."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import IO, cast

import aiohttp

from connectors.metrics import FETCH_BYTES, FETCH_SECONDS
from connectors.object_store import ObjectStore
from connectors.origin import FetchLimits, fetch_artifact, stream_artifact
from connectors.streamed_upload import TAIL_BYTES, StreamTail, TailTooShortError, UploadFeed
from schemas import layout
from schemas.events import Artifact
from streams.artifact_fetch import check_top_directory, fetch_from_allowed, provenance
from streams.artifact_quota import ArtifactQuota
from streams.artifacts import ReplicaRegistry, Source
from streams.faults import AFTER_STORE_WRITE, MID_ARTIFACT_UPLOAD, FaultPoints
from streams.policy import ReplicationPolicy

log = logging.getLogger(__name__)

#: Zips streamed into the bucket at once, each holding up to about 24 MiB (a part, the
#: queue from its download and the end kept for the zip check). Measured on 1 GB of zips
#: (make bench): three copy as fast as four, and the node's peak RSS is 199 MB, not 227.
UPLOAD_STREAMS = 3


class _NoRoomError(Exception):
    """The quota has no room for a zip whose bytes were good: its upload is abandoned."""


class ArtifactCopier:
    """Copies release zips from their sources into one region's bucket."""

    # Long because the replicator hands the copier its parts here: all keyword-only.
    def __init__(
        self,
        *,
        store: ObjectStore,
        session: aiohttp.ClientSession,
        replicas: ReplicaRegistry,
        quota: ArtifactQuota,
        work_dir: Path,
        region: str,
        limits: FetchLimits,
        clock: Callable[[], datetime],
        faults: FaultPoints,
    ) -> None:
        self._store = store
        self._session = session
        self._replicas = replicas
        self._quota = quota
        self._work_dir = work_dir
        self._region = region
        self._limits = limits
        self._clock = clock
        self._faults = faults
        # Streamed uploads wait on downloads (a slow source: minutes), so they have threads
        # of their own, never the loop's default executor's, which the store calls share.
        self._streams = asyncio.Semaphore(UPLOAD_STREAMS)
        self._uploads = ThreadPoolExecutor(UPLOAD_STREAMS, thread_name_prefix="zip-upload")

    async def copy(
        self, package: str, artifact: Artifact, position: str, policy: ReplicationPolicy
    ) -> bool:
        """Fetch the zip of ``package``'s release at ``position`` in the log straight into the
        bucket, checked before its last bytes land; True when stored, False when the quota
        has no room for it (served by redirect).

        Raises ``ArtifactUnreachableError`` (no source delivered; park it),
        ``ArtifactMismatchError`` (every source had other bytes), ``WrongPackageError`` and
        the store's ``StoreUnavailableError``.
        """
        if artifact.size == 0:  # nothing to stream; the check refuses it as no zip
            return await self._through_file(package, artifact, position, policy)
        key = layout.artifact_key(artifact.sha256)

        async def checked(tail: StreamTail) -> None:
            check_top_directory(cast(IO[bytes], tail), package)
            # Room is made once the bytes are known good, as for a fetch into a file.
            if not await self._quota.make_room(artifact, policy.quota_bytes):
                raise _NoRoomError

        def upload(feed: UploadFeed) -> None:
            self._store.put_stream(key, feed, artifact.size, content_type="application/zip")

        async def stream(url: str) -> None:
            async with self._streams:
                await stream_artifact(
                    self._session,
                    url,
                    artifact,
                    upload,
                    executor=self._uploads,
                    limits=self._limits,
                    check_end=checked,
                    tail_bytes=TAIL_BYTES,
                    on_read=self._reading_upload,
                )

        started = time.perf_counter()
        try:
            _, source_of_bytes = await fetch_from_allowed(
                artifact, policy.jurisdictions, self._replicas, stream, position=position
            )
        except _NoRoomError:
            return False
        except TailTooShortError as exc:
            log.info(
                "%s %s: its zip's central directory does not fit the end a streamed fetch "
                "keeps (%s); fetching it again through a temporary file",
                package,
                artifact.sha256[:12],
                exc,
            )
            return await self._through_file(package, artifact, position, policy)
        self._fetched(artifact, source_of_bytes, time.perf_counter() - started)
        await self._stored(package, artifact, source_of_bytes)
        return True

    def _reading_upload(self, handed: int) -> None:
        """Called in the upload's thread before each read of a streamed zip."""
        if handed:  # a part is in the store's multipart upload, the last bytes unchecked
            self._faults.reached(MID_ARTIFACT_UPLOAD)

    async def _through_file(
        self, package: str, artifact: Artifact, position: str, policy: ReplicationPolicy
    ) -> bool:
        """The zip into a temporary file, checked, then uploaded: for what streaming cannot
        check (a central directory larger than the streamed end it keeps)."""
        started = time.perf_counter()

        async def into_file(url: str) -> Path:
            return await fetch_artifact(
                self._session, url, artifact, work_dir=self._work_dir, limits=self._limits
            )

        path, source_of_bytes = await fetch_from_allowed(
            artifact, policy.jurisdictions, self._replicas, into_file, position=position
        )
        self._fetched(artifact, source_of_bytes, time.perf_counter() - started)
        try:
            check_top_directory(path, package)
            if not await self._quota.make_room(artifact, policy.quota_bytes):
                return False
            await asyncio.to_thread(
                self._store.put_file,
                layout.artifact_key(artifact.sha256),
                path,
                content_type="application/zip",
            )
        finally:
            path.unlink(missing_ok=True)
        await self._stored(package, artifact, source_of_bytes)
        return True

    def _fetched(self, artifact: Artifact, source: Source, seconds: float) -> None:
        kind = "origin" if source.url == artifact.origin_url else "replica"
        FETCH_SECONDS.labels(self._region, kind).observe(seconds)
        FETCH_BYTES.labels(self._region, kind).inc(artifact.size)

    async def _stored(self, package: str, artifact: Artifact, source: Source) -> None:
        """The zip is in the bucket: the proof of where its bytes came from (the status page
        shows it), written after the zip, so a crash between leaves a zip without it, never
        the reverse."""
        await asyncio.to_thread(
            self._store.put_bytes,
            layout.provenance_key(artifact.sha256),
            provenance(source, artifact.sha256, self._region, self._clock()),
            content_type="application/json",
        )
        self._faults.reached(AFTER_STORE_WRITE)
        self._quota.stored(artifact)
        if source.url != artifact.origin_url:
            log.info(
                "%s %s fetched from replica %s (%s, jurisdiction %s)",
                package,
                artifact.sha256[:12],
                source.url,
                source.holder,
                source.jurisdiction or "not declared",
            )

    def close(self) -> None:
        """Stop the upload threads; a stream still running is abandoned (stores nothing)."""
        self._uploads.shutdown(wait=False, cancel_futures=True)
