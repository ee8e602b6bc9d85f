"""Conventions every `fairstream` command keeps: sizes parsed one way, log records as JSON lines."""

from __future__ import annotations

import logging
import sys

import click
import orjson
import pytest

from services.cli.main import cli
from services.cli.options import ByteSize
from services.shared.logs import JsonLogFormatter
from tests.unit.test_cli_help import commands

SIZES = {"1G": 1 << 30, "20 GiB": 20 << 30, "500MB": 500 << 20, "1073741824": 1 << 30, "2k": 2048}


def size_options() -> list[tuple[str, click.Option]]:
    """Every option in the command tree that takes a size limit, by command and option name
    (not `publishing release --size`: the exact byte count of one zip, checked as a hash is)."""
    found = []
    for path, command in commands(cli):
        for param in command.params:
            if (
                isinstance(param, click.Option)
                and param.name
                and (param.name.endswith("_size") or param.name == "quota")
            ):
                found.append((f"{' '.join(path)} {param.opts[0]}", param))
    return found


def test_the_size_options_are_the_ones_expected() -> None:
    names = {name for name, _ in size_options()}
    assert {
        "node run --max-artifact-size",
        "node run --quota",
        "node serve --quota",
        "node rebuild --max-artifact-size",
        "node rebuild --quota",
        "publishing serve --max-artifact-size",
    } <= names


@pytest.mark.parametrize(("name", "option"), size_options(), ids=lambda v: str(v))
def test_every_size_option_takes_units_and_plain_bytes(name: str, option: click.Option) -> None:
    assert isinstance(option.type, ByteSize), name
    ctx = click.Context(click.Command("x"))
    for text, size in SIZES.items():
        assert option.type_cast_value(ctx, text) == size, (name, text)
    assert option.type_cast_value(ctx, 21474836480) == 20 << 30  # a TOML integer
    with pytest.raises(click.BadParameter, match="20 GiB"):
        option.type_cast_value(ctx, "20X")


def record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    info = sys.exc_info() if exc_info else None
    return logging.LogRecord("faust.worker", logging.WARNING, __file__, 1, message, args, info)


def test_a_json_log_record_is_one_line_with_its_fields() -> None:
    line = JsonLogFormatter().format(
        record("Setting newly assigned partitions %s\n+---+\n| t |", {("fair.releases", 0)})
    )

    assert "\n" not in line
    document = orjson.loads(line)
    assert document["level"] == "warning" and document["logger"] == "faust.worker"
    assert document["message"].startswith("Setting newly assigned partitions {('fair.releases'")
    assert document["time"].endswith("Z")


def test_a_json_log_record_carries_its_traceback_on_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = JsonLogFormatter().format(record("failed", exc_info=True))

    assert "\n" not in line
    document = orjson.loads(line)
    assert document["message"] == "failed"
    assert "Traceback" in document["exception"] and "ValueError: boom" in document["exception"]


def test_extra_fields_do_not_replace_the_common_ones() -> None:
    entry = record("GET /p2/drupal/token.json")
    entry.fields = {"status": 200, "logger": "not this", "path": "/p2/drupal/token.json"}

    document = orjson.loads(JsonLogFormatter().format(entry))

    assert document["logger"] == "faust.worker"
    assert document["status"] == 200 and document["path"] == "/p2/drupal/token.json"
