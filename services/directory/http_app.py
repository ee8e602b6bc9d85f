"""The directory: the one Composer repository URL site builders configure.

It materializes the catalogue itself (a metadata-only node of its own) and
serves ``packages.json`` and p2 from it, so its metadata only ever holds
verified versions with their signed sha1. A dist request is answered with a
302 to the best node for the client (``services.directory.registry.choose``). Nodes come
from the status topic: the directory admits a node after a self-test (a
version's p2 entry and zip fetched through the node, sha1 checked against the
signed one), and drops one silent for longer than the silence window.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson
from aiohttp import web

from connectors.kafka_followers import TopicFollower
from connectors.metrics import NODE_HEARTBEAT_AGE, NODE_LAG_EVENTS, NODES, ROUTED
from schemas import layout
from schemas.composer import expand
from schemas.errors import RejectedError
from schemas.federation import NodeBook
from schemas.package_state import PackageState, StateReader, VersionRecord
from schemas.trust import TrustRoot
from schemas.versions import is_dev
from services.directory.registry import (
    ADMITTED,
    DROPPED,
    PENDING,
    REFUSED,
    Choice,
    NodeEntry,
    RegionMap,
    Registry,
    choose,
)
from services.node.http_app import NodeHttp
from services.shared.status_pages import RejectionLog, serve_status_pages
from services.shared.status_views import (
    Copy,
    NetworkView,
    PackageView,
    RejectionRow,
    Series,
    node_rows,
    package_view,
)

log = logging.getLogger(__name__)

SELF_TEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=20)


@dataclass(frozen=True)
class SelfTest:
    #: None: nothing to test yet (the node stays pending and is tested next round).
    passed: bool | None
    reason: str


class Directory:
    """The registry fed from the status topic, the admission loop and the dist choice."""

    def __init__(
        self,
        *,
        broker_url: str,
        status_topic: str,
        states: StateReader,
        registry: Registry,
        regions: RegionMap,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        check_every: float = 2.0,
        self_test_package: str | None = None,
    ) -> None:
        self.registry = registry
        self.regions = regions
        self.states = states
        self.clock = clock
        self._check_every = check_every
        self._self_test_package = self_test_package
        #: Every node's registration, last heartbeat and lag history (under ``lock``).
        self.book = NodeBook()
        self.lock = threading.Lock()
        self.refused_records = 0
        self._follower = TopicFollower(broker_url, status_topic, self._on_record, name="directory")
        self._task: asyncio.Task[None] | None = None

    # The status topic --------------------------------------------------------------

    def _on_record(self, value: bytes) -> None:
        """One record of the status topic, in the follower's thread."""
        try:
            with self.lock:
                record = self.book.add(value)
                self.registry.observe(record, self.clock())
        except RejectedError as exc:
            # A forged or malformed record changes nothing; it is counted and logged.
            self.refused_records += 1
            log.warning("status record refused: %s", exc)

    def start(self) -> None:
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()

    async def on_startup(self, app: web.Application) -> None:
        self._task = asyncio.get_running_loop().create_task(self._admission_loop())

    async def on_cleanup(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.to_thread(self._follower.stop)

    # Admission ---------------------------------------------------------------------

    async def _admission_loop(self) -> None:
        async with aiohttp.ClientSession(timeout=SELF_TEST_TIMEOUT) as session:
            while True:
                try:
                    await self.check(session)
                except Exception:  # the loop must outlive any one node's surprise
                    log.exception("admission round failed")
                await asyncio.sleep(self._check_every)

    async def check(self, session: aiohttp.ClientSession) -> None:
        """One round: drop silent nodes, self-test the ones due."""
        now = self.clock()
        with self.lock:
            for entry in self.registry.sweep(now):
                log.warning(
                    "node %s (%s) dropped: %s",
                    entry.node_id[:16],
                    entry.registration.base_url,
                    entry.reason,
                )
            due = self.registry.due_for_test(now)
            self._export_metrics(now)
        for entry in due:
            result = await self.self_test(session, entry)
            if result.passed is None:
                continue
            with self.lock:
                self.registry.record_test(entry.node_id, result.passed, result.reason, self.clock())
            level = logging.INFO if result.passed else logging.WARNING
            log.log(
                level,
                "node %s (%s, %s) %s: %s",
                entry.node_id[:16],
                entry.registration.region,
                entry.registration.base_url,
                "admitted" if result.passed else "refused",
                result.reason,
            )

    def _export_metrics(self, now: datetime) -> None:
        """The registry as gauges (under ``lock``): nodes by admission, each node's lag and
        the age of its last heartbeat on the directory's clock."""
        admissions = Counter(entry.admission for entry in self.registry.nodes.values())
        for admission in (ADMITTED, PENDING, REFUSED, DROPPED):
            NODES.labels(admission).set(admissions[admission])
        for entry in self.registry.nodes.values():
            labels = (entry.registration.region, entry.node_id[:12])
            if entry.status is not None:
                NODE_LAG_EVENTS.labels(*labels).set(entry.status.events_behind)
            if entry.last_seen is not None:
                age = (now - entry.last_seen).total_seconds()
                NODE_HEARTBEAT_AGE.labels(*labels).set(max(0.0, age))

    async def _test_subject(self, entry: NodeEntry) -> tuple[str, str, VersionRecord] | None:
        """A version the node serves and has applied. For admission: the package named
        for self-tests, or the first the directory holds that the node serves, its
        smallest zip. For a spot check of an admitted node: a package drawn at random
        (a node cannot tell which one is next), its newest version the node claims to
        have applied (metadata lagging the heartbeat shows there first)."""
        status = entry.status
        if status is None:
            return None
        spot = entry.admission == ADMITTED
        if self._self_test_package and not spot:
            names = [self._self_test_package]
        else:
            names = list(await asyncio.to_thread(self.states.packages))
            if spot:
                _UNPREDICTABLE.shuffle(names)
        for name in names:
            if not entry.serves(name):
                continue
            state = await asyncio.to_thread(self.states.load, name)
            if state is None:
                continue
            applied = [
                (version, record)
                for version, record in _versions_smallest_first(state)
                if record.yanked is None and record.position and status.has_applied(record.position)
            ]
            if not applied:
                continue
            if spot:
                return name, *max(applied, key=lambda item: _log_offset(item[1].position))
            return name, *applied[0]
        return None

    async def self_test(self, session: aiohttp.ClientSession, entry: NodeEntry) -> SelfTest:
        """Fetch a known version's p2 entry and zip through the node; check the signed sha1.

        The entry is read from the document Composer reads it from: ``p2/<name>.json``, or
        ``p2/<name>~dev.json`` for a dev version (``1.x-dev``, ``dev-main``).
        """
        subject = await self._test_subject(entry)
        if subject is None:
            return SelfTest(None, "nothing to test yet: it has applied no version it serves")
        package, version, record = subject
        base = entry.registration.base_url
        p2_path = layout.p2_key(package, dev=is_dev(version))
        try:
            async with session.get(f"{base}/{p2_path}") as response:
                if response.status != 200:
                    return SelfTest(False, f"{p2_path} answered {response.status}")
                document = orjson.loads(await response.read())
            entries = expand(document.get("packages", {}).get(package, []))
            match = next((e for e in entries if e.get("version") == version), None)
            if match is None:
                return SelfTest(False, f"{p2_path} does not list {version}")
            dist = match.get("dist", {})
            if dist.get("shasum") != record.sha1:
                return SelfTest(
                    False,
                    f"{p2_path} gives {version} sha1 {dist.get('shasum')}, signed {record.sha1}",
                )
            digest = hashlib.sha1(usedforsecurity=False)  # Composer's shasum: compared, not trusted
            size = 0
            async with session.get(str(dist["url"])) as response:
                if response.status != 200:
                    return SelfTest(
                        False, f"the zip of {package} {version} answered {response.status}"
                    )
                async for chunk in response.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > record.size:
                        return SelfTest(
                            False, f"the zip of {package} {version} is larger than signed"
                        )
                    digest.update(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
            return SelfTest(
                False, f"fetching {package} {version} failed: {type(exc).__name__}: {exc}"
            )
        if digest.hexdigest() != record.sha1:
            return SelfTest(
                False,
                f"the zip of {package} {version} has sha1 {digest.hexdigest()}, signed {record.sha1}",
            )
        return SelfTest(True, f"served {package} {version} with the signed sha1")

    # Clients -----------------------------------------------------------------------

    def route(
        self, request: web.Request, package: str, version: str, record: VersionRecord
    ) -> str | None:
        """The dist router of the directory's ``NodeHttp``: 302 target for this client."""
        region = self.regions.region_of(request.headers, request.remote)
        with self.lock:
            choice = choose(
                self.registry,
                package=package,
                version=version,
                record=record,
                client_region=region,
                now=self.clock(),
            )
            if choice.node_id is not None:
                self.registry.count_served(choice.node_id)
        ROUTED.labels(region or "unknown", _target(choice)).inc()
        _log_choice(package, version, region, choice)
        if not choice.url:
            # Nowhere this client's region allows: said as such, never a redirect out.
            raise web.HTTPServiceUnavailable(text=f"{choice.why}\n", headers={"Retry-After": "60"})
        return choice.url

    async def nodes_json(self, request: web.Request) -> web.Response:
        """Every node the directory knows: registration, admission, sync state."""
        now = self.clock()
        with self.lock:
            entries = list(self.registry.nodes.values())
            shown = {e.node_id: self.registry.shown_state(e, now) for e in entries}
        nodes = []
        for entry in sorted(
            entries, key=lambda e: (e.registration.region, e.registration.base_url)
        ):
            status = entry.status
            nodes.append(
                {
                    "node_id": entry.node_id,
                    "region": entry.registration.region,
                    "base_url": entry.registration.base_url,
                    "mode": entry.registration.mode,
                    "include": list(entry.registration.include),
                    "admission": entry.admission,
                    "reason": entry.reason,
                    "live": shown[entry.node_id] not in ("silent", "stopped"),
                    "last_seen": entry.last_seen.isoformat() if entry.last_seen else None,
                    "served": entry.served,
                    # As every reader shows it: silent or stopped, else the heartbeat's.
                    "state": shown[entry.node_id],
                    "heartbeat_state": status.state if status else None,
                    "events_behind": status.events_behind if status else None,
                    "seconds_behind": status.seconds_behind if status else None,
                    "applied": {
                        f"{p.topic}:{p.partition}": p.applied_offset for p in status.partitions
                    }
                    if status
                    else {},
                }
            )
        return web.json_response({"nodes": nodes, "refused_records": self.refused_records})


def directory_app(
    node_http: NodeHttp,
    directory: Directory,
    *,
    trust_root: Callable[[], TrustRoot] | None = None,
    rejections: RejectionLog | None = None,
) -> web.Application:
    """The directory's HTTP: the Composer repository of ``node_http``, ``/nodes.json`` and,
    given the trust root in force, the status pages of the whole network."""
    app = node_http.app
    app.router.add_get("/nodes.json", directory.nodes_json)
    app.on_startup.append(directory.on_startup)
    app.on_cleanup.append(directory.on_cleanup)
    if trust_root is not None:
        source = DirectoryStatus(directory, trust_root, rejections)
        serve_status_pages(app, source, rejections=rejections, clock=directory.clock)
    return app


class DirectoryStatus:
    """The directory's status pages: every node it knows, and who holds each version."""

    title = "fairstream directory"

    def __init__(
        self,
        directory: Directory,
        trust_root: Callable[[], TrustRoot],
        rejections: RejectionLog | None,
    ) -> None:
        self._directory = directory
        self._trust_root = trust_root
        self._rejections = rejections

    def network(self, now: datetime) -> NetworkView:
        directory = self._directory
        with directory.lock:
            book = NodeBook(
                dict(directory.book.registrations),
                dict(directory.book.statuses),
                {node: deque(samples) for node, samples in directory.book.history.items()},
            )
            admissions = {
                entry.node_id: _admission_text(entry, directory.registry.shown_state(entry, now))
                for entry in directory.registry.nodes.values()
            }
            heard = {
                entry.node_id: entry.last_seen
                for entry in directory.registry.nodes.values()
                if entry.last_seen is not None
            }
            silent_after = directory.registry.stale_after
        # Liveness on the directory's clock, as it routes: a node's clock may be a day off.
        rows = node_rows(
            book, admissions=admissions, heard=heard, silent_after=silent_after, now=now
        )
        series = [
            Series(f"{r.region} {r.base_url}", list(book.history.get(r.node_id, ()))) for r in rows
        ]
        counts = self._rejections.counts() if self._rejections is not None else []
        return NetworkView("Network", rows, series, counts)

    async def package(self, name: str) -> PackageView | None:
        state = await asyncio.to_thread(self._directory.states.load, name)
        if state is None:
            return None
        now = self._directory.clock()
        with self._directory.lock:
            entries = [
                entry
                for entry in self._directory.registry.nodes.values()
                if entry.admission == ADMITTED
                and self._directory.registry.live(entry, now)
                and entry.registration.mode == "full"
                and entry.serves(name)
                and entry.status is not None
            ]

        def holders(record: VersionRecord) -> list[Copy]:
            return [
                Copy(
                    f"{e.registration.region}: {e.registration.base_url}",
                    e.registration.region,
                    e.registration.base_url,
                )
                for e in entries
                if record.position
                and e.status is not None
                and e.status.has_applied(record.position)
            ]

        note = (
            "Verified copies: admitted, live nodes that keep zips, serve this package and have "
            "applied the event that published the version (each checked the zip's sha256 "
            "against the signed one before serving it)."
        )
        return package_view(state, self._trust_root(), holders, note)

    def rejections(self) -> list[RejectionRow]:
        return self._rejections.rows() if self._rejections is not None else []


def _admission_text(entry: NodeEntry, shown: str) -> tuple[str, str]:
    if entry.admission == ADMITTED and shown == "stopped":
        return "stopped", "it said goodbye (shut down): it is sent no clients until it is back"
    if entry.admission == ADMITTED and shown == "silent":
        return "silent", "no heartbeat lately: it is sent no clients until one comes"
    return entry.admission, entry.reason


#: Spot checks draw from the system's randomness: a node must not predict the next one.
_UNPREDICTABLE = secrets.SystemRandom()


def _log_offset(position: str) -> int:
    """The offset of a ``topic:partition:offset`` position (a package's events share a
    partition, so offsets order its versions)."""
    return int(position.rsplit(":", 1)[1])


def _versions_smallest_first(state: PackageState) -> list[tuple[str, VersionRecord]]:
    return sorted(state.versions.items(), key=lambda item: (item[1].size, item[0]))


def _log_choice(package: str, version: str, region: str | None, choice: Choice) -> None:
    log.info(
        "dist %s %s for client region %s → %s (%s)",
        package,
        version,
        region or "unknown",
        _target(choice),
        choice.why,
    )


def _target(choice: Choice) -> str:
    """Where a choice sends the client, as logs and metrics name it."""
    return choice.region or ("origin" if choice.url else "nowhere")
