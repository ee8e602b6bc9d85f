"""``fairstream node``: a regional node's commands (run, serve, rebuild, nginx-config).

``register(cli)`` adds the group to the ``fairstream`` command. ``node run`` only turns
its options into ``NodeRunOptions``: ``services.node.build`` builds and runs the node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.kafka import EventProducer, Topics, bootstrap_servers
from connectors.state_store import PackageStates
from connectors.store import StoreLocation, open_store
from schemas import layout
from schemas.events import DEFAULT_MAX_ARTIFACT_SIZE
from schemas.package_state import render_documents
from services.cli.options import (
    BROKER_OPTION,
    BYTE_SIZE,
    DATA_DIR_OPTION,
    HTTP_URL,
    NODE_KEY_OPTION,
    PARTITIONS_OPTION,
    STATUS_EVERY_OPTION,
    STORE_OPTION,
    TOPIC_PREFIX_OPTION,
    listen_address,
    log_settings,
    node_key,
    pinned_root_file,
    stack_urls,
)
from services.node.build import (
    NodeRunOptions,
    build_node,
    dist_presigner,
    policy_from_options,
    run_node,
)
from services.node.config import configurable
from services.node.http_app import DIST_MODES
from services.node.nginx_front import nginx_config
from services.shared.serving import serve_app
from streams.health import DEFAULT_READY_LAG, DEFAULT_STUCK_AFTER
from streams.node import region_public_url
from streams.policy import ReplicationMode
from streams.rebuild import (
    BucketTarget,
    RebuildTarget,
    ViewTarget,
    log_partitions,
    read_region_view,
    rebuild_region,
)
from streams.trust_keeper import TrustKeeper

console = Console(soft_wrap=True)


def register(group: click.Group) -> None:
    """Add ``node`` (run, serve, rebuild, nginx-config) to ``group``."""
    group.add_command(node)


_POLICY_OPTIONS = [
    click.option(
        "--mode",
        type=click.Choice([m.value for m in ReplicationMode]),
        default=ReplicationMode.FULL.value,
        show_default=True,
        help="full: copy every zip into the region's store; metadata-only: serve metadata and "
        "redirect downloads to a verified replica or the origin.",
    ),
    click.option(
        "--include",
        multiple=True,
        metavar="PATTERN",
        help="Serve only packages matching these globs (a partial mirror)  [default: drupal/*]",
    ),
    click.option(
        "--exclude",
        multiple=True,
        metavar="PATTERN",
        help="Never serve packages matching these globs.",
    ),
    click.option(
        "--quota",
        type=BYTE_SIZE,
        default=None,
        help="Keep at most this much zip data (20G, 20 GiB, 500MB or bytes; K, M, G, T are "
        "powers of 1024); cold zips are evicted beyond it.",
    ),
    click.option(
        "--jurisdiction",
        default=None,
        metavar="CODE",
        help="Where this region holds and serves its bytes (EU, DE, US-gov), declared in its "
        "nodes' signed registrations and replica announcements: what sovereign regions "
        "decide by  [default: not declared]",
    ),
    click.option(
        "--allow-jurisdiction",
        "allow_jurisdiction",
        multiple=True,
        metavar="[PURPOSE=]CODE[,CODE]",
        help="Make the region sovereign: fetch zips from, send clients to (dist, mirrors) and "
        "be routed by the directory to only sources and nodes of these jurisdictions "
        "(repeatable; PURPOSE fetch, redirect or route restricts one; docs/sovereignty.md)  "
        "[default: any]",
    ),
    click.option(
        "--origin-jurisdiction",
        default=None,
        metavar="CODE",
        help="The signed origin's jurisdiction as you know it (the origin declares none): a "
        "sovereign region fetches from and redirects to the origin only if it is allowed  "
        "[default: not declared]",
    ),
]


def policy_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options that choose what a region replicates (``ReplicationPolicy``)."""
    for option in reversed(_POLICY_OPTIONS):
        command = option(command)
    return command


@click.group()
def node() -> None:
    """A regional node: stream worker and Composer repository.

    Example: fairstream node run --region eu --root root.avro
    """


