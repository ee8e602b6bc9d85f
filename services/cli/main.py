"""The ``fairstream`` command: the composition root of every CLI process."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import click
import orjson
import uvloop
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from connectors.kafka import (
    EventProducer,
    Topics,
    bootstrap_servers,
    ensure_region_topics,
    ensure_topics,
)
from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.store import S3Store, StoreLocation, open_store
from infra import devstack
from infra.devtools.catalogue_cli import register as register_catalogue
from infra.devtools.demo import run_demo
from infra.devtools.origin_http import origin_app
from schemas import layout
from schemas.composer import render_packages_json
from schemas.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    FairstreamError,
    RejectedError,
    StoreUnavailableError,
    TransientError,
)
from schemas.events import DEFAULT_MAX_ARTIFACT_SIZE
from schemas.federation import MISSED_HEARTBEATS, REGION_NAME, SILENT_AFTER
from schemas.package_state import render_documents
from schemas.signing import SigningKey
from schemas.trust import TrustRoot, load_pinned_root, verify_root_update
from services.cli.config import register as register_config
from services.cli.options import (
    BROKER_OPTION,
    BYTE_SIZE,
    DATA_DIR_OPTION,
    GEO_HEADER_OPTION,
    HTTP_URL,
    NODE_KEY_OPTION,
    PARTITIONS_OPTION,
    REGION_MAP_OPTION,
    SIGNERS_ROOT_OPTION,
    SIGNING_KEY_OPTION,
    STATUS_EVERY_OPTION,
    STORE_OPTION,
    TOPIC_PREFIX_OPTION,
    check_signers,
    listen_address,
    log_settings,
    make_dir,
    node_key,
    pinned_root,
    pinned_root_file,
    read_file,
    signers_root,
    stack_urls,
    write_file,
)
from services.cli.options import broker_url as resolve_broker
from services.cli.status import (
    UNKNOWN,
    FederationCheck,
    check_federation,
    directory_admissions,
    federation_table,
    read_node_book,
    redraw,
)
from services.directory.http_app import Directory, directory_app
from services.directory.meta_cli import register as register_meta_directory
from services.directory.registry import RegionMap, Registry
from services.importer.cli import register as register_import
from services.node.catch_up import CatchUpProgress
from services.node.config import configurable
from services.node.http_app import DIST_MODES, NodeHttp, NodeHttpSettings
from services.node.nginx_front import nginx_config
from services.publishing.cli import register as register_publishing
from services.publishing.publisher import build_release, publish_release
from services.publishing.trust_admin import (
    DelegationSpec,
    build_root,
    public_of,
    read_key,
    signing_keys,
    write_key_pair,
)
from services.shared.http_service import HttpServerService
from services.shared.logs import (
    LOG_FORMATS,
    LOG_LEVELS,
    LogFormat,
    LogLevel,
    LogSettings,
    configure_logging,
    logs_json,
)
from services.shared.serving import INTERRUPTED, run_worker, serve_app
from services.shared.status_pages import NodeOwnStatus, RejectionLog, serve_status_pages
from streams.faults import FaultSpec
from streams.health import DEFAULT_READY_LAG, DEFAULT_STUCK_AFTER, HealthRules
from streams.node import NodeSettings, NodeStream, region_public_url
from streams.peering import parse_peer, with_peer_namespaces
from streams.policy import ReplicationMode, ReplicationPolicy
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
#: The width tables are laid out in when stdout is not a terminal: wide enough that no
#: row is wrapped (a table takes only the width its cells need).
UNWRAPPED_WIDTH = 1000


#: The exit status of `dev status` when the stack is not (all) running, as LSB's and
#: systemctl's "program is not running".
NOT_RUNNING = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_name="fairstream", prog_name="fairstream", message="%(prog)s %(version)s"
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="FAIRSTREAM_LOG_LEVEL",
    help="The least severe log records written to stderr, for every command.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default="text",
    show_default=True,
    envvar="FAIRSTREAM_LOG_FORMAT",
    help="text: one line per record; json: one JSON object per line (time, level, logger, "
    "message, ...).",
)
@click.option(
    "--access-log",
    is_flag=True,
    envvar="FAIRSTREAM_ACCESS_LOG",
    help="Log every HTTP request the command's servers answer (logger aiohttp.access, in "
    "the --log-format), whatever the --log-level.",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str, access_log: bool) -> None:
    """fairstream: federated, event-streamed distribution of Drupal's Composer packages.

    The log options come before the command, or from FAIRSTREAM_LOG_LEVEL,
    FAIRSTREAM_LOG_FORMAT and FAIRSTREAM_ACCESS_LOG.

    \b
    Example: fairstream --log-format json --access-log \\
      node run --region eu --root root.avro
    """
    logs = LogSettings(
        level=cast(LogLevel, log_level), format=cast(LogFormat, log_format), access_log=access_log
    )
    configure_logging(logs)
    ctx.obj = logs


@cli.group()
def dev() -> None:
    """The embedded stack: a Tansu broker and an rclone S3 server on loopback.

    Example: fairstream dev up && fairstream dev status && fairstream dev down
    """


@dev.command("up")
@DATA_DIR_OPTION
@click.option(
    "--broker-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Loopback port of the Tansu broker  [default: a free port]",
)
@click.option(
    "--store-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Loopback port of the rclone S3 server  [default: a free port]",
)
def dev_up(data_dir: Path, broker_port: int | None, store_port: int | None) -> None:
    """Start the broker and the S3 store on loopback, detached; a running stack is kept.

    Example: fairstream dev up --broker-port 9092 --store-port 9000
    """
    from rich.text import Text

    stack = devstack.up(data_dir, broker_port=broker_port, store_port=store_port)
    table = Table("component", "address", "pid", title=Text(f"dev stack in {stack.data_dir}"))
    table.add_column("log", overflow="fold")
    for process in stack.processes:
        table.add_row(process.name, process.address, str(process.pid), Text(str(process.log)))
    console.print(table)
    console.print("Point fairstream at it with:")
    console.print(
        f"export FAIRSTREAM_BROKER_URL={stack.broker_url} FAIRSTREAM_STORE_URL={stack.store_url}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@dev.command("down")
@DATA_DIR_OPTION
def dev_down(data_dir: Path) -> None:
    """Stop the processes `dev up` started in this data directory, and only those.

    Example: fairstream dev down --data-dir .fairstream
    """
    stopped = devstack.down(data_dir)
    if not stopped:
        console.print(f"Nothing was running in {data_dir}.", markup=False, highlight=False)
    for process in stopped:
        console.print(
            f"stopped {process.name} (pid {process.pid}, {process.address})",
            markup=False,
            highlight=False,
        )


@dev.command("status")
@DATA_DIR_OPTION
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON document instead of the table (its fields: docs/operator-guide.md); "
    "same exit code.",
)
def dev_status(data_dir: Path, as_json: bool) -> None:
    """Show each recorded process of the dev stack and whether it runs.

    Exits 0 when every component runs, and 3 (as `systemctl status` for a unit that is not
    running) when no stack is recorded in the data directory or a component is down.

    Example: fairstream dev status --data-dir .fairstream

    \b
    Example: fairstream dev status --json
    """
    from rich.text import Text

    processes = devstack.status(data_dir)
    if as_json:
        running = bool(processes) and all(up for _, up in processes)
        code = 0 if running else NOT_RUNNING
        stack = devstack.read_stack(data_dir) if processes else None
        document = {
            "data_dir": str(data_dir.absolute()),
            "recorded": bool(processes),
            "running": running,
            "exit_code": code,
            "broker_url": stack.broker_url if stack else None,
            "store_url": stack.store_url if stack else None,
            "components": [
                {
                    "name": process.name,
                    "address": process.address,
                    "pid": process.pid,
                    "running": up,
                    "log": str(process.log),
                }
                for process, up in processes
            ],
        }
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        sys.exit(code)
    if not processes:
        console.print(
            f"No dev stack is recorded in {data_dir}; start one with `fairstream dev up`.",
            markup=False,
            highlight=False,
        )
        sys.exit(NOT_RUNNING)
    table = Table("component", "address", "pid", "running", title=Text(f"dev stack in {data_dir}"))
    for process, running in processes:
        table.add_row(
            process.name, process.address, str(process.pid), "yes" if running else "[red]no[/]"
        )
    console.print(table)
    if not all(running for _, running in processes):
        sys.exit(NOT_RUNNING)


@dev.command("env")
@DATA_DIR_OPTION
def dev_env(data_dir: Path) -> None:
    """Print shell lines that point this shell at the running embedded stack: the fairstream
    variables (so commands work from any folder), BROKER (host:port, as `kcat -b` takes it)
    and LD_LIBRARY_PATH (Debian's kcat cannot speak to the embedded broker with its own
    librdkafka; this links the newer one of the confluent-kafka wheel; development only).
    Use it as: eval "$(fairstream dev env)"; kcat -b "$BROKER" -L

    Example: fairstream dev env --data-dir .fairstream
    """
    import shlex

    broker, store = stack_urls(data_dir, None, None)
    library_path = devstack.kcat_library_path(data_dir)
    for name, value in (
        ("FAIRSTREAM_DATA_DIR", str(data_dir.absolute())),
        ("FAIRSTREAM_BROKER_URL", broker),
        ("FAIRSTREAM_STORE_URL", store),
        ("BROKER", bootstrap_servers(broker)),
    ):
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo(
        f"export LD_LIBRARY_PATH={shlex.quote(library_path)}"
        '"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"'
    )


@cli.group()
def keys() -> None:
    """Ed25519 keys of publishers.

    Example: fairstream keys generate keys/drupal
    """


@keys.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_generate(path: Path) -> None:
    """Write a new key pair: PATH.key (private, mode 600) and PATH.pub (public).

    Example: fairstream keys generate keys/drupal
    """
    private_path = path.with_suffix(".key")
    if private_path.exists() or private_path.with_suffix(".pub").exists():
        raise ConfigurationError(
            f"{private_path} or its .pub already exists; choose another name or remove them first"
        )
    key = SigningKey.generate()
    try:
        public_path = write_key_pair(key, private_path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write key file {private_path}: {exc.strerror} ({exc.filename}); choose a "
            "path in a directory you may write to"
        ) from exc
    console.print(f"key id {key.public_key.keyid}\nprivate {private_path}\npublic  {public_path}")


@cli.command()
@click.argument("package")
@click.argument("drupal_version")
@click.option(
    "--zip",
    "zip_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The release zip (one top directory).",
)
@click.option("--origin-url", required=True, help="Where nodes download the zip from.")
@SIGNING_KEY_OPTION
@click.option(
    "--require",
    "requires",
    multiple=True,
    metavar="NAME:CONSTRAINT",
    help="A Composer requirement, overriding the zip's composer.json; repeatable.",
)
@click.option(
    "--rebuild-of",
    default=None,
    metavar="SHA256",
    help="A new build of a dev version (1.x-dev): the sha256 of the build it replaces, the "
    "one nodes serve now (their /status/packages/NAME page shows it). Tagged versions are "
    "immutable: nodes refuse a rebuild of one.",
)
@SIGNERS_ROOT_OPTION
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@DATA_DIR_OPTION
def publish(
    package: str,
    drupal_version: str,
    zip_path: Path,
    origin_url: str,
    key_paths: tuple[Path, ...],
    requires: tuple[str, ...],
    rebuild_of: str | None,
    root_path: Path | None,
    broker: str | None,
    topic_prefix: str,
    partitions: int,
    data_dir: Path,
) -> None:
    """Sign one release and produce it to the releases topic; prints where it landed.

    \b
    Example: fairstream publish drupal/token 8.x-1.9 --zip token-8.x-1.9.zip \\
      --origin-url https://ftp.drupal.org/files/projects/token-8.x-1.9.zip \\
      --key keys/drupal.key
    """
    keys = signing_keys(key_paths)
    metadata: dict[str, object] = {}
    if requires:
        pairs = [r.split(":", 1) for r in requires]
        if any(len(pair) != 2 for pair in pairs):
            raise ConfigurationError("--require takes NAME:CONSTRAINT, e.g. drupal/token:^1.9")
        metadata["require"] = dict(pairs)
    root = signers_root(root_path)
    if root is not None:
        check_signers(keys, key_paths, root, package)
    broker_url = resolve_broker(data_dir, broker)
    topics = Topics.with_prefix(topic_prefix)
    release = build_release(
        package=package,
        drupal_version=drupal_version,
        zip_path=zip_path,
        origin_url=origin_url,
        metadata=metadata,
        rebuild_of=rebuild_of,
    )
    ensure_topics(broker_url, topics.partitions(partitions))
    producer = EventProducer(broker_url)
    delivered = publish_release(release, keys, producer, topics.releases)
    producer.close()
    console.print(
        f"published {release.package} {release.drupal_version} (Composer {release.version}, "
        f"sha256 {release.artifact.sha256[:16]}…) to "
        f"{delivered.topic}[{delivered.partition}]@{delivered.offset}"
    )


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
]


def policy_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options that choose what a region replicates (``ReplicationPolicy``)."""
    for option in reversed(_POLICY_OPTIONS):
        command = option(command)
    return command


