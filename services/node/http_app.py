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
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Final, Literal, Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import web

from connectors.metrics import instrument
from connectors.object_store import ObjectStore, is_json
from connectors.view_store import ServedDocument
from schemas import layout
from schemas.composer import render_packages_json
from schemas.errors import StoreUnavailableError
from schemas.names import NAME_PATTERN, PACKAGE_NAME
from schemas.package_state import PackageState, StateReader, VersionRecord, find_version
from schemas.trust import TrustRoot
from services.node.dist_proxy import send_artifact
from streams.artifacts import Source
from streams.health import Verdict
from streams.policy import JurisdictionPolicy, Purpose

log = logging.getLogger(__name__)

#: Largest request body read (advisory queries, install notifications): Composer's are far smaller.
MAX_REQUEST_BODY: Final = 1024 * 1024
#: Most package names one advisory query may ask about (Packagist answers at most 1000 too).
MAX_ADVISORY_NAMES: Final = 1000
#: Most entries one install notification may carry (one per installed package).
MAX_NOTIFIED_DOWNLOADS: Final = 5000
#: Package states read at once for one request: the store's connection pool holds 16.
STATE_READS_AT_ONCE: Final = 8
#: packages.json variants remembered (one per public base URL seen, see ``packages_json``).
_ROOT_VARIANTS: Final = 32
#: Where other nodes send Composer for a zip (their ``mirrors``): ``/mirror/<package>/<version>.<type>``.
MIRROR_TEMPLATE: Final = "/mirror/%package%/%prettyVersion%.%type%"
#: This node's advisory API and install notification paths.
ADVISORIES_PATH: Final = "/api/security-advisories/"
DOWNLOADS_PATH: Final = "/downloads/"
_RETRY_AFTER: Final = {"Retry-After": "5"}