VIEW_OPTION = click.option(
    "--view",
    "view",
    type=click.Choice(["topic", "bucket"]),
    default="topic",
    show_default=True,
    help="Where the region's package states and p2 live: the region's view topic with a local "
    "view per process (sqlite, p2 in memory, a docroot for `node nginx-config`; ADR 5), or the "
    "bucket (the earlier design, ADR 4). Every worker, frontend and rebuild of a region uses "
    "the same.",
)
DIST_OPTION = click.option(
    "--dist",
    type=click.Choice(DIST_MODES),
    default="redirect",
    show_default=True,
    help="How a zip held here is answered: redirect (302 to a presigned URL of the store, "
    "which clients must reach: the --store endpoint, or --store-public-url) or proxy (sent "
    "through the node, streamed, byte ranges answered, a whole download checked against "
    "its signed sha256 and sha1; for a store clients cannot reach).",
)
STORE_PUBLIC_URL_OPTION = click.option(
    "--store-public-url",
    default=None,
    metavar="URL",
    help="The store's endpoint as clients reach it, http(s)://HOST[:PORT] (a load balancer "
    "in front of MinIO that keeps the Host header): --dist redirect presigns for it  "
    "[default: the --store endpoint]",
)


@configurable
@node.command("run")
@VIEW_OPTION
@click.option("--region", required=True, help="The node's region; one consumer group per region.")
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The pinned trust root (from `fairstream trust init`); rotations follow from the trust topic.",
)
@click.option(
    "--max-artifact-size",
    type=BYTE_SIZE,
    default=DEFAULT_MAX_ARTIFACT_SIZE,
    show_default="1G",
    help="Refuse release zips larger than this (1G, 500MB, 2 GiB or bytes; K, M, G, T are "
    "powers of 1024).",
)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT of the node's HTTP server.",
)
@click.option(
    "--public-url",
    type=HTTP_URL,
    default=None,
    help="The region's public URL, recorded in its bucket for every worker  [default: the "
    "recorded one, else http://LISTEN]",
)
@DIST_OPTION
@STORE_PUBLIC_URL_OPTION
@click.option("--bucket", default=None, help="The region's bucket  [default: fairstream-REGION]")
@click.option(
    "--session-timeout",
    type=click.FloatRange(1, 300),
    default=10.0,
    show_default=True,
    help="Consumer group session timeout in seconds (Tansu joins in about half of it).",
)
@click.option(
    "--stuck-after",
    type=click.FloatRange(5, 86400),
    default=DEFAULT_STUCK_AFTER.total_seconds(),
    show_default=True,
    help="Seconds without progress (one batch in progress, or records waiting and no batch "
    "finished) after which /health calls the worker stuck and answers 503.",
)
@click.option(
    "--ready-lag",
    type=click.IntRange(0),
    default=DEFAULT_READY_LAG,
    show_default=True,
    help="Records behind on its partitions beyond which /ready answers 503 (send it no "
    "clients while it catches up).",
)
@policy_options
@click.option(
    "--retry-parked-every",
    "pending_interval",
    type=click.FloatRange(0.5, 3600),
    default=15.0,
    show_default=True,
    help="Seconds between looks at zips no source delivered yet (the first retry waits as long).",
)
@click.option(
    "--peer",
    "peer_specs",
    multiple=True,
    metavar="NAME:policy=P,broker=URL,...",
    help="Follow another network's releases topic (repeatable). NAME:KEY=VALUE,... with keys "
    "policy (canonical, source or refuse), broker (a URL as --broker takes), topic [default: "
    "fair.releases], root (the peer's own signed trust root file) and namespace (VENDOR/*, "
    "canonical only, repeatable). canonical: its packages in those namespaces are applied and "
    "served here; source: its zip URLs only become download sources; refuse: its records are "
    "recorded as rejected. No peer can publish drupal/* or what our trust root delegates.",
)
@NODE_KEY_OPTION
@STATUS_EVERY_OPTION
@click.option(
    "--fault-point",
    "fault_point",
    default=None,
    hidden=True,
    help="For the fault harness only: NAME[@N] kills this worker at that point (streams/faults.py).",
)
@click.option(
    "--clock-skew",
    "clock_skew",
    type=float,
    default=0.0,
    hidden=True,
    help="For the fault harness only: seconds added to this node's wall clock.",
)
@BROKER_OPTION
@STORE_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@DATA_DIR_OPTION
def node_run(**options: Any) -> None:
    """Replicate the releases topic into this region's store and serve it to Composer.

    Run it again with the same --region (and another --listen) to add a worker: the
    workers of a region share its partitions and its bucket.

    \b
    Example: fairstream node run --region eu --root root.avro \\
      --listen 127.0.0.1:8081 --mode full --include 'drupal/*' \\
      --exclude 'drupal/legacy_*' --quota 20G

    A node that also follows a peer network's releases:

    \b
    Example: fairstream node run --region eu --root root.avro --peer \\
      'typo3:policy=canonical,broker=kafka://kafka.typo3.example:9092,root=peers/typo3-root.avro,namespace=typo3/*'
    """
    run_node(build_node(NodeRunOptions(**options)))