def policy_from_options(
    mode: str, include: tuple[str, ...], exclude: tuple[str, ...], quota: int | None
) -> ReplicationPolicy:
    return ReplicationPolicy(
        mode=ReplicationMode(mode),
        include=include or ("drupal/*",),
        exclude=exclude,
        quota_bytes=quota,
    )


@cli.group()
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
def node_run(
    view: str,
    region: str,
    root_path: Path,
    max_artifact_size: int,
    listen: str,
    public_url: str | None,
    dist: str,
    store_public_url: str | None,
    bucket: str | None,
    session_timeout: float,
    stuck_after: float,
    ready_lag: int,
    mode: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    quota: int | None,
    pending_interval: float,
    peer_specs: tuple[str, ...],
    node_key_path: Path | None,
    status_every: float,
    fault_point: str | None,
    clock_skew: float,
    broker: str | None,
    store: str | None,
    topic_prefix: str,
    partitions: int,
    data_dir: Path,
) -> None:
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
    if not REGION_NAME.fullmatch(region):
        raise ConfigurationError(f"region {region!r} must be lower-case letters, digits and dashes")
    host, port = listen_address(listen)
    broker_url, store_url = stack_urls(data_dir, broker, store)
    topics = Topics.with_prefix(topic_prefix)
    peers = tuple(
        parse_peer(spec, lambda path: read_file(path, "peer trust root file"))
        for spec in peer_specs
    )
    location = StoreLocation.from_url(store_url)
    bucket = bucket or layout.region_bucket(region)
    presigner = dist_presigner(location, bucket, dist, store_public_url)
    # A mistake in the arguments is reported before the store or the broker is asked.
    bootstrap_servers(broker_url)
    pinned = pinned_root_file(root_path)
    replication = with_peer_namespaces(policy_from_options(mode, include, exclude, quota), peers)
    make_dir(data_dir / "nodes" / region, "the node's data directory")
    own_key = node_key(node_key_path, data_dir, region, listen)
    region_store = open_store(location, bucket)
    region_store.ensure_bucket()
    settings = NodeSettings(
        region=region,
        broker_url=broker_url,
        store=location,
        bucket=bucket,
        public_url=region_public_url(region_store, public_url, f"http://{listen}"),
        pinned_root=pinned,
        data_dir=data_dir / "nodes" / region,
        topics=topics,
        session_timeout=session_timeout,
        health=HealthRules(stuck_after=timedelta(seconds=stuck_after), ready_lag=ready_lag),
        max_artifact_size=max_artifact_size,
        policy=replication,
        pending_interval=pending_interval,
        peers=peers,
        node_key=own_key,
        status_interval=status_every,
        fault=FaultSpec.parse(fault_point) if fault_point else None,
        clock_skew=timedelta(seconds=clock_skew),
        view_dir=data_dir / "nodes" / region / f"view-{listen.replace(':', '-')}",
        worker_name=f"{region}@{listen}",
        view=view,
    )
    ensure_region_topics(broker_url, topics, region, partitions)
    try:
        stream = NodeStream(settings)
    except RejectedError as exc:
        raise ConfigurationError(
            f"the pinned trust root {root_path} is not a valid signed root ({exc}); "
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
            dist="proxy" if dist == "proxy" else "redirect",
        ),
        stream.store,
        presigner=presigner,
        trust_root=lambda: stream.trust.root,
        states=stream.states,
        documents=stream.local_view.document if stream.local_view is not None else None,
        replicas=stream.replicas.urls,
        peers=stream.replicas.peers,
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
        silent_after=timedelta(seconds=MISSED_HEARTBEATS * status_every),
    )
    serve_status_pages(http.app, own_status, rejections=rejections, clock=stream.now)
    uvloop.install()
    logs = log_settings()
    # JSON logs are for a machine even on a terminal: log lines instead of a progress bar.
    terminal = False if logs.format == "json" else None
    with CatchUpProgress(
        Console(file=sys.stderr, soft_wrap=True, force_terminal=terminal)
    ) as catch_up:
        if stream.reporter is not None:
            stream.reporter.listeners.append(catch_up.observe)
        run_worker(stream.app, HttpServerService(http.app, host, port, logs=logs), logs=logs)


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
            policy=policy_from_options(mode, include, exclude, quota),
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
    policy = policy_from_options(mode, include, exclude, quota)
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


