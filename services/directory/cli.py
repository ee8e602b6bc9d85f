"""``fairstream directory``: serve the directory (``serve``) and a meta-directory (``refer``).

``register(cli)`` adds the group to the ``fairstream`` command.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
import uvloop

from connectors.kafka import Topics, ensure_region_topics
from connectors.store import StoreLocation
from schemas import layout
from schemas.errors import ConfigurationError
from schemas.federation import REGION_NAME
from services.cli.options import (
    BROKER_OPTION,
    DATA_DIR_OPTION,
    GEO_HEADER_OPTION,
    HTTP_URL,
    PARTITIONS_OPTION,
    REGION_MAP_OPTION,
    STORE_OPTION,
    TOPIC_PREFIX_OPTION,
    listen_address,
    log_settings,
    make_dir,
    pinned_root_file,
    stack_urls,
)
from services.directory.http_app import Directory, directory_app
from services.directory.meta_cli import register as register_refer
from services.directory.registry import RegionMap, Registry
from services.node.config import configurable
from services.node.http_app import NodeHttp, NodeHttpSettings
from services.shared.http_service import HttpServerService
from services.shared.serving import run_worker
from services.shared.status_pages import RejectionLog
from streams.node import NodeSettings, NodeStream
from streams.policy import ReplicationMode, ReplicationPolicy


def register(group: click.Group) -> None:
    """Add ``directory`` (serve, refer) to ``group``."""
    group.add_command(directory)


@click.group()
def directory() -> None:
    """The directory: the Composer repository URL site builders configure once.

    \b
    Example: fairstream directory serve --root root.avro \\
      --region-map 10.0.0.0/8=eu
    """


@configurable
@directory.command("serve")
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The pinned trust root; the directory verifies every event itself.",
)
@click.option(
    "--name", default="directory", show_default=True, help="Its consumer group and bucket name."
)
@click.option(
    "--listen", default="127.0.0.1:8090", show_default=True, help="HOST:PORT to serve on."
)
@click.option(
    "--public-url",
    type=HTTP_URL,
    default=None,
    help="URL clients reach it at  [default: http://LISTEN]",
)
@REGION_MAP_OPTION
@GEO_HEADER_OPTION
@click.option(
    "--silence-window",
    type=click.FloatRange(1),
    default=24 * 3600.0,
    show_default=True,
    help="Seconds after which a silent node is dropped (it is re-tested when it returns).",
)
@click.option(
    "--stale-after",
    type=click.FloatRange(0.5),
    default=30.0,
    show_default=True,
    help="Seconds without a heartbeat after which a node is sent no clients.",
)
@click.option(
    "--check-every",
    type=click.FloatRange(0.2),
    default=2.0,
    show_default=True,
    help="Seconds between admission rounds (self-tests of new, returning and refused nodes).",
)
@click.option(
    "--spot-check-every",
    type=click.FloatRange(0.2),
    default=60.0,
    show_default=True,
    help="Seconds between spot checks of an admitted node (a random version it claims to "
    "have applied, its p2 entry and zip checked against the signed sha1); one failure "
    "refuses it.",
)
@click.option(
    "--self-test-package",
    default=None,
    help="The package whose metadata and smallest zip a node must serve to be admitted "
    "[default: the first one the node serves]",
)
@click.option("--session-timeout", type=click.FloatRange(1, 300), default=10.0, show_default=True)
@BROKER_OPTION
@STORE_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@DATA_DIR_OPTION
def directory_serve(
    root_path: Path,
    name: str,
    listen: str,
    public_url: str | None,
    region_map: tuple[str, ...],
    geo_header: str | None,
    silence_window: float,
    stale_after: float,
    check_every: float,
    spot_check_every: float,
    self_test_package: str | None,
    session_timeout: float,
    broker: str | None,
    store: str | None,
    topic_prefix: str,
    partitions: int,
    data_dir: Path,
) -> None:
    """Serve the catalogue to Composer and send each download to the best admitted,
    in-sync node of the client's region (else another region's, else the signed origin).

    \b
    Example: fairstream directory serve --root root.avro --listen 0.0.0.0:8090 \\
      --public-url https://packages.example.org \\
      --region-map 10.0.0.0/8=eu --region-map 192.168.0.0/16=us
    """
    if not REGION_NAME.fullmatch(name):
        raise ConfigurationError(f"--name {name!r} must be lower-case letters, digits and dashes")
    try:
        regions = RegionMap.parse(region_map, geo_header=geo_header)
    except ValueError as exc:
        raise ConfigurationError(f"--region-map {exc}") from None
    host, port = listen_address(listen)
    broker_url, store_url = stack_urls(data_dir, broker, store)
    topics = Topics.with_prefix(topic_prefix)
    settings = NodeSettings(
        region=name,
        broker_url=broker_url,
        store=StoreLocation.from_url(store_url),
        bucket=layout.region_bucket(name),
        public_url=public_url or f"http://{listen}",
        pinned_root=pinned_root_file(root_path),
        data_dir=make_dir(data_dir / "directories" / name, "the directory's data directory"),
        topics=topics,
        session_timeout=session_timeout,
        policy=ReplicationPolicy(mode=ReplicationMode.METADATA_ONLY),
        worker_name=f"directory-{name}@{listen}",
    )
    ensure_region_topics(broker_url, topics, name, partitions)
    stream = NodeStream(settings)
    stream.prepare()
    service = Directory(
        broker_url=broker_url,
        status_topic=topics.status,
        states=stream.states,
        registry=Registry(
            silence_window=timedelta(seconds=silence_window),
            stale_after=timedelta(seconds=stale_after),
            spot_check_every=timedelta(seconds=spot_check_every),
        ),
        regions=regions,
        check_every=check_every,
        self_test_package=self_test_package,
    )
    service.start()
    http = NodeHttp(
        NodeHttpSettings(
            region=name,
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
    uvloop.install()
    app = directory_app(
        http,
        service,
        trust_root=lambda: stream.trust.root,
        rejections=RejectionLog(broker_url, topics.rejected),
    )
    logs = log_settings()
    run_worker(stream.app, HttpServerService(app, host, port, logs=logs), logs=logs)


register_refer(directory)