_P2_FILE = re.compile(rf"^(?P<name>{NAME_PATTERN})(?P<dev>~dev)?\.json$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A Composer pretty version as a path segment: no '/', no leading '.', so never '..'.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
# Our dist type is always zip: %type% in a mirror URL is the package's dist type.
_MIRROR_FILE = re.compile(r"^(?P<version>[A-Za-z0-9][A-Za-z0-9._+-]{0,99})\.zip$")
# PHP's http_build_query writes a list as packages[0]=a&packages[1]=b (Composer's POST);
# packages[]=a is what people type (Packagist's documented GET).
_PACKAGES_FIELD = re.compile(r"^packages(\[\d*\])?$")

#: How a node answers for a zip it holds: ``redirect`` (302 to a presigned URL of the
#: store, which clients must reach) or ``proxy`` (the bytes through the node, checked).
DistMode = Literal["redirect", "proxy"]
DIST_MODES: Final[tuple[DistMode, ...]] = ("redirect", "proxy")


class Presigner(Protocol):
    """What makes the URLs a ``redirect`` node sends clients to (``ObjectStore``)."""

    def presigned_url(self, key: str, *, expires: timedelta = ...) -> str: ...


@dataclass(frozen=True)
class NodeHttpSettings:
    """How one node answers.

    ``public_url`` is the node's base URL as clients see it (``https://eu.example``); when
    empty, each request's own scheme and host are used. ``mirror_artifacts`` false makes a
    metadata-only node: it never holds zips and always sends clients elsewhere. ``dist``
    says how a zip held here is answered (``DistMode``).
    """

    region: str
    patterns: tuple[str, ...] = ("drupal/*",)
    presign_expiry: timedelta = timedelta(minutes=15)
    public_url: str = ""
    mirror_artifacts: bool = True
    dist: DistMode = "redirect"
    #: The ``service`` label of its HTTP metrics: ``node``, ``frontend`` or ``directory``.
    service: str = "node"
    #: Where the region may send clients (``Purpose.REDIRECT``): a sovereign region's
    #: ``/dist`` and ``mirrors`` never name a node or an origin outside its list.
    jurisdictions: JurisdictionPolicy = JurisdictionPolicy()


#: The header naming the region (or directory) that answered.
REGION_HEADER = "X-Fairstream-Served-By"


def mirror_url_template(base_url: str) -> str:
    """The ``mirrors[].dist-url`` under which the node at ``base_url`` serves its zips. Never raises."""
    return base_url.rstrip("/") + MIRROR_TEMPLATE


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
        self._documents = documents
        self._replicas = replicas
        self._peers = peers
        self._on_missing = on_missing
        self._on_download = on_download
        self._on_serve = on_serve
        self._dist_router = dist_router
        # Per public base URL: the packages.json last rendered and when it changed.
        self._root_documents: dict[str, tuple[bytes, datetime]] = {}
        self._state_reads = asyncio.Semaphore(STATE_READS_AT_ONCE)
        self.app = web.Application(client_max_size=MAX_REQUEST_BODY)
        self.app.add_routes(
            [
                web.get("/packages.json", self.packages_json),
                web.get("/p2/{vendor}/{file}", self.p2),
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

    # -- Composer metadata ---------------------------------------------------------------------

    async def packages_json(self, request: web.Request) -> web.StreamResponse:
        """The root document, with absolute URLs on this node and the other nodes as mirrors."""
        base = self._public_base(request)
        peers = (
            [] if self._peers is None else _other_bases(self._redirect_targets(self._peers()), base)
        )
        document = render_packages_json(
            patterns=self.settings.patterns,
            metadata_url=f"{base}/p2/%package%.json",
            notify_batch=base + DOWNLOADS_PATH,
            security_advisories_api=base + ADVISORIES_PATH,
            security_advisories_in_metadata=True,
            dist_mirrors=[mirror_url_template(peer) for peer in peers],
        )
        # Composer revalidates its cached packages.json with If-Modified-Since. The document
        # changes when the peers do, so it is dated by when this process first rendered these
        # bytes: a restart dates it later than any date sent before, never earlier.
        known = self._root_documents.get(base)
        if known is None or known[0] != document:
            if base not in self._root_documents and len(self._root_documents) >= _ROOT_VARIANTS:
                # The Host header is the client's to choose: keep the memory bounded.
                del self._root_documents[next(iter(self._root_documents))]
            known = (document, self._clock())
            self._root_documents[base] = known
        return self._dated_response(request, document, known[1])

    async def p2(self, request: web.Request) -> web.StreamResponse:
        vendor = request.match_info["vendor"]
        match = _P2_FILE.fullmatch(request.match_info["file"])
        if match is None:
            raise web.HTTPNotFound(text="not a p2 file name\n")
        package = f"{vendor}/{match['name']}"
        if not PACKAGE_NAME.fullmatch(package):
            raise web.HTTPNotFound(text="not a package name\n")
        # Composer asks for every installed package (symfony/* too, for audits):
        # names outside our namespaces are answered without touching the store.
        if not self._serves(package):
            raise web.HTTPNotFound(text=f"{package} is not served here\n")
        return await self._serve_document(
            request, layout.p2_key(package, dev=match["dev"] is not None)
        )

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

        state = await self._load_state(package)
        # Bytes an expunged version shared with a kept one stay servable under the kept one.
        if state is not None and (
            version in state.expunged
            or (sha256 in state.expunged.values() and not state.references(sha256))
        ):
            raise web.HTTPGone(text=f"{package} {version} ({sha256}) was expunged\n")
        found = None if state is None else find_version(state, version)
        if found is None:
            raise web.HTTPNotFound(text=f"{package} has no version {version} here\n")
        pretty, record = found
        if record.sha256 != sha256:
            # Only ever send a client to the bytes that were signed for this version.
            raise web.HTTPNotFound(
                text=f"{package} {pretty} is sha256 {record.sha256}, not {sha256}\n"
            )
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
                headers=_RETRY_AFTER,
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
        fields = list(request.query.items())
        if request.method == "POST":
            if request.content_type not in ("application/x-www-form-urlencoded", ""):
                raise web.HTTPUnsupportedMediaType(
                    text=f"advisory query body is {request.content_type}; send "
                    "application/x-www-form-urlencoded packages[]=vendor/name\n"
                )
            body = await _read_body(request, "advisory query")
            # Parsed here, not by aiohttp, whose form parser stops at 1000 fields with a 413:
            # too many names deserves its own answer below.
            fields += parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        names = list(
            dict.fromkeys(
                value for key, value in fields if _PACKAGES_FIELD.fullmatch(key) and value
            )
        )
        if not names:
            raise web.HTTPBadRequest(
                text="missing package names: send packages[]=vendor/name (query or form)\n"
            )
        if len(names) > MAX_ADVISORY_NAMES:
            raise web.HTTPBadRequest(
                text=f"{len(names)} package names asked; ask for at most "
                f"{MAX_ADVISORY_NAMES} per request\n"
            )
        # Composer indexes the answer by the names it sent: keys are those, as sent.
        ours = {name: name.lower() for name in names if self._is_our_package(name.lower())}
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
        body = await _read_body(request, "install notification")
        entries = _notified_downloads(body)
        if len(entries) > MAX_NOTIFIED_DOWNLOADS:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_NOTIFIED_DOWNLOADS,
                actual_size=len(entries),
                text=f"{len(entries)} downloads in one notification; at most "
                f"{MAX_NOTIFIED_DOWNLOADS} are accepted\n",
            )
        ours = [(name.lower(), version) for name, version in entries]
        ours = [(name, version) for name, version in ours if self._is_our_package(name)]
        states = await self._load_states({name for name, _ in ours})
        for package, version in ours:
            state = states.get(package)
            found = None if state is None else find_version(state, version)
            if found is not None:
                self._call("on_download", self._on_download, package, found[0], found[1].sha256)
        # Packagist answers 201 with this body; Composer reads neither.
        return web.json_response({"status": "success"}, status=201)

    # -- Helpers -------------------------------------------------------------------------------

    def _public_base(self, request: web.Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    def _serves(self, package: str) -> bool:
        return any(fnmatch.fnmatchcase(package, p) for p in self.settings.patterns)

    def _is_our_package(self, name: str) -> bool:
        return PACKAGE_NAME.fullmatch(name) is not None and self._serves(name)

    def _package_and_version(self, request: web.Request, version: str) -> tuple[str, str]:
        """The package and version a zip path names. Raises ``HTTPNotFound`` for odd ones."""
        package = f"{request.match_info['vendor']}/{request.match_info['name']}"
        if not PACKAGE_NAME.fullmatch(package):
            raise web.HTTPNotFound(text="not a package name\n")
        if not _VERSION.fullmatch(version):
            raise web.HTTPNotFound(text="not a version\n")
        if not self._serves(package):
            raise web.HTTPNotFound(text=f"{package} is not served here\n")
        return package, version

    async def _presigned_if_held(self, sha256: str) -> str | None:
        """A presigned URL of the artifact if the bucket holds it. Raises ``HTTPServiceUnavailable``."""
        key = layout.artifact_key(sha256)
        try:
            stored = await asyncio.to_thread(self.store.stat, key)
        except StoreUnavailableError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=_RETRY_AFTER) from exc
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
                raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=_RETRY_AFTER) from exc

    async def _load_states(self, packages: Iterable[str]) -> dict[str, PackageState]:
        """The known states among ``packages``. Raises ``HTTPServiceUnavailable``."""
        names = sorted(packages)
        loads: list[Awaitable[PackageState | None]] = [self._load_state(n) for n in names]
        loaded = await asyncio.gather(*loads)
        return {name: state for name, state in zip(names, loaded, strict=True) if state}

    def _redirect_targets(self, sources: Iterable[Source]) -> list[str]:
        """The URLs of ``sources`` the region may send clients to."""
        policy = self.settings.jurisdictions
        return [s.url for s in sources if policy.allows(Purpose.REDIRECT, s.jurisdiction)]

    def _elsewhere(self, sha256: str, record: VersionRecord) -> str | None:
        """Where else the zip of ``record`` is: another node's verified copy, then its origin.

        Only where the region may send clients: in a sovereign region, a copy or an origin
        outside its jurisdictions is never a target, and when no other one is left the
        answer is a 503 that names them (``HTTPServiceUnavailable``).
        """
        own = self.settings.public_url.rstrip("/")
        policy = self.settings.jurisdictions
        candidates = [] if self._replicas is None else list(self._replicas(sha256))
        withheld: list[Source] = []
        for source in candidates:
            url = source.url
            parts = urlsplit(url)
            # Another node's dist path names the sha256 and that node refuses any other
            # bytes under it; a URL that does not name it is not followed, nor one back here.
            if not (
                parts.scheme in ("http", "https")
                and parts.path.endswith(f"/{sha256}.zip")
                and not (own and url.startswith(own + "/"))
            ):
                log.warning(
                    "ignoring replica URL %r for sha256 %s: not a dist URL of it", url, sha256
                )
            elif policy.allows(Purpose.REDIRECT, source.jurisdiction):
                return url
            else:
                withheld.append(source)
        if not record.origin_url:
            return None
        if policy.allows(Purpose.REDIRECT, policy.origin):
            return record.origin_url
        withheld.append(Source(record.origin_url, "origin", policy.origin))
        named = ", ".join(
            f"{source.holder} ({source.jurisdiction or 'jurisdiction not declared'})"
            for source in withheld
        )
        raise web.HTTPServiceUnavailable(
            text=f"region {self.settings.region} holds no copy of {sha256} yet and sends its "
            f"clients to {policy.describe(Purpose.REDIRECT)} only, so not to {named}; "
            "try again later\n",
            headers=_RETRY_AFTER,
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

    async def _serve_document(self, request: web.Request, key: str) -> web.StreamResponse:
        if self._documents is not None:
            # The region's view, held in memory: no thread hop, no store request.
            document = self._documents(key)
            if document is None:
                raise web.HTTPNotFound(text=f"{key} not found\n")
            headers = {"Last-Modified": document.last_modified}
            since = request.headers.get("If-Modified-Since")
            # Dates change exactly when the bytes do, and strictly increase (schemas.view).
            if since is not None and since == document.last_modified:
                return web.Response(status=304, headers=headers)
            if since is not None:
                parsed = _parse_http_date(since)
                if parsed is not None and document.modified <= parsed.timestamp():
                    return web.Response(status=304, headers=headers)
            return web.Response(
                body=document.body, content_type="application/json", headers=headers
            )
        try:
            stored = await asyncio.to_thread(self.store.get, key, complete=is_json)
        except StoreUnavailableError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=_RETRY_AFTER) from exc
        if stored is None:
            raise web.HTTPNotFound(text=f"{key} not found\n")
        return self._dated_response(request, stored.data, stored.last_modified)

    def _dated_response(
        self, request: web.Request, data: bytes, last_modified: datetime
    ) -> web.Response:
        """A JSON answer with Last-Modified, or an empty 304 when the client's copy is current."""
        modified = last_modified.replace(microsecond=0)
        headers: dict[str, str] = {}
        # HTTP dates have one-second precision: a document written in the current
        # second may be written again within it under the same date, and a client
        # holding the first version would get a 304 for the second. Such a
        # document is served without Last-Modified, so the client asks again.
        if modified < self._clock().replace(microsecond=0):
            headers["Last-Modified"] = format_datetime(modified, usegmt=True)
            since = _parse_http_date(request.headers.get("If-Modified-Since"))
            if since is not None and modified <= since:
                return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type="application/json", headers=headers)