@cli.group()
def origin() -> None:
    """A static origin of release zips (stands in for ftp.drupal.org in the demo and tests).

    Example: fairstream origin serve ./files --listen 127.0.0.1:8000
    """


@origin.command("serve")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--listen", default="127.0.0.1:8000", show_default=True, help="HOST:PORT")
def origin_serve(root: Path, listen: str) -> None:
    """Serve the files under ROOT over HTTP.

    Example: fairstream origin serve ./files --listen 127.0.0.1:8000
    """
    host, port = listen_address(listen)
    serve_app(origin_app(root), host, port, logs=log_settings())


@cli.command()
@click.option("--region", "regions", multiple=True, help="Show only these regions.")
@click.option(
    "--directory",
    "directory_url",
    type=HTTP_URL,
    default=None,
    help="A directory's URL: adds whether it admitted each node, and why.",
)
@click.option(
    "--silent-after",
    type=click.FloatRange(0.5),
    default=SILENT_AFTER.total_seconds(),
    show_default=True,
    metavar="SECONDS",
    help="A node whose last heartbeat is older than this is shown silent (three missed "
    "heartbeats at the default --status-every; give three of the nodes' periods).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON document instead of the table (its fields: docs/operator-guide.md); "
    "same exit code.",
)
@click.option("--watch", is_flag=True, help="Redraw the table in place until Ctrl-C.")
@click.option(
    "--every",
    type=click.FloatRange(0.5, 3600),
    default=None,
    metavar="SECONDS",
    help="Seconds between redraws with --watch  [default: 5]",
)
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@DATA_DIR_OPTION
def status(
    regions: tuple[str, ...],
    directory_url: str | None,
    silent_after: float,
    as_json: bool,
    watch: bool,
    every: float | None,
    broker: str | None,
    topic_prefix: str,
    data_dir: Path,
) -> None:
    """Print every node of the federation from its last heartbeat: region, URL, in sync,
    how far behind, stopped or silent, last heartbeat, store usage.

    Exits as a Nagios check: 0 every node shown is in sync (and admitted, with
    --directory), 1 a warning (behind, zips parked, no heartbeat yet, not yet admitted,
    no node at all), 2 critical (silent, stopped, trust root expired, refused or dropped
    by the directory), 3 unknown (the broker did not answer).

    \b
    Example: fairstream status --directory https://packages.example.org

    \b
    Example: fairstream status --json --silent-after 60

    \b
    Example: fairstream status --region eu --watch --every 2
    """
    if every is not None and not watch:
        raise click.UsageError("--every sets how often --watch redraws; add --watch")
    if as_json and watch:
        raise click.UsageError("--json prints one document; leave out --watch")
    broker_url = resolve_broker(data_dir, broker)
    topics = Topics.with_prefix(topic_prefix)
    bound = timedelta(seconds=silent_after)

    def check() -> FederationCheck:
        book = read_node_book(broker_url, topics.status)
        admissions = directory_admissions(directory_url) if directory_url else None
        return check_federation(book, regions=regions, admissions=admissions, silent_after=bound)

    try:
        checked = check()  # a wrong --broker fails here, with or without --watch
    except TransientError as exc:
        # A Nagios check that cannot tell says UNKNOWN (3), not WARNING (1).
        show_error(exc)
        click.get_current_context().exit(UNKNOWN)
    if as_json:
        document = checked.document(regions=regions, directory=directory_url)
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        click.get_current_context().exit(checked.exit_code)
    table = federation_table(checked)
    if not watch:
        # Piped or redirected, rich would cut the table to 80 columns: a log or a script
        # gets each row on one line instead.
        out = console if console.is_terminal else Console(soft_wrap=True, width=UNWRAPPED_WIDTH)
        out.print(table)
        click.get_current_context().exit(checked.exit_code)
    period = every or 5.0
    last = [table]

    def refresh() -> RenderableType:
        # A broker that stops answering leaves the last table up, saying so.
        try:
            last[0] = federation_table(check())
        except TransientError as exc:
            return Group(last[0], Text(f"not refreshed: {exc}", style="yellow"))
        last[0].caption = f"refreshed {datetime.now():%H:%M:%S}, every {period:g} s; Ctrl-C stops"
        return last[0]

    with Live(table, console=console, auto_refresh=False) as live:
        redraw(refresh, lambda frame: live.update(frame, refresh=True), every=period)
    # With no stop condition, only Ctrl-C ends the redraws: exit as after any Ctrl-C.
    click.get_current_context().exit(INTERRUPTED)


