"""The dev tooling's commands of the one ``fairstream`` command line: ``dev`` (the embedded
stack), ``origin serve`` (a static origin of release zips) and ``demo``.

``register(cli)`` adds them to the ``fairstream`` command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from connectors.kafka_connection import bootstrap_servers
from infra import devstack
from infra.devtools.demo import run_demo
from infra.devtools.origin_http import origin_app
from services.cli.options import DATA_DIR_OPTION, listen_address, log_settings, stack_urls
from services.shared.serving import serve_app

__all__ = ["demo", "dev", "origin", "register"]

console = Console(soft_wrap=True)

#: The exit status of `dev status` when the stack is not (all) running, as LSB's and
#: systemctl's "program is not running".
NOT_RUNNING = 3


def register(group: click.Group) -> None:
    """Add ``demo``, ``dev`` (up, down, status, env) and ``origin`` (serve) to ``group``."""
    group.add_command(demo)
    group.add_command(dev)
    group.add_command(origin)


@click.group()
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


@click.group()
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


@click.command()
@click.option("--keep-running", is_flag=True, help="Leave the federation running until Ctrl-C.")
@DATA_DIR_OPTION
def demo(keep_running: bool, data_dir: Path) -> None:
    """The main job: a whole federation on this machine, from publish to composer require.

    Example: fairstream demo --keep-running
    """
    run_demo(data_dir, console, keep_running=keep_running)
