"""The composition root of a regional node: ``fairstream node run``'s options made into a
running worker, and ``fairstream node serve``'s into a running frontend.

``build_node`` checks the options and wires everything (settings, the stream, the HTTP
service and its status pages) without running anything; ``run_node`` runs what it built.
``build_frontend`` and ``run_frontend`` do the same for a frontend. The click commands
(``services.node.cli``) only turn their options into ``NodeRunOptions`` and
``NodeServeOptions``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop
from rich.console import Console

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_topics import Topics, ensure_region_topics
from connectors.object_store import ObjectStore
from connectors.store import S3Store, StoreLocation, open_store
from schemas import layout
from schemas.composer import render_packages_json
from schemas.errors import ConfigurationError, RejectedError
from schemas.federation import MISSED_HEARTBEATS, REGION_NAME
from services.cli.options import (
    listen_address,
    log_settings,
    make_dir,
    node_key,
    pinned_root_file,
    read_file,
    stack_urls,
)
from services.node.catch_up import CatchUpProgress
from services.node.http_app import NodeHttp
from services.node.http_settings import NodeHttpSettings
from services.shared.http_service import HttpServerService
from services.shared.node_own_status import NodeOwnStatus
from services.shared.serving import run_worker, serve_app
from services.shared.status_pages import RejectionLog, serve_status_pages
from streams.faults import FaultSpec
from streams.health import HealthRules
from streams.node import NodeStream
from streams.node_settings import NodeSettings, region_public_url
from streams.peer_config import parse_peer, with_peer_namespaces, with_peer_origins
from streams.policy import ReplicationMode, ReplicationPolicy, jurisdiction_policy

if TYPE_CHECKING:
    from services.node.frontend import Frontend


@dataclass(frozen=True)
class PolicyOptions:
    """The options that choose what a region replicates, as click parses them: those
    ``services.node.cli.policy_options`` adds to ``node run``, ``node serve`` and
    ``node rebuild``, whose options dataclasses extend this one."""

    mode: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    quota: int | None
    jurisdiction: str | None
    allow_jurisdiction: tuple[str, ...]
    origin_jurisdiction: str | None


@dataclass(frozen=True)
class NodeRunOptions(PolicyOptions):
    """The options of ``fairstream node run``, as click parses them: one field per
    parameter of the command (the policy's from ``PolicyOptions``), with its name and type
    (``--config`` is not one: it only supplies the others). Their meaning is the command's
    ``--help``."""

    view: str
    region: str
    root_path: Path
    max_artifact_size: int
    listen: str
    public_url: str | None
    dist: str
    store_public_url: str | None
    bucket: str | None
    session_timeout: float
    stuck_after: float
    ready_lag: int
    pending_interval: float
    peer_specs: tuple[str, ...]
    node_key_path: Path | None
    status_every: float
    fault_point: str | None
    clock_skew: float
    broker: str | None
    store: str | None
    topic_prefix: str
    partitions: int
    data_dir: Path


@dataclass(frozen=True)
class NodeServeOptions(PolicyOptions):
    """The options of ``fairstream node serve``, as click parses them: one field per
    parameter of the command (the policy's from ``PolicyOptions``), with its name and type.
    Their meaning is the command's ``--help``."""

    view: str
    region: str
    root_path: Path
    listen: str
    public_url: str | None
    dist: str
    store_public_url: str | None
    bucket: str | None
    node_key_path: Path | None
    status_every: float
    broker: str | None
    store: str | None
    topic_prefix: str
    data_dir: Path


@dataclass(frozen=True)
class BuiltNode:
    """A node wired and ready to run: its stream worker, its HTTP service and where the
    service listens."""

    stream: NodeStream
    http: NodeHttp
    host: str
    port: int


def policy_from_options(options: PolicyOptions) -> ReplicationPolicy:
    """The region's policy from its options (``--mode`` ... ``--origin-jurisdiction``);
    raises ``ConfigurationError``."""
    return ReplicationPolicy(
        mode=ReplicationMode(options.mode),
        include=options.include or ("drupal/*",),
        exclude=options.exclude,
        quota_bytes=options.quota,
        jurisdictions=jurisdiction_policy(
            options.allow_jurisdiction,
            own=options.jurisdiction,
            origin=options.origin_jurisdiction,
        ),
    )


def dist_presigner(
    location: StoreLocation, bucket: str, dist: str, store_public_url: str | None
) -> ObjectStore | None:
    """The bucket as clients reach it, to presign dist redirects with (None: the store's own
    endpoint); computes locally, never asks the store. Raises ``ConfigurationError``."""
    if not store_public_url:
        return None
    if dist == "proxy":
        raise ConfigurationError(
            "--store-public-url is for --dist redirect: with --dist proxy clients never "
            "reach the store; drop one of the two"
        )
    return S3Store(location.reached_at(store_public_url), bucket)


# Long because it is the node's composition root: one run of wiring, each step using the last.
def build_node(options: NodeRunOptions) -> BuiltNode:
    """Check ``options``, then prepare the region's store, topics and stream and wire the
    node's HTTP service with its status pages; runs nothing.

    Raises ``ConfigurationError`` for a mistake in the options (before the store or the
    broker is asked, where it can be told without them).
    """
    region = options.region
    listen = options.listen
    data_dir = options.data_dir
    if not REGION_NAME.fullmatch(region):
        raise ConfigurationError(f"region {region!r} must be lower-case letters, digits and dashes")
    host, port = listen_address(listen)
    broker_url, store_url = stack_urls(data_dir, options.broker, options.store)
    topics = Topics.with_prefix(options.topic_prefix)
    peers = tuple(
        parse_peer(spec, lambda path: read_file(path, "peer trust root file"))
        for spec in options.peer_specs
    )
    location = StoreLocation.from_url(store_url)
    bucket = options.bucket or layout.region_bucket(region)
    presigner = dist_presigner(location, bucket, options.dist, options.store_public_url)
    # A mistake in the arguments is reported before the store or the broker is asked.
    bootstrap_servers(broker_url)
    pinned = pinned_root_file(options.root_path)
    replication = with_peer_origins(
        with_peer_namespaces(policy_from_options(options), peers), peers
    )
    make_dir(data_dir / "nodes" / region, "the node's data directory")
    own_key = node_key(options.node_key_path, data_dir, region, listen)
    region_store = open_store(location, bucket)
    region_store.ensure_bucket()
    settings = NodeSettings(
        region=region,
        broker_url=broker_url,
        store=location,
        bucket=bucket,
        public_url=region_public_url(region_store, options.public_url, f"http://{listen}"),
        pinned_root=pinned,
        data_dir=data_dir / "nodes" / region,
        topics=topics,
        session_timeout=options.session_timeout,
        health=HealthRules(
            stuck_after=timedelta(seconds=options.stuck_after), ready_lag=options.ready_lag
        ),
        max_artifact_size=options.max_artifact_size,
        policy=replication,
        pending_interval=options.pending_interval,
        peers=peers,
        node_key=own_key,
        status_interval=options.status_every,
        fault=FaultSpec.parse(options.fault_point) if options.fault_point else None,
        clock_skew=timedelta(seconds=options.clock_skew),
        view_dir=data_dir / "nodes" / region / f"view-{listen.replace(':', '-')}",
        worker_name=f"{region}@{listen}",
        view=options.view,
    )
    ensure_region_topics(broker_url, topics, region, options.partitions)
    try:
        stream = NodeStream(settings)
    except RejectedError as exc:
        raise ConfigurationError(
            f"the pinned trust root {options.root_path} is not a valid signed root ({exc}); "
            "pin the file written by `fairstream trust init`"
        ) from exc
    stream.prepare()
    if not settings.view_in_topic:
        # The node renders packages.json per request; this copy makes the bucket alone a
        # static Composer repository. Written only when it differs, like every document.
        static_root = render_packages_json(patterns=settings.policy.include)
        stored_root = stream.store.get(layout.PACKAGES_JSON)
        if stored_root is None or stored_root.data != static_root:
            stream.store.put_bytes(
                layout.PACKAGES_JSON, static_root, content_type="application/json"
            )
    policy = settings.policy
    http = NodeHttp(
        NodeHttpSettings(
            region=region,
            patterns=policy.include,
            public_url=settings.public_url,
            mirror_artifacts=policy.mirrors_artifacts,
            dist="proxy" if options.dist == "proxy" else "redirect",
            jurisdictions=policy.jurisdictions,
        ),
        stream.store,
        presigner=presigner,
        trust_root=lambda: stream.trust.root,
        states=stream.states,
        documents=stream.local_view.document if stream.local_view is not None else None,
        replicas=stream.replicas.copies,
        peers=stream.replicas.peer_sources,
        on_missing=lambda package, version, record: stream.replicator.request_refetch(
            package, version, record
        ),
        on_download=stream.tally.record,
        on_serve=stream.hot.record_serve,
        clock=stream.now,
        liveness=stream.health,
        readiness=stream.ready,
    )
    rejections = RejectionLog(broker_url, topics.rejected, region=region)
    reporter = stream.reporter
    own_status = NodeOwnStatus(
        registration=reporter.registration if reporter else None,
        last_status=lambda: reporter.last if reporter else None,
        history=lambda: list(reporter.history) if reporter else [],
        states=stream.states,
        store=stream.store,
        trust_root=lambda: stream.trust.root,
        rejections=rejections,
        keeps_zips=policy.mirrors_artifacts,
        title=f"fairstream node · {region}",
        silent_after=timedelta(seconds=MISSED_HEARTBEATS * options.status_every),
    )
    serve_status_pages(http.app, own_status, rejections=rejections, clock=stream.now)
    return BuiltNode(stream=stream, http=http, host=host, port=port)


def run_node(built: BuiltNode) -> None:
    """Run the node's Faust worker with its HTTP service until SIGTERM or Ctrl-C, showing
    the catch-up on stderr (log lines instead of a bar with ``--log-format json``)."""
    stream = built.stream
    uvloop.install()
    logs = log_settings()
    # JSON logs are for a machine even on a terminal: log lines instead of a progress bar.
    terminal = False if logs.format == "json" else None
    with CatchUpProgress(
        Console(file=sys.stderr, soft_wrap=True, force_terminal=terminal)
    ) as catch_up:
        if stream.reporter is not None:
            stream.reporter.listeners.append(catch_up.observe)
        run_worker(
            stream.app,
            HttpServerService(built.http.app, built.host, built.port, logs=logs),
            logs=logs,
        )


@dataclass(frozen=True)
class BuiltFrontend:
    """A frontend prepared and ready to serve, and where it listens."""

    frontend: Frontend
    host: str
    port: int


def build_frontend(options: NodeServeOptions) -> BuiltFrontend:
    """Check ``options``, then wire the region's frontend and prepare it (``Frontend.prepare``:
    the trust root in force, its view caught up, its registration); serves nothing yet.

    Raises ``ConfigurationError`` for a mistake in the options (``--store-public-url``
    with ``--dist proxy`` before the store or the broker is asked).
    """
    # Deferred, as it always was: only `node serve` loads the frontend.
    from services.node.frontend import Frontend, FrontendSettings

    region = options.region
    listen = options.listen
    data_dir = options.data_dir
    host, port = listen_address(listen)
    broker_url, store_url = stack_urls(data_dir, options.broker, options.store)
    topics = Topics.with_prefix(options.topic_prefix)
    location = StoreLocation.from_url(store_url)
    bucket = options.bucket or layout.region_bucket(region)
    # Checked here, before anything is asked of the store or the broker.
    dist_presigner(location, bucket, options.dist, options.store_public_url)
    frontend = Frontend(
        FrontendSettings(
            region=region,
            broker_url=broker_url,
            store=location,
            bucket=bucket,
            dist="proxy" if options.dist == "proxy" else "redirect",
            store_public_url=options.store_public_url or "",
            public_url=options.public_url or f"http://{listen}",
            pinned_root=pinned_root_file(options.root_path),
            policy=policy_from_options(options),
            node_key=node_key(options.node_key_path, data_dir, region, listen),
            view_dir=data_dir / "nodes" / region / f"frontend-{listen.replace(':', '-')}",
            view=options.view,
            topics=topics,
            status_interval=options.status_every,
        )
    )
    frontend.prepare()
    return BuiltFrontend(frontend=frontend, host=host, port=port)


def run_frontend(built: BuiltFrontend) -> None:
    """Serve the frontend's HTTP until SIGTERM or Ctrl-C."""
    serve_app(built.frontend.http.app, built.host, built.port, logs=log_settings())