@cli.group()
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


@cli.command()
@click.option("--keep-running", is_flag=True, help="Leave the federation running until Ctrl-C.")
@DATA_DIR_OPTION
def demo(keep_running: bool, data_dir: Path) -> None:
    """The main job: a whole federation on this machine, from publish to composer require.

    Example: fairstream demo --keep-running
    """
    run_demo(data_dir, console, keep_running=keep_running)


ROOT_KEY_OPTION = click.option(
    "--root-key",
    "root_key_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="A root key of the new root (.key or .pub file); repeat for each.",
)
THRESHOLD_OPTION = click.option(
    "--threshold",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="How many root keys must sign the next root.",
)
DELEGATE_OPTION = click.option(
    "--delegate",
    "delegations",
    multiple=True,
    metavar="NS=PUBLISHER:KEYS[@N]",
    help="Delegate a namespace, e.g. 'drupal/*=drupal.org:keys/drupal.pub'; repeatable.",
)
EXPIRES_OPTION = click.option(
    "--expires-days",
    type=click.IntRange(1),
    default=365,
    show_default=True,
    help="Days until the root expires (nodes then stop applying events until a newer root).",
)


@cli.group()
def trust() -> None:
    """Trust roots: root keys, delegations of namespaces to publisher keys, rotations.

    \b
    Example: fairstream trust init root.avro --root-key keys/root.key \\
      --delegate 'drupal/*=drupal.org:keys/drupal.pub'
    """


