"""A region's HTTP frontend: serves the region's view to Composer without consuming the log.

Workers (``node run``) write the region's view topic; a frontend (``node serve``)
follows it into its own local view (sqlite, p2 in memory, a docroot for nginx) and
reads nothing of it from the bucket, so a region scales its serving apart from its
processing, and a region whose workers stop (or fall behind) keeps serving every
version it has applied. Each frontend registers itself and sends heartbeats with the region's
sync state (the region's committed offsets), so the directory sends it clients
only for versions the region has applied.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from connectors.kafka_followers import TopicFollower
from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics
from connectors.state_store import PackageStates
from connectors.store import S3Store, StoreLocation, open_store
from connectors.view_store import LocalView, ViewFollower
from schemas.errors import TransientError
from schemas.federation import MISSED_HEARTBEATS
from schemas.package_state import StateReader, render_documents
from schemas.signing import SigningKey
from services.node.http_app import NodeHttp
from services.node.http_settings import DistMode, NodeHttpSettings
from services.shared.node_own_status import NodeOwnStatus
from services.shared.status_pages import RejectionLog, serve_status_pages
from streams.artifacts import ReplicaRegistry
from streams.node import TRUST_REFRESH_SECONDS
from streams.node_settings import group_id
from streams.policy import ReplicationPolicy
from streams.sync import StatusReporter, registration_of
from streams.trust_keeper import TrustKeeper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrontendSettings:
    """What a frontend needs; built once by the CLI."""

    region: str
    broker_url: str = field(repr=False)  # may carry SASL credentials
    store: StoreLocation
    bucket: str
    public_url: str
    pinned_root: bytes
    policy: ReplicationPolicy
    node_key: SigningKey
    #: The frontend's own copy of the region's view (sqlite and docroot).
    view_dir: Path
    topics: Topics = Topics()
    status_interval: float = 10.0
    #: ``bucket`` or ``topic``: where the region's workers keep its view (NodeSettings.view).
    view: str = "topic"
    #: How a zip held in the bucket is answered (``http_settings.DistMode``).
    dist: DistMode = "redirect"
    #: The store's endpoint as clients reach it, ``https://s3.example.org``: redirects are
    #: presigned for it (empty: the store's own endpoint).
    store_public_url: str = ""


class Frontend:
    """The region's bucket as a Composer repository, plus the frontend's heartbeats."""

    # Long because it is the frontend's wiring: each part built before the one that uses it.
    def __init__(self, settings: FrontendSettings) -> None:
        self.settings = settings
        self.store = open_store(settings.store, settings.bucket)
        self.trust = TrustKeeper(
            settings.pinned_root,
            store=self.store,
            broker_url=settings.broker_url,
            topic=settings.topics.trust,
        )
        self.docroot: Path | None = None
        self.view: LocalView | None = None
        self._view_follower: ViewFollower | None = None
        states: StateReader
        if settings.view == "topic":
            self.docroot = settings.view_dir / "docroot"
            self.view = LocalView(
                settings.view_dir / "view.sqlite3", docroot=self.docroot, files_in_process=True
            )
            states = self.view
            self._view_follower = ViewFollower(
                settings.broker_url,
                settings.topics.view(settings.region),
                self.view,
                name="frontend",
            )
        else:
            states = PackageStates(
                self.store, render=lambda state: render_documents(state, settings.public_url)
            )
        self.replicas = ReplicaRegistry(settings.region)
        self._follower = TopicFollower(
            settings.broker_url, settings.topics.replicas, self.replicas.add_record
        )
        self.reporter = StatusReporter(
            key=settings.node_key,
            registration=registration_of(
                settings.node_key, settings.region, settings.public_url, settings.policy
            ),
            broker_url=settings.broker_url,
            topics=settings.topics,
            group=group_id(settings.region, settings.topics),
            store=self.store,
            trust_root=lambda: self.trust.root,
        )
        self.http = NodeHttp(
            NodeHttpSettings(
                region=settings.region,
                patterns=settings.policy.include,
                public_url=settings.public_url,
                mirror_artifacts=settings.policy.mirrors_artifacts,
                dist=settings.dist,
                service="frontend",
                jurisdictions=settings.policy.jurisdictions,
            ),
            self.store,
            presigner=S3Store(settings.store.reached_at(settings.store_public_url), settings.bucket)
            if settings.store_public_url
            else None,
            trust_root=lambda: self.trust.root,
            states=states,
            documents=self.view.document if self.view is not None else None,
            replicas=self.replicas.copies,
            peers=self.replicas.peer_sources,
        )
        rejections = RejectionLog(
            settings.broker_url, settings.topics.rejected, region=settings.region
        )
        own_status = NodeOwnStatus(
            registration=self.reporter.registration,
            last_status=lambda: self.reporter.last,
            history=lambda: list(self.reporter.history),
            states=states,
            store=self.store,
            trust_root=lambda: self.trust.root,
            rejections=rejections,
            keeps_zips=settings.policy.mirrors_artifacts,
            title=f"fairstream frontend · {settings.region}",
            silent_after=timedelta(seconds=MISSED_HEARTBEATS * settings.status_interval),
        )
        serve_status_pages(self.http.app, own_status, rejections=rejections)
        self._tasks: list[asyncio.Task[None]] = []
        self.http.app.on_startup.append(self._start)
        self.http.app.on_cleanup.append(self._stop)

    def prepare(self) -> None:
        """Blocking start-up: the bucket must exist (a worker made it), the trust root."""
        self.trust.load()
        self.trust.refresh()
        self._follower.start()
        if self._view_follower is not None:
            self._view_follower.start()
            # Serve nothing older than what the region served before this frontend
            # (re)started.
            producer = EventProducer(self.settings.broker_url)
            try:
                self._view_follower.catch_up(producer, f"frontend-{self.settings.public_url}")
            finally:
                producer.close()
        self.reporter.register()

    async def _start(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(self.settings.status_interval, self.reporter.report)),
            loop.create_task(self._every(TRUST_REFRESH_SECONDS, self.trust.refresh)),
        ]

    async def _every(self, seconds: float, work: object) -> None:
        assert callable(work)
        while True:
            try:
                await asyncio.to_thread(work)
            except TransientError as exc:
                log.warning("%s: %s", getattr(work, "__name__", "task"), exc)
            await asyncio.sleep(seconds)

    async def _stop(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.to_thread(self._follower.stop)
        if self._view_follower is not None:
            await asyncio.to_thread(self._view_follower.stop)
        if self.view is not None:
            await asyncio.to_thread(self.view.flush_files)  # the docroot has what it served
        await asyncio.to_thread(self.reporter.goodbye)
        self.reporter.close()
