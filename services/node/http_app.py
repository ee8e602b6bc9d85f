"""A regional node's HTTP face: the Composer repository, dist redirects, advisories and install counts.

``packages.json`` is rendered per request (its URLs are this node's public URL
and its mirrors are the other nodes); p2 documents are served from the process's
local view in memory, with their precomputed Last-Modified (``documents``; ADR 5),
or from the region's bucket with ``--view bucket`` (ADR 4); a zip this node holds
is answered with a 302 to
a presigned URL of its content-addressed object (``dist = "redirect"``, signed
for the store's public endpoint when one is given), or sent through the node
(``dist = "proxy"``, ``services.node.dist_proxy``), and one it does not hold with a
302 to another node's verified copy or to the signed origin.

This module holds the app, its routes and the zip answers; its parts beside it:
``repository_documents`` (packages.json and p2), ``dist_rules`` (the pure verdicts on a
dist request and where else it may go), ``composer_requests`` (advisory queries and install
notifications, read and bounded), ``http_settings`` (``NodeHttpSettings``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from aiohttp import web

from connectors.metrics import instrument
from connectors.object_store import ObjectStore
from connectors.view_store import ServedDocument
from schemas import layout
from schemas.errors import StoreUnavailableError
from schemas.names import PACKAGE_NAME
from schemas.package_state import PackageState, StateReader, VersionRecord, find_version
from schemas.trust import TrustRoot
from services.node.composer_requests import (
    ADVISORIES_PATH,
    DOWNLOADS_PATH,
    MAX_REQUEST_BODY,
    advisory_query_names,
    notified_downloads,
)
from services.node.dist_proxy import send_artifact
from services.node.dist_rules import Gone, NotHere, Withheld, dist_verdict, redirect_target
from services.node.http_settings import RETRY_AFTER, NodeHttpSettings
from services.node.repository_documents import RepositoryDocuments
from streams.artifacts import Source
from streams.health import Verdict
from streams.policy import Purpose

log = logging.getLogger(__name__)

#: Package states read at once for one request: the store's connection pool holds 16.
STATE_READS_AT_ONCE: Final = 8

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A Composer pretty version as a path segment: no '/', no leading '.', so never '..'.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
# Our dist type is always zip: %type% in a mirror URL is the package's dist type.
_MIRROR_FILE = re.compile(r"^(?P<version>[A-Za-z0-9][A-Za-z0-9._+-]{0,99})\.zip$")


class Presigner(Protocol):
    """What makes the URLs a ``redirect`` node sends clients to (``ObjectStore``)."""

    def presigned_url(self, key: str, *, expires: timedelta = ...) -> str: ...


#: The header naming the region (or directory) that answered.
REGION_HEADER = "X-Fairstream-Served-By"


#: Chooses where a dist request goes (the directory's choice of node): a URL, or None.
DistRouter = Callable[[web.Request, str, str, VersionRecord], str | None]


class NodeHttp:
    """The aiohttp application of one regional node.

    The optional collaborators: ``states`` reads package states (without it, a zip missing
    from the bucket is a 404 and advisory and install requests find nothing); ``replicas``
    gives, for a sha256, dist URLs on other nodes that announced a verified copy of exactly
    that sha256; ``peers`` gives the base URLs of the other nodes, listed as dist mirrors;
    ``on_missing(package, version, record)`` is told when this mirroring node is asked for a
    zip it does not hold; ``on_download(package, version, sha256)`` counts each install
    notification (what Drupal.org's statistics count); ``on_serve(package, version, sha256)``
    each dist download answered, by redirect or through the node (what makes a zip hot
    in this region's store);
    ``dist_router(request, package, version, record)``, when given, chooses where a dist
    request for a zip not held here goes, instead of replicas and the origin (the directory);
    ``presigner`` makes the URLs of redirects to the bucket (default: ``store``, whose
    endpoint clients must then reach). Callbacks are called on the event loop and
    must not block; an exception in them is logged, never turned into an error answer.
    Raises ``ValueError`` for ``dist="proxy"`` without ``states`` (the signed digests a
    proxied zip is checked against live there).
    """

    # Long because keyword-only: the node's HTTP collaborators, built once in services/node/build.py.
    def __init__(
        self,
        settings: NodeHttpSettings,
        store: ObjectStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        trust_root: Callable[[], TrustRoot] | None = None,
        states: StateReader | None = None,
        documents: Callable[[str], ServedDocument | None] | None = None,
        replicas: Callable[[str], Sequence[Source]] | None = None,
        peers: Callable[[], Sequence[Source]] | None = None,
        on_missing: Callable[[str, str, VersionRecord], None] | None = None,
        on_download: Callable[[str, str, str], None] | None = None,
        on_serve: Callable[[str, str, str], None] | None = None,
        dist_router: DistRouter | None = None,
        liveness: Callable[[], Verdict] | None = None,
        readiness: Callable[[], Verdict] | None = None,
        presigner: Presigner | None = None,
    ) -> None:
        if settings.dist == "proxy" and states is None:
            raise ValueError("a node that sends zips through itself needs the package states")
        self.settings = settings
        self._liveness = liveness
        self._readiness = readiness
        self.store = store
        self._presigner: Presigner = store if presigner is None else presigner
        self._clock = clock
        self._trust_root = trust_root
        self._states = states
        self._replicas = replicas
        self._on_missing = on_missing
        self._on_download = on_download
        self._on_serve = on_serve
        self._dist_router = dist_router
        self._repository = RepositoryDocuments(
            settings, store, clock=clock, documents=documents, peers=peers
        )
        self._state_reads = asyncio.Semaphore(STATE_READS_AT_ONCE)
        self.app = web.Application(client_max_size=MAX_REQUEST_BODY)
        self.app.add_routes(
            [
                web.get("/packages.json", self._repository.packages_json),
                web.get("/p2/{vendor}/{file}", self._repository.p2),
                web.get("/dist/{vendor}/{name}/{version}/{sha256}.zip", self.dist),
                web.get("/mirror/{vendor}/{name}/{file}", self.mirror),
                web.get(ADVISORIES_PATH, self.security_advisories),
                web.post(ADVISORIES_PATH, self.security_advisories),
                web.post(DOWNLOADS_PATH, self.downloads),
                web.get("/health", self.health),
                web.get("/ready", self.ready),
            ]
        )
        instrument(self.app, settings.service)
        self.app.on_response_prepare.append(self._name_region)

    async def _name_region(self, request: web.Request, response: web.StreamResponse) -> None:
        # Which region answered, on every answer: a download's redirects show which node
        # it came from (and `curl -I` on a node says where it stands).
        response.headers[REGION_HEADER] = self.settings.region

    async def health(self, request: web.Request) -> web.Response:
        """Liveness: 200 while the process does its work, 503 with the reasons when its
        loop is stuck, it holds rejections it could not record, or its trust root expired
        (streams/health.py)."""
        body: dict[str, object] = {"region": self.settings.region, "status": "ok"}
        reasons: list[str] = []
        if self._liveness is not None:
            reasons += self._liveness().reasons
        if self._trust_root is not None:
            root = self._trust_root()
            body["trust_root"] = {"version": root.version, "expires": root.expires.isoformat()}
            if self._liveness is None and root.expires <= self._clock():
                # Fail closed, visibly: the node applies nothing until a newer root.
                reasons.append("frozen: trust root expired")
        if reasons:
            body["status"] = "; ".join(reasons)
            body["reasons"] = reasons
        return web.json_response(body, status=503 if reasons else 200)

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 200 when clients may be sent here, 503 with the reasons until then
        (partitions not assigned yet, view not caught up, too far behind, broker or store
        silent; and whatever fails liveness). Without a worker (a frontend), as liveness."""
        if self._readiness is None:
            return await self.health(request)
        verdict = self._readiness()
        body = {
            "region": self.settings.region,
            "ready": verdict.ok,
            "reasons": list(verdict.reasons),
        }
        return web.json_response(body, status=200 if verdict.ok else 503)

    # -- Zips ----------------------------------------------------------------------------------

    async def dist(self, request: web.Request) -> web.StreamResponse:
        """A zip by its signed sha256: from the bucket (302 or proxied), else 302 to another
        node's copy or the origin.

        404 for a malformed path, a package not served here, an unknown version or a sha256
        that is not the version's; 410 for an expunged version or artifact; 503 when nothing
        can serve it now. Proxied: 200, or 206 and 416 for ranges (``services.node.dist_proxy``).
        """
        package, version = self._package_and_version(request, request.match_info["version"])
        sha256 = request.match_info["sha256"]
        if not _SHA256.fullmatch(sha256):
            raise web.HTTPNotFound(text="not a sha256\n")
        proxy = self.settings.mirror_artifacts and self.settings.dist == "proxy"
        if self.settings.mirror_artifacts and not proxy:
            url = await self._presigned_if_held(sha256)
            if url is not None:
                self._call("on_serve", self._on_serve, package, version, sha256)
                raise web.HTTPFound(url)
        if self._states is None:
            raise web.HTTPNotFound(text=f"no artifact {sha256} in region {self.settings.region}\n")

        verdict = dist_verdict(await self._load_state(package), package, version, sha256)
        if isinstance(verdict, Gone):
            raise web.HTTPGone(text=f"{verdict.detail}\n")
        if isinstance(verdict, NotHere):
            raise web.HTTPNotFound(text=f"{verdict.detail}\n")
        pretty, record = verdict.pretty, verdict.record
        if proxy:
            # The version's signed digests are known only now: proxied zips are checked.
            sent = await self._send_if_held(request, package, pretty, record)
            if sent is not None:
                return sent
        if self.settings.mirror_artifacts:
            self._call("on_missing", self._on_missing, package, pretty, record)
        if self._dist_router is not None:
            target = self._dist_router(request, package, pretty, record)
        else:
            target = self._elsewhere(sha256, record)
        if target is None:
            raise web.HTTPServiceUnavailable(
                text=f"{package} {pretty} is not stored here yet and has no other source; "
                "try again later\n",
                headers=RETRY_AFTER,
            )
        self._call("on_serve", self._on_serve, package, pretty, sha256)
        raise web.HTTPFound(target)

    async def mirror(self, request: web.Request) -> web.StreamResponse:
        """A zip by package and pretty version, as other nodes list this one in ``mirrors``.

        From the bucket (302 or proxied, as ``dist``) when this node holds the version's
        artifact, else 404 (Composer then tries its next URL).
        """
        match = _MIRROR_FILE.fullmatch(request.match_info["file"])
        if match is None:
            raise web.HTTPNotFound(text="not a mirror file name (<version>.zip)\n")
        package, version = self._package_and_version(request, match["version"])
        if not self.settings.mirror_artifacts or self._states is None:
            raise web.HTTPNotFound(text=f"region {self.settings.region} holds no zips\n")
        state = await self._load_state(package)
        found = None if state is None else find_version(state, version)
        if found is None:
            raise web.HTTPNotFound(text=f"{package} has no version {version} here\n")
        if self.settings.dist == "proxy":
            sent = await self._send_if_held(request, package, found[0], found[1])
            if sent is not None:
                return sent
        else:
            url = await self._presigned_if_held(found[1].sha256)
            if url is not None:
                raise web.HTTPFound(url)
        raise web.HTTPNotFound(
            text=f"{package} {found[0]} is not stored in region {self.settings.region}\n"
        )

    # -- Security advisories and install notifications -------------------------------------------

    async def security_advisories(self, request: web.Request) -> web.Response:
        """``{"advisories": {name: [advisory, ...]}}`` for the names asked (query or form).

        Only packages this node knows are answered, with an empty list when they have no
        advisory; other names are left out, so that Composer asks its next repository
        (Packagist) about them. 400 without names or with too many; 413 for a body too large.
        """
        names = await advisory_query_names(request)
        # Composer indexes the answer by the names it sent: keys are those, as sent.
        ours = {name: name.lower() for name in names if self.settings.is_our_package(name.lower())}
        states = await self._load_states(set(ours.values()))
        advisories: dict[str, list[dict[str, Any]]] = {}
        for name, package in ours.items():
            state = states.get(package)
            if state is not None:
                advisories[name] = [state.advisories[key] for key in sorted(state.advisories)]
        return web.json_response({"advisories": advisories})

    async def downloads(self, request: web.Request) -> web.Response:
        """Composer's install notification (``notify-batch``): count each known version.

        Body ``{"downloads": [{"name": "drupal/token", "version": "1.9.0.0"}, ...]}`` (the
        version normalized). Names not served here and unknown versions are ignored. 400 for a
        body of another shape, 413 for one too large or with too many entries.
        """
        entries = await notified_downloads(request)
        ours = [(name.lower(), version) for name, version in entries]
        ours = [(name, version) for name, version in ours if self.settings.is_our_package(name)]
        states = await self._load_states({name for name, _ in ours})
        for package, version in ours:
            state = states.get(package)
            found = None if state is None else find_version(state, version)
            if found is not None:
                self._call("on_download", self._on_download, package, found[0], found[1].sha256)
        # Packagist answers 201 with this body; Composer reads neither.
        return web.json_response({"status": "success"}, status=201)

    # -- Helpers -------------------------------------------------------------------------------

    def _package_and_version(self, request: web.Request, version: str) -> tuple[str, str]:
        """The package and version a zip path names. Raises ``HTTPNotFound`` for odd ones."""
        package = f"{request.match_info['vendor']}/{request.match_info['name']}"
        if not PACKAGE_NAME.fullmatch(package):
            raise web.HTTPNotFound(text="not a package name\n")
        if not _VERSION.fullmatch(version):
            raise web.HTTPNotFound(text="not a version\n")
        if not self.settings.serves(package):
            raise web.HTTPNotFound(text=f"{package} is not served here\n")
        return package, version

    async def _presigned_if_held(self, sha256: str) -> str | None:
        """A presigned URL of the artifact if the bucket holds it. Raises ``HTTPServiceUnavailable``."""
        key = layout.artifact_key(sha256)
        try:
            stored = await asyncio.to_thread(self.store.stat, key)
        except StoreUnavailableError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=RETRY_AFTER) from exc
        if stored is None:
            return None
        return self._presigner.presigned_url(key, expires=self.settings.presign_expiry)

    async def _send_if_held(
        self, request: web.Request, package: str, version: str, record: VersionRecord
    ) -> web.StreamResponse | None:
        """The zip of ``record`` sent through the node, or None when the bucket lacks the
        signed bytes. Raises what ``send_artifact`` raises."""
        return await send_artifact(
            request,
            self.store,
            record,
            region=self.settings.region,
            what=f"{package} {version}",
            on_answer=lambda: self._call(
                "on_serve", self._on_serve, package, version, record.sha256
            ),
        )

    async def _load_state(self, package: str) -> PackageState | None:
        """The package's newest state. Raises ``HTTPServiceUnavailable`` when the store fails."""
        if self._states is None:
            return None
        async with self._state_reads:
            try:
                return await asyncio.to_thread(self._states.load, package)
            except StoreUnavailableError as exc:
                raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=RETRY_AFTER) from exc

    async def _load_states(self, packages: Iterable[str]) -> dict[str, PackageState]:
        """The known states among ``packages``. Raises ``HTTPServiceUnavailable``."""
        names = sorted(packages)
        loads: list[Awaitable[PackageState | None]] = [self._load_state(n) for n in names]
        loaded = await asyncio.gather(*loads)
        return {name: state for name, state in zip(names, loaded, strict=True) if state}

    def _elsewhere(self, sha256: str, record: VersionRecord) -> str | None:
        """Where else the zip of ``record`` is (``dist_rules.redirect_target``): another node's
        verified copy, then its origin. Raises ``HTTPServiceUnavailable`` naming the copies
        when every one lies outside the jurisdictions the region may send clients to.
        """
        policy = self.settings.jurisdictions
        replicas = [] if self._replicas is None else self._replicas(sha256)
        target = redirect_target(
            sha256, record, replicas, own_url=self.settings.public_url, policy=policy
        )
        if not isinstance(target, Withheld):
            return target
        named = ", ".join(
            f"{source.holder} ({source.jurisdiction or 'jurisdiction not declared'})"
            for source in target.sources
        )
        raise web.HTTPServiceUnavailable(
            text=f"region {self.settings.region} holds no copy of {sha256} yet and sends its "
            f"clients to {policy.describe(Purpose.REDIRECT)} only, so not to {named}; "
            "try again later\n",
            headers=RETRY_AFTER,
        )

    @staticmethod
    def _call(what: str, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            # Counting or scheduling a refetch must never cost the client its answer.
            log.exception("%s callback failed for %s", what, args)
