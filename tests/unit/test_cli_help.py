"""Every command's --help shows an example, and every example parses against the real command.

The tree is walked, so a command added without an example fails here. Examples are
read from the help text as a person sees it (80 columns): ``Example: fairstream ...``
lines, continued over lines that end with a backslash, in ``\\b`` paragraphs so that
click does not rewrap them. Each is split like a shell would and parsed with
``make_context`` (options, arguments, types, required values) without running it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from services.cli.main import cli

PROGRAM = "fairstream"
_EXAMPLE = re.compile(r"^\s*Example: (.*)$")
#: Files and directories the examples name that their commands require to exist
#: (``click.Path(exists=True)``); the examples are parsed in a directory holding them.
EXISTING_FILES = ("root-v1.avro", "root-v2.avro")
EXISTING_DIRS = ("files",)


class ExampleError(Exception):
    """A command's help has no example, or an example that does not parse."""


def commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group`` (groups too) with its path of names."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def help_text(root: click.Group, program: str, path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(root, [*path, "--help"], prog_name=program, terminal_width=80)
    if result.exit_code != 0:
        raise ExampleError(f"{program} {' '.join(path)} --help failed: {result.output}")
    return result.output


def examples(text: str) -> list[str]:
    """The command line of each ``Example:`` line of a help text (before its options)."""
    lines = text.split("\nOptions:")[0].splitlines()
    found = []
    index = 0
    while index < len(lines):
        match = _EXAMPLE.match(lines[index])
        index += 1
        if match is None:
            continue
        parts = [match.group(1).strip()]
        while parts[-1].endswith("\\") and index < len(lines):
            parts[-1] = parts[-1].removesuffix("\\").strip()
            parts.append(lines[index].strip())
            index += 1
        line = " ".join(parts)
        after = lines[index].strip() if index < len(lines) else ""
        if after and not _EXAMPLE.match(lines[index]):
            raise ExampleError(
                f"the example {line!r} goes on with {after!r}: click wrapped it; put it in a "
                "\\b paragraph and continue long lines with ' \\'"
            )
        found.append(line)
    return found


def parse_example(root: click.Group, program: str, line: str) -> list[tuple[str, ...]]:
    """Parse each command of an example line (``&&`` separates commands) against the real
    commands, without running them; returns the path of each command.

    Raises ``ExampleError`` saying what click refused.
    """
    words = shlex.split(line)
    runs: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            runs.append([])
        else:
            runs[-1].append(word)
    paths = []
    for run in runs:
        if not run or run[0] != program:
            raise ExampleError(f"{line!r}: each command must start with {program!r}")
        path: tuple[str, ...] = ()
        command: click.Command = root
        args = run[1:]
        while isinstance(command, click.Group):
            sub = command.get_command(click.Context(command), args[0]) if args else None
            if sub is None:
                raise ExampleError(
                    f"{line!r}: {program} {' '.join(path)} has no command {args[:1]}"
                )
            path, command, args = (*path, args[0]), sub, args[1:]
        try:
            with command.make_context(" ".join((program, *path)), list(args)):
                pass
        except click.ClickException as exc:
            raise ExampleError(f"{line!r}: {exc.format_message()}") from exc
        paths.append(path)
    return paths


def check_command(root: click.Group, program: str, path: tuple[str, ...]) -> None:
    """A leaf command's help has an example that runs it, and every example parses.

    Raises ``ExampleError``.
    """
    found = examples(help_text(root, program, path))
    if not found:
        raise ExampleError(
            f"{program} {' '.join(path)} --help has no 'Example: {program} ...' line"
        )
    named = [p for line in found for p in parse_example(root, program, line)]
    if path not in named:
        raise ExampleError(f"no example of {program} {' '.join(path)} runs it: {found}")


LEAVES = [path for path, command in commands(cli) if not isinstance(command, click.Group)]
GROUPS = [path for path, command in commands(cli) if isinstance(command, click.Group)]


@pytest.fixture
def example_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the files the examples name, and no FAIRSTREAM_* values."""
    for name in EXISTING_FILES:
        (tmp_path / name).write_bytes(b"")
    for name in EXISTING_DIRS:
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    for variable in [v for v in os.environ if v.startswith("FAIRSTREAM_")]:
        monkeypatch.delenv(variable)
    return tmp_path


def test_the_walk_finds_every_command() -> None:
    assert {("node", "run"), ("status",), ("trust", "rotate"), ("publishing", "advisory")} <= set(
        LEAVES
    )
    assert len(LEAVES) >= 20


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_each_command_has_an_example_that_parses(path: tuple[str, ...], example_dir: Path) -> None:
    check_command(cli, PROGRAM, path)


@pytest.mark.parametrize("path", GROUPS, ids=" ".join)
def test_each_group_example_parses_and_runs_one_of_its_commands(
    path: tuple[str, ...], example_dir: Path
) -> None:
    for line in examples(help_text(cli, PROGRAM, path)):
        for named in parse_example(cli, PROGRAM, line):
            assert named[: len(path)] == path, f"{line!r} runs no command of {path}"


# --- the checker itself, on a tiny command ---------------------------------------------


def _tool(docstring: str) -> click.Group:
    @click.group()
    def tool() -> None:
        """A tool."""

    @tool.command("greet")
    @click.option("--name", required=True)
    @click.option("--times", type=int, default=1)
    def greet(name: str, times: int) -> None:
        pass

    greet.help = docstring
    return tool


def test_a_good_example_passes() -> None:
    check_command(
        _tool("Greet.\n\n\b\nExample: tool greet --name Ada \\\n  --times 2"), "tool", ("greet",)
    )


@pytest.mark.parametrize(
    ("docstring", "refusal"),
    [
        ("Greet.\n\nExample: tool greet --nmae Ada", "No such option: --nmae"),
        (
            "Greet.\n\nExample: tool greet --name Ada --times twice",
            "'twice' is not a valid integer",
        ),
        ("Greet.\n\nExample: tool greet --times 2", "Missing option '--name'"),
        ("Greet.\n\nExample: tool greeet --name Ada", "has no command"),
        ("Greet.", "has no 'Example: tool ...' line"),
        (
            "Greet.\n\nExample: tool greet --name Ada " + "--times 2 " * 8,
            "click wrapped it",
        ),
    ],
    ids=["misspelt option", "wrong type", "missing option", "unknown command", "none", "wrapped"],
)
def test_a_broken_example_fails(docstring: str, refusal: str) -> None:
    with pytest.raises(ExampleError, match=re.escape(refusal)):
        check_command(_tool(docstring), "tool", ("greet",))


def test_version_prints_the_installed_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"fairstream {importlib.metadata.version('fairstream')}\n"
