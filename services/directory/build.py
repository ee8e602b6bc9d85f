"""The composition root of the directory: ``fairstream directory serve``'s options made into a
running directory.

``build_directory`` checks the options and wires everything (settings, the stream, the
registry fed from the status topic, the HTTP service and its status pages) without running
anything; ``run_directory`` runs what it built. The click command
(``services.directory.cli``) only turns its options into ``DirectoryServeOptions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import uvloop
from aiohttp import web

from connectors.kafka_topics import Topics, ensure_region_topics
from connectors.store import StoreLocation
from schemas import layout
from schemas.errors import ConfigurationError
from schemas.federation import REGION_NAME
from services.cli.options import (
    listen_address,
    log_settings,
    make_dir,
    pinned_root_file,
    stack_urls,
)
from services.directory.http_app import Directory, directory_app
from services.directory.registry import RegionMap, Registry
from services.node.http_app import NodeHttp
from services.node.http_settings import NodeHttpSettings
from services.shared.http_service import HttpServerService
from services.shared.serving import run_worker
from services.shared.status_pages import RejectionLog
from streams.node import NodeStream
from streams.node_settings import NodeSettings
from streams.policy import ReplicationMode, ReplicationPolicy


@dataclass(frozen=True)
class DirectoryServeOptions:
    """The options of ``fairstream directory serve``, as click parses them: one field per
    parameter of the command, with its name and type (``--config`` is not one: it only
    supplies the others). Their meaning is the command's ``--help``."""

    root_path: Path
    name: str
    listen: str
    public_url: str | None
    region_map: tuple[str, ...]
    geo_header: str | None
    silence_window: float
    stale_after: float
    check_every: float
    spot_check_every: float
    self_test_package: str | None
    session_timeout: float
    broker: str | None
    store: str | None
    topic_prefix: str
    partitions: int
    data_dir: Path


@dataclass(frozen=True)
class BuiltDirectory:
    """A directory wired and ready to run: its stream worker, the registry's service (not
    started yet), its HTTP app and where the app listens."""

    stream: NodeStream
    service: Directory
    app: web.Application
    host: str
    port: int


def build_directory(options: DirectoryServeOptions) -> BuiltDirectory:
    """Check ``options``, then prepare the directory's topics and stream and wire its
    registry and its HTTP service with the network's status pages; runs nothing.

    Raises ``ConfigurationError`` for a mistake in the options (``--name``,
    ``--region-map``, ``--listen`` before anything is asked of the broker or the store).
    """
    name = options.name
    listen = options.listen
    data_dir = options.data_dir
    if not REGION_NAME.fullmatch(name):
        raise ConfigurationError(f"--name {name!r} must be lower-case letters, digits and dashes")
    try:
        regions = RegionMap.parse(options.region_map, geo_header=options.geo_header)
    except ValueError as exc:
        raise ConfigurationError(f"--region-map {exc}") from None
    host, port = listen_address(listen)
    broker_url, store_url = stack_urls(data_dir, options.broker, options.store)
    topics = Topics.with_prefix(options.topic_prefix)
    settings = NodeSettings(
        region=name,
        broker_url=broker_url,
        store=StoreLocation.from_url(store_url),
        bucket=layout.region_bucket(name),
        public_url=options.public_url or f"http://{listen}",
        pinned_root=pinned_root_file(options.root_path),
        data_dir=make_dir(data_dir / "directories" / name, "the directory's data directory"),
        topics=topics,
        session_timeout=options.session_timeout,
        policy=ReplicationPolicy(mode=ReplicationMode.METADATA_ONLY),
        worker_name=f"directory-{name}@{listen}",
    )
    ensure_region_topics(broker_url, topics, name, options.partitions)
    stream = NodeStream(settings)
    stream.prepare()
    service = Directory(
        broker_url=broker_url,
        status_topic=topics.status,
        states=stream.states,
        registry=Registry(
            silence_window=timedelta(seconds=options.silence_window),
            stale_after=timedelta(seconds=options.stale_after),
            spot_check_every=timedelta(seconds=options.spot_check_every),
        ),
        regions=regions,
        check_every=options.check_every,
        self_test_package=options.self_test_package,
    )
    app = _http_app(stream, service)
    return BuiltDirectory(stream=stream, service=service, app=app, host=host, port=port)


def _http_app(stream: NodeStream, service: Directory) -> web.Application:
    """The directory's HTTP: the catalogue as a Composer repository whose dist answers
    ``service`` routes, ``/nodes.json`` and the network's status pages."""
    settings = stream.settings
    http = NodeHttp(
        NodeHttpSettings(
            region=settings.region,
            patterns=settings.policy.include,
            public_url=settings.public_url,
            mirror_artifacts=False,
            service="directory",
        ),
        stream.store,
        trust_root=lambda: stream.trust.root,
        states=stream.states,
        documents=stream.local_view.document if stream.local_view is not None else None,
        dist_router=service.route,
        liveness=stream.health,
    )
    return directory_app(
        http,
        service,
        trust_root=lambda: stream.trust.root,
        rejections=RejectionLog(settings.broker_url, settings.topics.rejected),
    )


def run_directory(built: BuiltDirectory) -> None:
    """Start following the status topic, then run the directory's Faust worker with its HTTP
    service until SIGTERM or Ctrl-C."""
    built.service.start()
    uvloop.install()
    logs = log_settings()
    run_worker(
        built.stream.app, HttpServerService(built.app, built.host, built.port, logs=logs), logs=logs
    )