@trust.command("init")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@ROOT_KEY_OPTION
@THRESHOLD_OPTION
@DELEGATE_OPTION
@EXPIRES_OPTION
def trust_init(
    out: Path,
    root_key_paths: tuple[Path, ...],
    threshold: int,
    delegations: tuple[str, ...],
    expires_days: int,
) -> None:
    """Write root v1, signed by its own root keys (give their private .key files): the file nodes pin.

    \b
    Example: fairstream trust init root.avro --root-key keys/root.key \\
      --delegate 'drupal/*=drupal.org:keys/drupal.pub'
    """
    keys = [read_key(p) for p in root_key_paths]
    signers = [k for k in keys if isinstance(k, SigningKey)]
    root = build_root(
        version=1,
        root_keys=[public_of(k) for k in keys],
        root_threshold=threshold,
        delegations=[DelegationSpec.parse(d) for d in delegations],
        valid_for=timedelta(days=expires_days),
    )
    if len(signers) < threshold:
        raise ConfigurationError(
            f"root v1 must be signed by {threshold} of its root keys; give their private "
            ".key files with --root-key"
        )
    signed = root.sign(signers)
    load_pinned_root(signed)  # refuses a root that does not sign itself with its threshold
    write_file(out, signed, "trust root file")
    console.print(
        f"trust root v1 ({len(root.delegations)} delegations, expires {root.expires:%Y-%m-%d}) → {out}"
    )