@node.command("serve")
@VIEW_OPTION
@click.option("--region", required=True, help="The region whose bucket to serve.")
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The region's pinned trust root; rotations follow from the trust topic.",
)
@click.option(
    "--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to serve on."
)
@click.option(
    "--public-url",
    type=HTTP_URL,
    default=None,
    help="URL clients reach it at  [default: http://LISTEN]",
)
@DIST_OPTION
@STORE_PUBLIC_URL_OPTION
@click.option("--bucket", default=None, help="The region's bucket  [default: fairstream-REGION]")
@policy_options
@NODE_KEY_OPTION
@STATUS_EVERY_OPTION
@BROKER_OPTION
@STORE_OPTION
@TOPIC_PREFIX_OPTION
@DATA_DIR_OPTION
def node_serve(
    view: str,
    region: str,
    root_path: Path,
    listen: str,
    public_url: str | None,
    dist: str,
    store_public_url: str | None,
    bucket: str | None,
    mode: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    quota: int | None,
    jurisdiction: str | None,
    allow_jurisdiction: tuple[str, ...],
    origin_jurisdiction: str | None,
    node_key_path: Path | None,
    status_every: float,
    broker: str | None,
    store: str | None,
    topic_prefix: str,
    data_dir: Path,
) -> None:
    """Serve a region's bucket to Composer without consuming the log: an HTTP frontend.

    The region's workers (`node run`) write the bucket; a frontend only reads it, so it
    keeps serving every version the region applied while the workers are stopped or
    behind. It registers and sends heartbeats with the region's sync state. p2 comes from
    the bucket as the workers wrote it, so in production put workers and frontends behind
    the region's one public URL (their --public-url).

    \b
    Example: fairstream node serve --region eu --root root.avro \\
      --listen 0.0.0.0:8080 --public-url https://eu.packages.example.org
    """
    from services.node.frontend import Frontend, FrontendSettings

    host, port = listen_address(listen)
    broker_url, store_url = stack_urls(data_dir, broker, store)
    topics = Topics.with_prefix(topic_prefix)
    location = StoreLocation.from_url(store_url)
    bucket = bucket or layout.region_bucket(region)
    # Checked here, before anything is asked of the store or the broker.
    dist_presigner(location, bucket, dist, store_public_url)
    frontend = Frontend(
        FrontendSettings(
            region=region,
            broker_url=broker_url,
            store=location,
            bucket=bucket,
            dist="proxy" if dist == "proxy" else "redirect",
            store_public_url=store_public_url or "",
            public_url=public_url or f"http://{listen}",
            pinned_root=pinned_root_file(root_path),
            policy=policy_from_options(
                mode,
                include,
                exclude,
                quota,
                jurisdiction=jurisdiction,
                allow=allow_jurisdiction,
                origin=origin_jurisdiction,
            ),
            node_key=node_key(node_key_path, data_dir, region, listen),
            view_dir=data_dir / "nodes" / region / f"frontend-{listen.replace(':', '-')}",
            view=view,
            topics=topics,
            status_interval=status_every,
        )
    )
    frontend.prepare()
    serve_app(frontend.http.app, host, port, logs=log_settings())


