"""Artifact download from an origin over HTTP: streamed to disk, capped by the signed size, checked."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from schemas.errors import ArtifactMismatchError, OriginUnavailableError
from schemas.events import Artifact

CHUNK_SIZE = 256 * 1024


@dataclass(frozen=True)
class FetchLimits:
    """How long a source may take: to connect, and between two chunks (slow-retrieval defence)."""

    connect_timeout: float = 5.0
    read_timeout: float = 15.0


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
    deliver (refused, timeout, non-200) and ``ArtifactMismatchError`` when it
    delivers other bytes than the signed ones.
    """
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1()  # noqa: S324 - Composer's dist.shasum is sha1; sha256 is the real check
    size = 0
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
    )
    handle = tempfile.NamedTemporaryFile(dir=work_dir, prefix="fetch-", suffix=".zip", delete=False)  # noqa: SIM115 - the caller owns the file
    path = Path(handle.name)
    try:
        with handle:
            async with session.get(url, timeout=timeout, allow_redirects=True) as response:
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
