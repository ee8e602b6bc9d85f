"""Artifact download over HTTP from the origin or a replica: capped by the signed size, checked,
and streamed into the store (``stream_artifact``) or to disk (``fetch_artifact``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from connectors.streamed_upload import (
    TAIL_BYTES,
    RollingTail,
    StreamTail,
    UploadFeed,
    UploadStoppedError,
)
from schemas.errors import (
    ArtifactMismatchError,
    ArtifactMismatchEverywhereError,
    ArtifactUnreachableError,
    ConfigurationError,
    OriginUnavailableError,
    SourceFailure,
)
from schemas.events import Artifact

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CHUNK_SIZE = 256 * 1024
#: Chunks of a download streamed into the store (``stream_artifact``): fewer hand-overs.
STREAM_CHUNK_SIZE = 1024 * 1024

#: When a release none of whose sources delivered is tried again, at the earliest.
UNREACHABLE_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class FetchLimits:
    """How long a source may take (slow-retrieval defence).

    ``connect_timeout`` bounds the connection, ``read_timeout`` the wait for any
    next bytes. A source that keeps sending a few bytes never trips the latter, so
    the whole download must also end within ``grace`` seconds plus the signed size
    at ``min_rate`` bytes per second (see ``deadline``). Raises
    ``ConfigurationError`` when ``min_rate`` is not positive or ``grace`` negative.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    # 50 kB/s: a 500 MB zip gets close to three hours, which no working link
    # needs, while a source trickling bytes is dropped in proportion to the size.
    min_rate: float = 50_000.0
    grace: float = 10.0

    def __post_init__(self) -> None:
        if not self.min_rate > 0:
            raise ConfigurationError(
                f"fetch limits: min_rate must be a positive number of bytes per second, got {self.min_rate}"
            )
        if not self.grace >= 0:
            raise ConfigurationError(
                f"fetch limits: grace must be zero or more seconds, got {self.grace}"
            )

    def deadline(self, size: int) -> float:
        """Seconds a whole download of ``size`` bytes may take, connection included."""
        return self.grace + size / self.min_rate


async def fetch_artifact(
    session: aiohttp.ClientSession,
    url: str,
    expected: Artifact,
    *,
    work_dir: Path,
    limits: FetchLimits = FetchLimits(),
) -> Path:
    """Download ``url`` into a temporary file in ``work_dir`` and check it against ``expected``.

    Never reads more than ``expected.size`` bytes. Returns the file's path; the
    caller deletes it. Raises ``OriginUnavailableError`` when the origin does not
    deliver (refused, timeout, too slow for ``limits``, non-200) and
    ``ArtifactMismatchError`` when it delivers other bytes than the signed ones.
    """
    handle = tempfile.NamedTemporaryFile(dir=work_dir, prefix="fetch-", suffix=".zip", delete=False)  # noqa: SIM115 - the caller owns the file
    path = Path(handle.name)

    async def write(chunk: bytes) -> None:
        handle.write(chunk)

    try:
        with handle:
            await download(session, url, expected, write, limits=limits)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


# Long because the stream's parts are the caller's: the upload, its threads, the checks, a hook.
async def stream_artifact(
    session: aiohttp.ClientSession,
    url: str,
    expected: Artifact,
    upload: Callable[[UploadFeed], None],
    *,
    executor: Executor,
    limits: FetchLimits = FetchLimits(),
    check_end: Callable[[StreamTail], Awaitable[None]] | None = None,
    tail_bytes: int = TAIL_BYTES,
    on_read: Callable[[int], None] | None = None,
) -> None:
    """Download ``url`` straight into ``upload``, run in ``executor``: no temporary file.

    ``upload`` reads the bytes from the ``UploadFeed`` it is given (memory stays bounded)
    and must store nothing when a read raises (``ObjectStore.put_stream``): its read of
    the last bytes waits until the size, both digests and ``check_end`` (given the stream's
    last ``tail_bytes`` as a file) passed, and raises if one failed. Raises what
    ``download`` raises, what ``check_end`` raises (``TailTooShortError`` when it read
    further back than the tail), and what ``upload`` raises (the store's errors).
    """
    loop = asyncio.get_running_loop()
    feed = UploadFeed(expected.size, loop=loop, on_read=on_read)
    tail = RollingTail(tail_bytes)

    def run_upload() -> None:
        try:
            upload(feed)
        finally:
            feed.stopped()

    uploading = loop.run_in_executor(executor, run_upload)

    async def send(chunk: bytes) -> None:
        tail.add(chunk)
        await feed.send(chunk)

    try:
        await download(session, url, expected, send, limits=limits, chunk_size=STREAM_CHUNK_SIZE)
        if check_end is not None:
            await check_end(tail.file())
    except UploadStoppedError:
        await uploading  # raises the store's error
        raise RuntimeError(
            f"the upload of {url} stopped reading before its end without an error"
        ) from None
    except asyncio.CancelledError:
        feed.finish(RuntimeError("the download was cancelled"))
        raise
    except BaseException as exc:
        feed.finish(exc)
        # The upload aborts on its next read; wait for it, so nothing of it lands later.
        with contextlib.suppress(Exception):
            await uploading
        raise
    feed.finish(None)
    await uploading


