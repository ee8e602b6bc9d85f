"""The meta-directory: a geo-reference that holds no catalogue and redirects to a directory.

It is configured with references ``REGION=URL``; several URLs for one region are linked
directories serving the same catalogue, interchangeable. Every request (Composer metadata,
dists, advisories, install notifications) is answered with a redirect to the same path on
a healthy directory of the client's region (``services.directory.registry.RegionMap``), else of the
default region, else of any other region, else a 503. A background task probes each
directory's ``/health``; of a region's linked directories, only those with the highest
trust root version are chosen (one behind on the root is not the same catalogue yet),
and clients are spread over them by a stable hash of their address.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web

from connectors.metrics import instrument
from schemas.federation import REGION_NAME
from services.directory.registry import RegionMap

log = logging.getLogger(__name__)

#: Redirects are per client and change with health: never cached.
_NO_STORE: Final = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Reference:
    """One referenced directory: its region and its base URL (no trailing slash)."""

    region: str
    url: str

    @classmethod
    def parse(cls, text: str) -> Reference:
        """``REGION=URL``; raises ``ValueError`` saying what is wrong with ``text``."""
        region, sep, url = text.partition("=")
        region, url = region.strip().lower(), url.strip()
        if not sep or not region or not url:
            raise ValueError(f"{text!r} is not REGION=URL, e.g. eu=https://eu.packages.example")
        if not REGION_NAME.fullmatch(region):
            raise ValueError(
                f"{text!r}: the region {region!r} must be lower-case letters, digits and dashes"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{text!r}: {url!r} is not an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError(f"{text!r}: the directory URL {url!r} must have no query or fragment")
        return cls(region=region, url=url.rstrip("/"))


@dataclass(frozen=True)
class DirectoryHealth:
    """What the last probe of one referenced directory found."""

    reference: Reference
    healthy: bool = False
    last_probe: datetime | None = None
    trust_root_version: int | None = None
    reason: str = "not probed yet"


@dataclass(frozen=True)
class MetaChoice:
    """Where one client is sent: a directory base URL, or None (then ``why`` says why)."""

    url: str | None
    region: str | None
    why: str


def choose_directory(
    directories: Sequence[DirectoryHealth],
    *,
    client_region: str | None,
    default_region: str,
    client_key: str,
) -> MetaChoice:
    """The directory for one client. Pure; never raises.

    The client's region first (the default region when it has none or no directory
    there), then every other region in name order. In a region, only healthy directories
    with the region's highest trust root version are candidates; of those, the one with
    the highest hash of ``client_key`` and its URL (the same client keeps its directory,
    and only the clients of a directory that fails move).
    """
    regions = {d.reference.region for d in directories}
    first = client_region if client_region in regions else default_region
    order = [first, *sorted(regions - {first})]
    for region in order:
        candidates = linked_candidates(directories, region)
        if candidates:
            chosen = max(candidates, key=lambda d: _spread_weight(client_key, d.reference.url))
            if region == first:
                why = f"a healthy directory of region {region}"
            else:
                why = f"no healthy directory in region {first}; {region} instead"
            return MetaChoice(url=chosen.reference.url, region=region, why=why)
    if not directories:
        return MetaChoice(None, None, "this meta-directory refers to no directory")
    return MetaChoice(
        None, None, f"none of the {len(directories)} referenced directories is healthy right now"
    )


def linked_candidates(directories: Iterable[DirectoryHealth], region: str) -> list[DirectoryHealth]:
    """The healthy directories of ``region`` on the region's highest trust root version."""
    healthy = [d for d in directories if d.reference.region == region and d.healthy]
    if not healthy:
        return []
    newest = max(_root_order(d) for d in healthy)
    return [d for d in healthy if _root_order(d) == newest]


def _root_order(directory: DirectoryHealth) -> int:
    # A directory that states no trust root ranks below every one that does.
    return -1 if directory.trust_root_version is None else directory.trust_root_version


def _spread_weight(client_key: str, url: str) -> bytes:
    # Rendezvous hashing: stable per client, and a failed directory moves only its clients.
    return hashlib.blake2b(f"{client_key}\n{url}".encode(), digest_size=8).digest()