@node.command("rebuild")
@VIEW_OPTION
@click.option("--region", required=True, help="The region whose metadata to re-derive.")
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The region's pinned trust root; rotations follow from the trust topic.",
)
@click.option(
    "--public-url",
    type=HTTP_URL,
    required=True,
    help="The URL the region's nodes are reached at (dist URLs in p2 are built on it).",
)
@click.option("--bucket", default=None, help="The region's bucket  [default: fairstream-REGION]")
@click.option(
    "--max-artifact-size",
    type=BYTE_SIZE,
    default=DEFAULT_MAX_ARTIFACT_SIZE,
    show_default="1G",
    help="Refuse release zips larger than this, as the nodes do (1G, 500MB, 2 GiB or bytes).",
)
@policy_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print what was rebuilt as a JSON document instead of text, without the progress "
    "bar (its fields: docs/operator-guide.md).",
)
@BROKER_OPTION
@STORE_OPTION
@TOPIC_PREFIX_OPTION
@DATA_DIR_OPTION
def node_rebuild(
    view: str,
    region: str,
    root_path: Path,
    public_url: str,
    bucket: str | None,
    max_artifact_size: int,
    mode: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    quota: int | None,
    jurisdiction: str | None,
    allow_jurisdiction: tuple[str, ...],
    origin_jurisdiction: str | None,
    as_json: bool,
    broker: str | None,
    store: str | None,
    topic_prefix: str,
    data_dir: Path,
) -> None:
    """Re-derive every package state and p2 document of a region from the log and the store.

    Reads the releases topic from offset 0, verifies each event, and writes only what
    differs (a healthy region ends byte-identical). Zips a full mirror lacks are parked
    for the nodes to fetch; metadata of packages the log no longer gives is removed.
    Safe while the region's nodes run.

    \b
    Example: fairstream node rebuild --region eu --root root.avro \\
      --public-url https://eu.packages.example.org --json
    """
    broker_url, store_url = stack_urls(data_dir, broker, store)
    topics = Topics.with_prefix(topic_prefix)
    policy = policy_from_options(
        mode,
        include,
        exclude,
        quota,
        jurisdiction=jurisdiction,
        allow=allow_jurisdiction,
        origin=origin_jurisdiction,
    )
    pinned = pinned_root_file(root_path)
    bootstrap_servers(broker_url)
    objects = open_store(store_url, bucket or layout.region_bucket(region))
    objects.ensure_bucket()
    keeper = TrustKeeper(
        pinned,
        store=objects,
        broker_url=broker_url,
        topic=topics.trust,
    )
    keeper.load()
    keeper.refresh()
    # The region's workers render with the URL the rebuild renders with from now on.
    public_url = region_public_url(objects, public_url, public_url)
    producer = EventProducer(broker_url)
    # With --json, stdout is the document's alone: progress on a terminal's stderr, or none.
    shown = Console(stderr=True, soft_wrap=True) if as_json else console
    states: RebuildTarget
    if view == "topic":
        view_topic = topics.view(region)
        with shown.status(f"reading the view of region {region}"):
            current = read_region_view(broker_url, view_topic, producer)
        states = ViewTarget(
            current,
            producer=producer,
            topic=view_topic,
            render=lambda state: render_documents(state, public_url),
        )
    else:
        states = BucketTarget(
            objects,
            PackageStates(objects, render=lambda state: render_documents(state, public_url)),
        )
    with Progress(
        TextColumn("[bold]rebuild {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=shown,
        disable=not shown.is_terminal and as_json,
    ) as progress:
        task = progress.add_task(region, total=None)
        report = rebuild_region(
            topics.releases,
            log_partitions(broker_url, topics.releases),
            store=objects,
            states=states,
            root=keeper.root,
            policy=policy,
            max_artifact_size=max_artifact_size,
            on_record=lambda: progress.advance(task),
        )
    producer.close()
    if as_json:
        document = {
            "region": region,
            "view": view,
            "public_url": public_url,
            "records": report.records,
            "packages": report.packages,
            "states_written": report.states_written,
            "documents_written": report.documents_written,
            "fetches_parked": report.fetches_parked,
            "removed": sorted(report.removed),
            "kept_from_earlier_roots": report.kept_from_earlier_roots,
            "refused": dict(sorted(report.refused.items())),
        }
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    console.print(
        f"rebuilt region {region}: {report.records} records, {report.packages} packages; "
        f"{report.states_written} states and {report.documents_written} p2 documents written, "
        f"{report.fetches_parked} zips parked for fetching, {len(report.removed)} packages removed"
    )
    if report.kept_from_earlier_roots:
        console.print(
            f"  {report.kept_from_earlier_roots} records kept as applied under an earlier root"
        )
    for reason, count in sorted(report.refused.items()):
        console.print(f"  {count} records refused: {reason}")


node.add_command(nginx_config)