async def _read_body(request: web.Request, what: str) -> bytes:
    """The request's body. Raises ``HTTPRequestEntityTooLarge`` past ``MAX_REQUEST_BODY``."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_REQUEST_BODY,
            actual_size=request.content_length or MAX_REQUEST_BODY + 1,
            text=f"{what} body over {MAX_REQUEST_BODY} bytes\n",
        ) from exc


def _other_bases(peers: Iterable[str], own: str) -> list[str]:
    """The peers' base URLs without trailing '/', without this node and duplicates."""
    bases = (peer.rstrip("/") for peer in peers)
    return list(dict.fromkeys(base for base in bases if base and base != own))


def _notified_downloads(body: bytes) -> list[tuple[str, str]]:
    """The (name, version) pairs of an install notification. Raises ``HTTPBadRequest``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"install notification is not JSON: {exc}\n") from exc
    downloads = document.get("downloads") if isinstance(document, Mapping) else None
    if not isinstance(downloads, list):
        raise web.HTTPBadRequest(
            text='install notification must be {"downloads": [{"name": ..., "version": ...}]}\n'
        )
    entries: list[tuple[str, str]] = []
    for position, entry in enumerate(downloads):
        if not (
            isinstance(entry, Mapping)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("version"), str)
        ):
            raise web.HTTPBadRequest(
                text=f"install notification entry {position} is not "
                '{"name": <string>, "version": <string>}\n'
            )
        entries.append((entry["name"], entry["version"]))
    return entries


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None
