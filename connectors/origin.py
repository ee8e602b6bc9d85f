"""Artifact download over HTTP from the origin or a replica: streamed to disk, capped by the signed size, checked."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

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

CHUNK_SIZE = 256 * 1024

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


@dataclass(frozen=True)
class Fetched:
    """A checked artifact on disk, and the source that delivered it.

    ``path`` is a temporary file in the work directory that the caller deletes;
    ``source`` is the URL whose bytes matched the signed ones.
    """

    path: Path
    source: str


# Long because one streamed download: size, both digests and the limits checked as it is written.
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
    handle = tempfile.NamedTemporaryFile(dir=work_dir, prefix="fetch-", suffix=".zip", delete=False)  # noqa: SIM115 - the caller owns the file
    path = Path(handle.name)
    try:
        with handle:
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
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    size += len(chunk)
                    if size > expected.size:
                        raise ArtifactMismatchError(
                            f"origin {url} sent more than the {expected.size} bytes of the "
                            f"signed artifact (sha256 {expected.sha256})"
                        )
                    sha256.update(chunk)
                    sha1.update(chunk)
                    handle.write(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        path.unlink(missing_ok=True)
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
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    problems = []
    if size != expected.size:
        problems.append(f"size {size} != signed {expected.size}")
    if sha256.hexdigest() != expected.sha256:
        problems.append(f"sha256 {sha256.hexdigest()} != signed {expected.sha256}")
    if sha1.hexdigest() != expected.sha1:
        problems.append(f"sha1 {sha1.hexdigest()} != signed {expected.sha1}")
    if problems:
        path.unlink(missing_ok=True)
        raise ArtifactMismatchError(
            f"artifact from {url} differs from the signed one: " + "; ".join(problems)
        )
    return path


# Long because each source's failure is kept, for the one error that names them all.
async def fetch_from_sources(
    session: aiohttp.ClientSession,
    sources: Sequence[str],
    expected: Artifact,
    *,
    work_dir: Path,
    limits: FetchLimits = FetchLimits(),
) -> Fetched:
    """Fetch ``expected`` from the first of ``sources`` that delivers the signed bytes.

    Sources are tried one after the other in the given order (the canonical
    origin first, then replicas announced for this sha256), each URL once; every
    failure is logged and the next source tried. Raises
    ``ArtifactMismatchEverywhereError`` (an ``ArtifactMismatchError``) when every
    source delivered other bytes, and ``ArtifactUnreachableError`` (an
    ``OriginUnavailableError``) otherwise, including when ``sources`` is empty.
    """
    attempts: list[SourceFailure] = []
    for source in dict.fromkeys(sources):  # each URL once, in the caller's order
        try:
            path = await fetch_artifact(session, source, expected, work_dir=work_dir, limits=limits)
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
            return Fetched(path=path, source=source)
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