# Long because one streamed download: size, both digests and the limits checked as it goes.
async def download(
    session: aiohttp.ClientSession,
    url: str,
    expected: Artifact,
    sink: Callable[[bytes], Awaitable[None]],
    *,
    limits: FetchLimits = FetchLimits(),
    chunk_size: int = CHUNK_SIZE,
) -> None:
    """Download ``url`` into ``sink``, chunk by chunk, and check it against ``expected``.

    Never reads more than ``expected.size`` bytes; the checks of the whole (size, sha256,
    sha1) come after the last chunk went to ``sink``. Raises ``OriginUnavailableError``
    when the origin does not deliver (refused, timeout, too slow for ``limits``, non-200)
    and ``ArtifactMismatchError`` when it delivers other bytes than the signed ones.
    """
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1()  # noqa: S324 - Composer's dist.shasum is sha1; sha256 is the real check
    size = 0
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
    )
    # Our own deadline rather than aiohttp's total timeout: a source that is too
    # slow must be told apart from one that stalls, to say so and what to change.
    budget = asyncio.timeout(limits.deadline(expected.size))
    started = time.monotonic()
    try:
        async with budget, session.get(url, timeout=timeout, allow_redirects=True) as response:
            if response.status != 200:
                raise OriginUnavailableError(
                    f"origin answered {response.status} for {url}",
                    url=url,
                    status_code=response.status,
                    retry_after=5.0 if response.status >= 500 else 30.0,
                )
            if response.content_length is not None and response.content_length > expected.size:
                raise ArtifactMismatchError(
                    f"origin {url} announces {response.content_length} bytes, the "
                    f"signed artifact (sha256 {expected.sha256}) has {expected.size}"
                )
            async for chunk in response.content.iter_chunked(chunk_size):
                size += len(chunk)
                if size > expected.size:
                    raise ArtifactMismatchError(
                        f"origin {url} sent more than the {expected.size} bytes of the "
                        f"signed artifact (sha256 {expected.sha256})"
                    )
                sha256.update(chunk)
                sha1.update(chunk)
                await sink(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        if budget.expired():
            raise OriginUnavailableError(
                f"source {url} is too slow: {size} of {expected.size} bytes in "
                f"{time.monotonic() - started:.1f} s, below the minimum rate of "
                f"{limits.min_rate:.0f} bytes/s after {limits.grace:.1f} s of grace; nothing "
                "to do, the next source is tried; if sources are this slow for good, lower "
                "min_rate (or raise grace) in the node's fetch limits",
                url=url,
                retry_after=30.0,
            ) from exc
        raise OriginUnavailableError(
            f"could not download {url}: {type(exc).__name__}: {exc}", url=url, retry_after=5.0
        ) from exc
    problems = []
    if size != expected.size:
        problems.append(f"size {size} != signed {expected.size}")
    if sha256.hexdigest() != expected.sha256:
        problems.append(f"sha256 {sha256.hexdigest()} != signed {expected.sha256}")
    if sha1.hexdigest() != expected.sha1:
        problems.append(f"sha1 {sha1.hexdigest()} != signed {expected.sha1}")
    if problems:
        raise ArtifactMismatchError(
            f"artifact from {url} differs from the signed one: " + "; ".join(problems)
        )


# Long because each source's failure is kept, for the one error that names them all.
async def first_delivering(
    sources: Sequence[str],
    expected: Artifact,
    attempt: Callable[[str], Awaitable[_T]],
) -> tuple[_T, str]:
    """``attempt`` each of ``sources`` in the given order until one delivers ``expected``;
    its result and the source.

    ``attempt(url)`` fetches from one source (into a file, or streamed into the store) and
    raises ``ArtifactMismatchError`` or ``OriginUnavailableError`` when that source did not
    deliver the signed bytes; any other error ends the search at once. Sources are tried
    one after the other (the canonical origin first, then replicas announced for this
    sha256), each URL once; every failure is logged and the next source tried. Raises
    ``ArtifactMismatchEverywhereError`` (an ``ArtifactMismatchError``) when every source
    delivered other bytes, and ``ArtifactUnreachableError`` (an ``OriginUnavailableError``)
    otherwise, including when ``sources`` is empty.
    """
    attempts: list[SourceFailure] = []
    for source in dict.fromkeys(sources):  # each URL once, in the caller's order
        try:
            result = await attempt(source)
        except ArtifactMismatchError as exc:
            attempts.append(SourceFailure(url=source, reason=str(exc), definite=True))
        except OriginUnavailableError as exc:
            attempts.append(SourceFailure(url=source, reason=str(exc), definite=False))
        else:
            if attempts:
                log.info(
                    "artifact sha256 %s fetched from %s after %d failed source(s)",
                    expected.sha256,
                    source,
                    len(attempts),
                )
            return result, source
        log.warning(
            "artifact sha256 %s not fetched from %s: %s",
            expected.sha256,
            source,
            attempts[-1].reason,
        )
    tried = "; ".join(f"[{n}] {a.url}: {a.reason}" for n, a in enumerate(attempts, start=1))
    what = (
        f"the artifact sha256 {expected.sha256} ({expected.size} bytes, "
        f"signed origin {expected.origin_url})"
    )
    if attempts and all(attempt.definite for attempt in attempts):
        raise ArtifactMismatchEverywhereError(
            f"every source of {what} delivered other bytes than the signed ones, so nobody "
            f"has the release and its event is rejected: {tried}",
            attempts=tuple(attempts),
        )
    if not attempts:
        tried = "neither the origin nor any replica is known"
    raise ArtifactUnreachableError(
        f"no source delivered {what}: {tried}; the release is retried with backoff, "
        f"first in {UNREACHABLE_RETRY_AFTER:.0f} s; if this lasts, check that the origin "
        "and the replicas serve the file",
        url=expected.origin_url,
        attempts=tuple(attempts),
        retry_after=UNREACHABLE_RETRY_AFTER,
    )
