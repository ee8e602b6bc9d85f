"""``fairstream config check``: a configuration file checked, and its settings shown with where each came from.

``register(cli)`` adds the group once every configurable command is in the tree:
its ``--command`` choices are the commands that take ``--config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from connectors.store import redact_url
from services.node.config import (
    ConfigCheck,
    check_config,
    configurable_commands,
    read_config,
    shown_value,
)

console = Console(soft_wrap=True)


# Long because the group and its check command are defined together, over the configurable commands.
def register(group: click.Group) -> None:
    """Add ``config check`` to ``group``, for each command under it that takes ``--config``."""
    commands = configurable_commands(group)

    @click.group()
    def config() -> None:
        """Configuration files of the long-running commands (node run, directory serve,
        publishing serve).

        Example: fairstream config check node.toml --command node-run
        """

    @config.command("check")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option(
        "--command",
        "command_name",
        type=click.Choice(sorted(commands)),
        default="node-run",
        show_default=True,
        help="The command the file configures.",
    )
    @click.option(
        "--skip-file-checks",
        is_flag=True,
        help="Do not open the files the settings name (trust root, keys, CA): for a file "
        "written for another machine, a container or a cluster.",
    )
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the settings and problems as a JSON document instead (its fields: "
        "docs/operator-guide.md); same exit code.",
    )
    def check(file: Path, command_name: str, skip_file_checks: bool, as_json: bool) -> None:
        """Check FILE (and the FAIRSTREAM_* variables set here) as the command would read
        them, print every setting with where it came from, and exit 1 on any problem.

        Example: fairstream config check /etc/fairstream/node.toml --command node-run

        \b
        Example: fairstream config check node.toml --json --skip-file-checks
        """
        command = commands[command_name]
        result = check_config(
            command, read_config(file), os.environ, check_files=not skip_file_checks
        )
        if as_json:
            document = check_document(result, file=file, command=command_name)
            click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
            raise SystemExit(0 if result.ok else 1)
        console.print(settings_table(result, title=f"{file} for fairstream {command_name}"))
        for problem in result.problems:
            console.print(Text(f"✗ {problem.message}", style="red"))
        if result.problems:
            count = len(result.problems)
            console.print(f"{count} problem{'s' if count > 1 else ''} in {file}", markup=False)
            raise SystemExit(1)
        console.print(
            f"ok: {file} configures `fairstream {command_name.replace('-', ' ')}`",
            markup=False,
        )

    group.add_command(config)


def check_document(result: ConfigCheck, *, file: Path, command: str) -> dict[str, Any]:
    """The ``--json`` document of a check (field names are stable; credentials in URLs
    masked as in the table)."""
    return {
        "file": str(file),
        "command": command,
        "ok": result.ok,
        "exit_code": 0 if result.ok else 1,
        "settings": [
            {
                "key": resolved.setting.key,
                "value": _json_value(resolved.value),
                "source": resolved.source,
                "environment_variable": resolved.setting.envvar,
            }
            for resolved in result.settings
        ],
        "problems": [
            {"key": problem.key, "kind": problem.kind, "message": problem.message}
            for problem in result.problems
        ],
    }


def _json_value(value: object) -> object:
    """A setting's value as JSON: lists as lists, text (paths, URLs) with credentials masked."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return redact_url(str(value))


def settings_table(result: ConfigCheck, *, title: str) -> Table:
    """Every setting: value (credentials masked), where it came from, its variable."""
    table = Table(title=Text(title))
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from", no_wrap=True)
    table.add_column("environment variable", overflow="fold")
    styles = {"file": "green", "environment": "cyan", "default": "dim"}
    for resolved in result.settings:
        table.add_row(
            resolved.setting.key,
            Text(shown_value(resolved.value)),
            Text(resolved.source, style=styles[resolved.source]),
            resolved.setting.envvar,
        )
    table.caption = "the command line overrides the environment, which overrides the file"
    return table
