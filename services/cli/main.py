"""The ``fairstream`` command: the composition root of every CLI process.

The root group (its logging options) and the entry point; each role's commands live in
its own package's ``cli`` module and are registered here.
"""

from __future__ import annotations

from typing import cast

import click

from infra.devtools.catalogue_cli import register as register_catalogue
from infra.devtools.dev_cli import register as register_dev
from schemas.errors import FairstreamError
from services.bundles.cli import register as register_bundle
from services.cli.config import register as register_config
from services.cli.errors import show_error
from services.cli.status import register as register_status
from services.directory.cli import register as register_directory
from services.importer.cli import register as register_import
from services.node.cli import register as register_node
from services.publishing.cli import register as register_publishing
from services.publishing.trust_cli import register as register_trust
from services.shared.logs import (
    LOG_FORMATS,
    LOG_LEVELS,
    LogFormat,
    LogLevel,
    LogSettings,
    configure_logging,
)
from services.shared.serving import INTERRUPTED

__all__ = ["cli", "main", "show_error"]


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


# Each role's commands, in the order `fairstream --help` lists them (click sorts them).
register_bundle(cli)  # bundle (export, import)
register_catalogue(cli)  # catalogue (dev tooling)
register_dev(cli)  # demo, dev, origin (dev tooling)
register_directory(cli)  # directory (serve, refer)
register_import(cli)  # import
register_trust(cli)  # keys, trust
register_node(cli)  # node (run, serve, rebuild, nginx-config)
register_publishing(cli)  # publish, publishing
register_status(cli)  # status
# Last: its choices are the commands above that take --config.
register_config(cli)


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
