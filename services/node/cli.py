"""``fairstream node``: a regional node's commands (run, serve, rebuild, nginx-config).

``register(cli)`` adds the group to the ``fairstream`` command. Each command here only
turns its options into a frozen dataclass: ``node run`` and ``node serve`` into
``NodeRunOptions`` and ``NodeServeOptions`` (``services.node.build`` builds and runs the
node or the frontend), ``node rebuild`` into ``NodeRebuildOptions``
(``services.node.rebuild_cli`` rebuilds the region and shows what it did).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from schemas.events import DEFAULT_MAX_ARTIFACT_SIZE
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
)
from services.node.build import (
    NodeRunOptions,
    NodeServeOptions,
    build_frontend,
    build_node,
    run_frontend,
    run_node,
)
from services.node.config import configurable
from services.node.http_settings import DIST_MODES
from services.node.nginx_front import nginx_config
from services.node.rebuild_cli import NodeRebuildOptions, rebuild_node, show_rebuild
from streams.health import DEFAULT_READY_LAG, DEFAULT_STUCK_AFTER
from streams.policy import ReplicationMode

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
    """The options that choose what a region replicates (``ReplicationPolicy``); the
    commands' options dataclasses take them from ``services.node.build.PolicyOptions``."""
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
    "fair.releases], root (the peer's own signed trust root file), namespace (VENDOR/*, "
    "canonical only, repeatable) and jurisdiction (where the peer's origin is, e.g. EU; "
    "undeclared, a sovereign region never fetches its zips). canonical: its packages in those namespaces are applied and "
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
def node_serve(**options: Any) -> None:
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
    run_frontend(build_frontend(NodeServeOptions(**options)))


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
def node_rebuild(**options: Any) -> None:
    """Re-derive every package state and p2 document of a region from the log and the store.

    Reads the releases topic from offset 0, verifies each event, and writes only what
    differs (a healthy region ends byte-identical). Zips a full mirror lacks are parked
    for the nodes to fetch; metadata of packages the log no longer gives is removed.
    Safe while the region's nodes run.

    \b
    Example: fairstream node rebuild --region eu --root root.avro \\
      --public-url https://eu.packages.example.org --json
    """
    rebuild = NodeRebuildOptions(**options)
    show_rebuild(rebuild, rebuild_node(rebuild, console), console)


node.add_command(nginx_config)