@trust.command("rotate")
@click.argument("previous", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@ROOT_KEY_OPTION
@THRESHOLD_OPTION
@DELEGATE_OPTION
@EXPIRES_OPTION
@click.option(
    "--sign",
    "sign_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Private keys signing the new root: a threshold of the previous root's and of the new.",
)
def trust_rotate(
    previous: Path,
    out: Path,
    root_key_paths: tuple[Path, ...],
    threshold: int,
    delegations: tuple[str, ...],
    expires_days: int,
    sign_paths: tuple[Path, ...],
) -> None:
    """Write root N+1 after PREVIOUS (root N); refused here if nodes would refuse it.

    \b
    Example: fairstream trust rotate root-v1.avro root-v2.avro \\
      --root-key keys/root.pub \\
      --delegate 'drupal/*=drupal.org:keys/drupal-2024.pub' --sign keys/root.key
    """
    current = _current_root(previous)
    root = build_root(
        version=current.version + 1,
        root_keys=[public_of(read_key(p)) for p in root_key_paths],
        root_threshold=threshold,
        delegations=[DelegationSpec.parse(d) for d in delegations],
        valid_for=timedelta(days=expires_days),
    )
    signed = root.sign(signing_keys(sign_paths))
    verify_root_update(current, signed)
    write_file(out, signed, "trust root file")
    console.print(f"trust root v{root.version} → {out}; publish it with `fairstream trust publish`")


def _current_root(path: Path) -> TrustRoot:
    """The root in a signed root file, checked against its own root keys' signatures."""
    return pinned_root(path)


@trust.command("publish")
@click.argument("root_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@DATA_DIR_OPTION
def trust_publish(
    root_file: Path, broker: str | None, topic_prefix: str, partitions: int, data_dir: Path
) -> None:
    """Produce a signed root to the trust topic, where every node follows it.

    Example: fairstream trust publish root-v2.avro
    """
    broker_url = resolve_broker(data_dir, broker)
    topics = Topics.with_prefix(topic_prefix)
    ensure_topics(broker_url, topics.partitions(partitions))
    producer = EventProducer(broker_url)
    delivered = producer.produce(
        topics.trust, b"trust-root", read_file(root_file, "trust root file")
    )
    producer.close()
    console.print(
        f"published {root_file} to {delivered.topic}[{delivered.partition}]@{delivered.offset}"
    )


# The Drupal.org-side commands live in their own modules and register here.
register_catalogue(cli)
register_import(cli)
register_publishing(cli)
register_meta_directory(directory)
# Last: its choices are the commands above that take --config.
register_config(cli)
node.add_command(nginx_config)


#: What to check when the broker or the store does not answer, after what failed.
_UNAVAILABLE_HINTS: dict[type[FairstreamError], str] = {
    BrokerUnavailableError: "check that the broker runs and that --broker (or "
    "FAIRSTREAM_BROKER_URL) names it; `fairstream dev status` shows the embedded stack",
    StoreUnavailableError: "check that the object store runs and that --store (or "
    "FAIRSTREAM_STORE_URL) names it; `fairstream dev status` shows the embedded stack",
}


def show_error(exc: FairstreamError) -> None:
    """Say what went wrong in one sentence on stderr (and what to check, for a server that
    does not answer); with ``--log-format json``, as an error record."""
    message = str(exc)
    hint = next((h for kind, h in _UNAVAILABLE_HINTS.items() if isinstance(exc, kind)), None)
    if hint:
        message = f"{message}; {hint}"
    if logs_json():
        # A log shipper reading stderr gets the reason as a record like every other.
        logging.getLogger("fairstream").error(message)
        return
    errors = Console(stderr=True, soft_wrap=True)
    errors.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


def main() -> None:
    """Entry point: never a traceback for a user's mistake.

    Usage errors are shown as click shows them (exit 2), our errors as one red sentence
    on stderr (with ``--log-format json``, an error record; exit 1), and Ctrl-C ends the
    command quietly (exit 130).
    """
    try:
        result = cli.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except (click.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort; outside its invoke it stays a KeyboardInterrupt.
        raise SystemExit(INTERRUPTED) from None
    except FairstreamError as exc:
        show_error(exc)
        raise SystemExit(1) from None
    # Not standalone, click returns the code of an explicit exit (--help: 0), else None.
    raise SystemExit(result if isinstance(result, int) else 0)
