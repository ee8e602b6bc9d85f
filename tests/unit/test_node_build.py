"""The node's composition root (services/node/build.py): `node run`'s options as a dataclass
that cannot drift from the command, and mistakes refused before anything is asked of the
broker or the store."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import click
import pytest

from infra import localnet
from schemas.errors import ConfigurationError
from services.cli.main import cli
from services.node.build import NodeRunOptions, build_node
from services.node.config import CONFIG_PARAM, configurable_commands, settings_of

NODE_RUN = configurable_commands(cli)["node-run"]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in settings_of(NODE_RUN).values():
        monkeypatch.delenv(setting.envvar, raising=False)
        monkeypatch.delenv(setting.envvar + "_FILE", raising=False)
    monkeypatch.delenv("FAIRSTREAM_CONFIG", raising=False)


def parsed(args: list[str]) -> dict[str, typing.Any]:
    """`fairstream node run ARGS` as click parses it (no IO happens before the command body)."""
    parent = click.Context(cli, info_name="fairstream")
    node = cli.get_command(parent, "node")
    assert isinstance(node, click.Group)
    ctx = NODE_RUN.make_context(
        "run", args, parent=click.Context(node, info_name="node", parent=parent)
    )
    return ctx.params


def test_the_options_are_the_parameters_of_node_run() -> None:
    fields = {field.name for field in dataclasses.fields(NodeRunOptions)}
    params = {param.name for param in NODE_RUN.params} - {CONFIG_PARAM}

    assert fields == params


def test_what_click_parses_has_the_types_of_the_options(clean_environment: None) -> None:
    options = NodeRunOptions(**parsed(["--region", "eu", "--root", "root.avro", "--peer", "x"]))

    hints = typing.get_type_hints(NodeRunOptions)
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        hint = hints[field.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = tuple(typing.get_origin(kind) or kind for kind in allowed)
        assert isinstance(value, kinds), f"{field.name}: {value!r} is not {hint}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--region", "EU"], "region 'EU' must be lower-case"),
        (
            ["--region", "eu", "--dist", "proxy", "--store-public-url", "https://s3.example"],
            "--store-public-url is for --dist redirect",
        ),
    ],
)
def test_mistakes_are_refused_before_the_broker_or_the_store_is_asked(
    clean_environment: None, tmp_path: Path, args: list[str], message: str
) -> None:
    urls = ["--broker", "kafka://127.0.0.1:9", "--store", "s3://a:b@127.0.0.1:9"]
    # A free port: the default 8080 may be held by another process on the machine.
    listen = ["--listen", f"127.0.0.1:{localnet.free_port()}"]
    options = NodeRunOptions(
        **parsed([*args, "--root", "root.avro", "--data-dir", str(tmp_path), *listen, *urls])
    )

    with pytest.raises(ConfigurationError, match=message):
        build_node(options)
    assert list(tmp_path.iterdir()) == []
