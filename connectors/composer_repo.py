"""Reading a Composer v2 repository over HTTP: packages.json, p2 documents and dist zips, politely.

Every request to the source goes through one token bucket (requests per
second) and one concurrency limit; 5xx answers, 429 and timeouts are retried
with exponential backoff. aiohttp's errors never leave this module: they
become ``OriginUnavailableError`` (the source did not deliver) or
``MalformedEventError`` (it delivered something that is not what Composer
reads).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from schemas.composer import MINIFIED_FORMAT, expand
from schemas.errors import (
    ArtifactTooLargeError,
    ConfigurationError,
    MalformedEventError,
    OriginUnavailableError,
)

__all__ = [
    "ArtifactDigest",
    "ComposerRepository",
    "RepositoryIndex",
    "RequestCounts",
    "SourceLimits",
    "TokenBucket",
    "p2_url",
    "packages_json_url",
    "parse_p2",
    "parse_packages_json",
]

PACKAGE_PLACEHOLDER: Final = "%package%"
USER_AGENT: Final = "fairstream-importer/0.1 (+https://www.drupal.org/project/fairstream)"
_CHUNK_SIZE: Final = 256 * 1024
# Answers worth asking again: the source is busy or restarting, not saying "no".
_RETRIED_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})

_T = TypeVar("_T")


@dataclass(frozen=True)
class SourceLimits:
    """How hard the importer may press on the source, and how long it waits for it.

    ``rate`` requests per second on average, at most ``burst`` at once after a
    pause (default: a tenth of a second's worth, at least one); at most
    ``concurrency`` requests in flight. A failed request is tried again
    ``retries`` times, ``backoff`` seconds after the first failure, doubling
    each time (or after the source's ``Retry-After``, capped at
    ``max_backoff``).
    """

    rate: float = 20.0
    concurrency: int = 8
    burst: int | None = None
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_document_size: int = 64 << 20
    max_artifact_size: int = 1 << 30

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigurationError(
                f"the request rate must be above 0 per second, not {self.rate}"
            )
        if self.concurrency < 1:
            raise ConfigurationError(f"the concurrency must be at least 1, not {self.concurrency}")
        if self.burst is not None and self.burst < 1:
            raise ConfigurationError(f"the burst must be at least 1 request, not {self.burst}")
        if self.retries < 0 or self.backoff < 0:
            raise ConfigurationError("retries and backoff cannot be negative")

    @property
    def bucket_size(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.rate // 10))


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, holding at most ``capacity``; starts full.

    ``clock`` and ``sleep`` are parameters so that the arithmetic is tested without waiting.
    """

    def __init__(
        self,
        rate: float,
        capacity: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not rate > 0 or capacity < 1:
            raise ValueError(
                f"a token bucket needs rate > 0 and capacity >= 1, got {rate}, {capacity}"
            )
        self._rate = rate
        self._capacity = float(capacity)
        self._tokens = float(capacity)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a token is available and take it; callers are served in arrival order."""
        async with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            # Take the token now and wait out the debt: no float comparison can spin.
            self._tokens -= 1.0
            if self._tokens < 0:
                await self._sleep(-self._tokens / self._rate)


@dataclass(frozen=True)
class ArtifactDigest:
    """What the importer signs about a zip: its sha256, sha1 and size in bytes."""

    sha256: str
    sha1: str
    size: int


@dataclass(frozen=True)
class RepositoryIndex:
    """What a repository's ``packages.json`` says about where its packages are.

    ``metadata_url`` is absolute, with the ``%package%`` placeholder.
    ``available_packages`` is ``None`` when the repository does not list its
    packages (packages.drupal.org only gives ``available-package-patterns``).
    """

    url: str
    metadata_url: str
    available_packages: tuple[str, ...] | None
    available_package_patterns: tuple[str, ...] = ()


def packages_json_url(repository_url: str) -> str:
    """The URL of a repository's ``packages.json``: the URL itself if it names a ``.json``.

    ``https://packages.drupal.org/8`` → ``https://packages.drupal.org/8/packages.json``.
    Raises ``ConfigurationError`` for a URL that is not http(s).
    """
    parts = urlsplit(repository_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"repository URL {repository_url!r} is not an http(s) URL like "
            "https://packages.drupal.org/8"
        )
    if parts.path.endswith(".json"):
        return repository_url
    return repository_url.rstrip("/") + "/packages.json"


def parse_packages_json(data: bytes, url: str) -> RepositoryIndex:
    """Read a Composer v2 root document; ``metadata-url`` is resolved against ``url``.

    An absolute ``metadata-url`` stays, one starting with ``/`` is taken on
    the host of ``url`` (as Composer does), any other relative one next to
    ``packages.json``. Raises ``MalformedEventError`` when the document is not
    JSON, has no ``metadata-url`` with ``%package%`` (not a Composer v2
    repository), or lists packages in another shape than a list of strings.
    """
    document = _json_object(data, url)
    metadata_url = document.get("metadata-url")
    if not isinstance(metadata_url, str) or PACKAGE_PLACEHOLDER not in metadata_url:
        raise MalformedEventError(
            f"{url} has no metadata-url with {PACKAGE_PLACEHOLDER} (got {metadata_url!r}): "
            "it is not a Composer v2 repository"
        )
    absolute = urljoin(url, metadata_url)
    if urlsplit(absolute).scheme not in ("http", "https"):
        raise MalformedEventError(f"{url}: metadata-url {metadata_url!r} is not an http(s) URL")
    available = document.get("available-packages")
    if available is not None and not _strings(available):
        raise MalformedEventError(f"{url}: available-packages is not a list of package names")
    patterns = document.get("available-package-patterns", [])
    if not _strings(patterns):
        raise MalformedEventError(f"{url}: available-package-patterns is not a list of strings")
    return RepositoryIndex(
        url=url,
        metadata_url=absolute,
        # Composer reads an empty list as "no list" too.
        available_packages=tuple(available) if available else None,
        available_package_patterns=tuple(patterns),
    )


def p2_url(index: RepositoryIndex, package: str, *, dev: bool = False) -> str:
    """The URL of a package's p2 document (``dev``: its ``~dev`` document).

    The caller checks ``package`` first (``schemas.names.check_package_name``):
    the name becomes part of a URL path.
    """
    return index.metadata_url.replace(PACKAGE_PLACEHOLDER, f"{package}~dev" if dev else package)


def parse_p2(data: bytes, url: str) -> dict[str, list[dict[str, Any]]]:
    """The version entries of a p2 document, per package name, expanded if minified.

    Raises ``MalformedEventError`` when the document is not JSON, has no
    ``packages`` object, lists something else than version objects, or is
    minified in a format other than ``composer/2.0``.
    """
    document = _json_object(data, url)
    packages = document.get("packages")
    # PHP's json_encode writes an empty map as [].
    if packages == []:
        return {}
    if not isinstance(packages, dict):
        raise MalformedEventError(f"{url} has no 'packages' object: not a Composer p2 document")
    minified = document.get("minified")
    if minified is not None and minified != MINIFIED_FORMAT:
        raise MalformedEventError(
            f"{url} is minified as {minified!r}; only {MINIFIED_FORMAT!r} is known"
        )
    versions: dict[str, list[dict[str, Any]]] = {}
    for name, entries in packages.items():
        if not isinstance(entries, list) or not all(
            isinstance(entry, dict) or entry == [] for entry in entries
        ):
            raise MalformedEventError(f"{url}: the versions of {name!r} are not a list of objects")
        if minified is not None:
            versions[name] = expand(entries)
        else:
            versions[name] = [entry if isinstance(entry, dict) else {} for entry in entries]
    return versions


def _json_object(data: bytes, url: str) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(f"{url} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedEventError(f"{url} is not a JSON object")
    return document


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class _RetryableError(Exception):
    """One attempt failed in a way worth another try (inside this module only)."""

    def __init__(self, message: str, *, status: int | None = None, wait: float | None = None):
        super().__init__(message)
        self.status = status
        self.wait = wait


@dataclass
class RequestCounts:
    """What the importer asked of the source: requests (attempts, retries included) and retries."""

    requests: int = 0
    retries: int = 0
    downloads: int = 0


class ComposerRepository:
    """A Composer v2 repository read over HTTP, within ``SourceLimits``.

    Use as ``async with ComposerRepository(url) as repo:``; it opens its own
    aiohttp session unless one is given (which it then leaves open).
    """

    def __init__(
        self,
        repository_url: str,
        *,
        limits: SourceLimits = SourceLimits(),
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.url = packages_json_url(repository_url)
        self.limits = limits
        self.counts = RequestCounts()
        self._session = session
        self._owns_session = session is None
        self._bucket = TokenBucket(limits.rate, limits.bucket_size, sleep=sleep)
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._sleep = sleep

    async def __aenter__(self) -> ComposerRepository:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(limit=self.limits.concurrency),
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def index(self) -> RepositoryIndex:
        """Fetch and read ``packages.json``.

        Raises ``OriginUnavailableError`` (not delivered, 404 included) or
        ``MalformedEventError`` (not a Composer v2 root document).
        """
        data = await self._get_document(self.url, missing_ok=True)
        if data is None:
            raise OriginUnavailableError(
                f"{self.url} is not there (404): is the URL that of a Composer repository, "
                "like https://packages.drupal.org/8?",
                url=self.url,
                status_code=404,
                retry_after=60.0,
            )
        return parse_packages_json(data, self.url)

    async def package_versions(
        self, index: RepositoryIndex, package: str
    ) -> tuple[dict[str, list[dict[str, Any]]], ...] | None:
        """The expanded p2 documents of ``package``: stable, then ``~dev`` if the source has one.

        Returns ``None`` when the stable document is not there (404/410): the
        repository does not know the package. Raises ``OriginUnavailableError``
        or ``MalformedEventError``.
        """
        stable_url = p2_url(index, package)
        stable = await self._get_document(stable_url, missing_ok=True)
        if stable is None:
            return None
        dev_url = p2_url(index, package, dev=True)
        dev = await self._get_document(dev_url, missing_ok=True)
        documents = [parse_p2(stable, stable_url)]
        if dev is not None:
            documents.append(parse_p2(dev, dev_url))
        return tuple(documents)

    async def download(self, url: str, dest: Path) -> ArtifactDigest:
        """Stream ``url`` into ``dest`` (overwritten) and return its digest.

        Never reads more than ``limits.max_artifact_size`` bytes. Raises
        ``OriginUnavailableError`` (after retries) or ``ArtifactTooLargeError``.
        """
        limit = self.limits.max_artifact_size

        async def attempt(response: aiohttp.ClientResponse) -> ArtifactDigest:
            if response.content_length is not None and response.content_length > limit:
                raise ArtifactTooLargeError(
                    f"{url} announces {response.content_length} bytes, over the limit of {limit}"
                )
            sha256 = hashlib.sha256()
            sha1 = hashlib.sha1()  # noqa: S324 - Composer's dist.shasum is sha1
            size = 0
            # Small blocking writes to local disk are cheaper than a thread hop per chunk.
            with dest.open("wb") as handle:
                async for chunk in response.content.iter_chunked(_CHUNK_SIZE):
                    size += len(chunk)
                    if size > limit:
                        raise ArtifactTooLargeError(
                            f"{url} sent more than the limit of {limit} bytes"
                        )
                    sha256.update(chunk)
                    sha1.update(chunk)
                    handle.write(chunk)
            return ArtifactDigest(sha256.hexdigest(), sha1.hexdigest(), size)

        self.counts.downloads += 1
        digest = await self._request(url, attempt, missing_ok=False)
        assert digest is not None
        return digest

    async def _get_document(self, url: str, *, missing_ok: bool) -> bytes | None:
        limit = self.limits.max_document_size

        async def attempt(response: aiohttp.ClientResponse) -> bytes:
            if response.content_length is not None and response.content_length > limit:
                raise MalformedEventError(
                    f"{url} announces {response.content_length} bytes, over the "
                    f"{limit} a metadata document may have"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(_CHUNK_SIZE):
                size += len(chunk)
                if size > limit:
                    raise MalformedEventError(
                        f"{url} is larger than the {limit} bytes a metadata document may have"
                    )
                chunks.append(chunk)
            return b"".join(chunks)

        return await self._request(url, attempt, missing_ok=missing_ok)

    async def _request(
        self,
        url: str,
        read: Callable[[aiohttp.ClientResponse], Awaitable[_T]],
        *,
        missing_ok: bool,
    ) -> _T | None:
        """GET ``url`` within the limits and retry policy; ``read`` consumes a 200 answer."""
        if self._session is None:
            raise RuntimeError("use ComposerRepository inside 'async with'")
        limits = self.limits
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
        )
        delay = limits.backoff
        for attempt_number in range(limits.retries + 1):
            try:
                async with self._slots:
                    await self._bucket.acquire()
                    self.counts.requests += 1
                    try:
                        async with self._session.get(url, timeout=timeout) as response:
                            if response.status == 200:
                                return await read(response)
                            if response.status in (404, 410) and missing_ok:
                                return None
                            if response.status in _RETRIED_STATUSES:
                                raise _RetryableError(
                                    f"answered {response.status}",
                                    status=response.status,
                                    wait=_retry_after(response.headers),
                                )
                            raise OriginUnavailableError(
                                f"{url} answered {response.status} {response.reason or ''}".rstrip(),
                                url=url,
                                status_code=response.status,
                                retry_after=60.0,
                            )
                    except aiohttp.InvalidURL as exc:
                        raise OriginUnavailableError(
                            f"{url} is not a URL that can be fetched: {exc}", url=url
                        ) from exc
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        raise _RetryableError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
            except _RetryableError as exc:
                if attempt_number >= limits.retries:
                    raise OriginUnavailableError(
                        f"{url} did not deliver after {limits.retries + 1} attempts "
                        f"(last: {exc}); the source may be down or rate limiting us, "
                        "try again later or with a lower request rate",
                        url=url,
                        status_code=exc.status,
                        retry_after=delay,
                    ) from exc
                self.counts.retries += 1
                wait = exc.wait if exc.wait is not None else delay
                await self._sleep(min(wait, limits.max_backoff))
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header, when it holds a number (the date form is ignored)."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)
