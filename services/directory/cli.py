"""``fairstream directory``: serve the directory (``serve``) and a meta-directory (``refer``).

``register(cli)`` adds the group to the ``fairstream`` command. ``directory serve`` only
turns its options into ``DirectoryServeOptions``: ``services.directory.build`` builds and
runs the directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from services.cli.options import (
    BROKER_OPTION,
    DATA_DIR_OPTION,
    GEO_HEADER_OPTION,
    HTTP_URL,
    PARTITIONS_OPTION,
    REGION_MAP_OPTION,
    STORE_OPTION,
    TOPIC_PREFIX_OPTION,
)
from services.directory.build import DirectoryServeOptions, build_directory, run_directory
from services.directory.meta_cli import register as register_refer
from services.node.config import configurable


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
def directory_serve(**options: Any) -> None:
    """Serve the catalogue to Composer and send each download to the best admitted,
    in-sync node of the client's region (else another region's, else the signed origin).

    \b
    Example: fairstream directory serve --root root.avro --listen 0.0.0.0:8090 \\
      --public-url https://packages.example.org \\
      --region-map 10.0.0.0/8=eu --region-map 192.168.0.0/16=us
    """
    run_directory(build_directory(DirectoryServeOptions(**options)))


register_refer(directory)