def health_from_probe(
    reference: Reference, status: int, body: bytes, now: datetime
) -> DirectoryHealth:
    """Read one ``/health`` answer (``NodeHttp.health``): healthy when 200 and ``status: ok``."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        return DirectoryHealth(reference, False, now, None, f"/health answered {status}, not JSON")
    root = document.get("trust_root")
    version = root.get("version") if isinstance(root, dict) else None
    version = version if isinstance(version, int) and not isinstance(version, bool) else None
    if status != 200:
        return DirectoryHealth(reference, False, now, version, f"/health answered {status}")
    state = document.get("status")
    if state != "ok":
        return DirectoryHealth(reference, False, now, version, f"/health says {state!r}")
    return DirectoryHealth(reference, True, now, version, "ok")


@dataclass(frozen=True)
class MetaDirectorySettings:
    """A meta-directory's references, how it tells a client's region, and how it probes."""

    references: tuple[Reference, ...]
    default_region: str
    regions: RegionMap = field(default_factory=RegionMap)
    probe_every: float = 3.0
    probe_timeout: float = 2.0


class MetaDirectory:
    """The meta-directory's state (the last probe of each reference) and its aiohttp app."""

    def __init__(
        self,
        settings: MetaDirectorySettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.directories: list[DirectoryHealth] = [
            DirectoryHealth(reference) for reference in settings.references
        ]
        self._task: asyncio.Task[None] | None = None
        self.app = web.Application()
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/directories.json", self.directories_json)
        instrument(self.app, "meta-directory")  # /metrics before the catch-all
        self.app.router.add_route("*", "/{tail:.*}", self.redirect)
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)

    # Probing -------------------------------------------------------------------------

    async def _on_startup(self, app: web.Application) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _probe_loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.probe_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    await self.probe(session)
                except Exception:  # the loop must outlive any one directory's surprise
                    log.exception("probe round failed")
                await asyncio.sleep(self.settings.probe_every)

    async def probe(self, session: aiohttp.ClientSession) -> None:
        """One round: every referenced URL's ``/health`` once, at the same time."""
        urls = sorted({d.reference.url for d in self.directories})
        answers = await asyncio.gather(*(self._probe_one(session, url) for url in urls))
        by_url = dict(zip(urls, answers, strict=True))
        updated = []
        for before in self.directories:
            status, body, failure = by_url[before.reference.url]
            now = self._clock()
            if failure is not None:
                after = replace(before, healthy=False, last_probe=now, reason=failure)
            else:
                after = health_from_probe(before.reference, status, body, now)
            if after.healthy != before.healthy:
                log.log(
                    logging.INFO if after.healthy else logging.WARNING,
                    "directory %s (%s) %s: %s",
                    after.reference.url,
                    after.reference.region,
                    "healthy" if after.healthy else "unhealthy",
                    after.reason,
                )
            updated.append(after)
        self.directories = updated

    @staticmethod
    async def _probe_one(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str | None]:
        try:
            async with session.get(f"{url}/health", allow_redirects=False) as response:
                return response.status, await response.content.read(64 * 1024), None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, b"", f"/health failed: {type(exc).__name__}: {exc}".rstrip(": ")

    # Clients -------------------------------------------------------------------------

    def choice_for(self, request: web.Request) -> MetaChoice:
        """The directory for the client of ``request``."""
        return choose_directory(
            self.directories,
            client_region=self.settings.regions.region_of(request.headers, request.remote),
            default_region=self.settings.default_region,
            client_key=request.remote or "",
        )

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        """Any path: 302 (GET, HEAD) or 307 (a POST keeps its body) to the same path and
        query on the chosen directory; 503 with Retry-After when none is healthy."""
        choice = self.choice_for(request)
        if choice.url is None:
            raise web.HTTPServiceUnavailable(
                text=f"{choice.why}; try again later\n",
                headers={"Retry-After": str(math.ceil(self.settings.probe_every)), **_NO_STORE},
            )
        location = choice.url + request.raw_path
        log.debug("%s %s → %s (%s)", request.method, request.raw_path, location, choice.why)
        if request.method in ("GET", "HEAD"):
            raise web.HTTPFound(location, headers=_NO_STORE)
        raise web.HTTPTemporaryRedirect(location, headers=_NO_STORE)

    async def health(self, request: web.Request) -> web.Response:
        """200 while the process runs; ``status`` is ok when some directory is healthy, and
        ``trust_root`` is the newest a healthy one has (so a meta-directory can refer to
        another)."""
        healthy = [d for d in self.directories if d.healthy]
        body: dict[str, object] = {
            "role": "meta-directory",
            "status": "ok" if healthy else "no healthy directory",
            "healthy_directories": len(healthy),
            "directories": len(self.directories),
        }
        versions = [d.trust_root_version for d in healthy if d.trust_root_version is not None]
        if versions:
            body["trust_root"] = {"version": max(versions)}
        return web.json_response(body)

    async def directories_json(self, request: web.Request) -> web.Response:
        """Every reference with its region, URL, health, last probe and trust root version."""
        preferred = {
            d.reference
            for region in {d.reference.region for d in self.directories}
            for d in linked_candidates(self.directories, region)
        }
        return web.json_response(
            {
                "default_region": self.settings.default_region,
                "directories": [
                    {
                        "region": d.reference.region,
                        "url": d.reference.url,
                        "healthy": d.healthy,
                        "candidate": d.reference in preferred,
                        "last_probe": d.last_probe.isoformat() if d.last_probe else None,
                        "trust_root_version": d.trust_root_version,
                        "reason": d.reason,
                    }
                    for d in sorted(
                        self.directories, key=lambda d: (d.reference.region, d.reference.url)
                    )
                ],
            }
        )
