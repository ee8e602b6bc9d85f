"""The composition roots of the other long-running and long commands (``node serve``,
``node rebuild``, ``directory serve``, ``publishing serve``): each one's options as a frozen
dataclass that cannot drift from its command, and mistakes refused before anything is
asked of the broker or the store. ``node run``'s is tests/unit/test_node_build.py."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path

import click
import pytest

from schemas.errors import ConfigurationError
from services.cli.main import cli
from services.directory.build import DirectoryServeOptions, build_directory
from services.node.build import NodeServeOptions, PolicyOptions, build_frontend
from services.node.cli import policy_options
from services.node.config import CONFIG_PARAM
from services.node.rebuild_cli import NodeRebuildOptions
from services.publishing.build import PublishingServeOptions

#: Each command, its options dataclass and the fewest arguments it runs with.
ROOTS: dict[str, tuple[type, list[str]]] = {
    "node serve": (NodeServeOptions, ["--region", "eu", "--root", "root.avro"]),
    "node rebuild": (
        NodeRebuildOptions,
        ["--region", "eu", "--root", "root.avro", "--public-url", "https://eu.example.org"],
    ),
    "directory serve": (DirectoryServeOptions, ["--root", "root.avro"]),
    "publishing serve": (PublishingServeOptions, ["--root", "root.avro", "--key", "a.key"]),
}
#: No broker, no store and any free port: nothing is asked of them before these mistakes.
URLS = ["--broker", "kafka://127.0.0.1:9", "--store", "s3://a:b@127.0.0.1:9"]
ANY_PORT = ["--listen", "127.0.0.1:0"]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FAIRSTREAM_"):
            monkeypatch.delenv(name)


def command(path: str) -> tuple[click.Command, click.Context]:
    """The command at ``path`` (``node serve``) and the context of its group."""
    ctx = click.Context(cli, info_name="fairstream")
    found: click.Command = cli
    for name in path.split():
        assert isinstance(found, click.Group)
        found = found.get_command(ctx, name)  # type: ignore[assignment]
        assert found is not None
        if isinstance(found, click.Group):
            ctx = click.Context(found, info_name=name, parent=ctx)
    return found, ctx


def parsed(path: str, args: list[str]) -> dict[str, typing.Any]:
    """``fairstream PATH ARGS`` as click parses it (no IO happens before the command body)."""
    found, parent = command(path)
    return found.make_context(path.split()[-1], args, parent=parent).params


@pytest.mark.parametrize("path", ROOTS)
def test_the_options_are_the_parameters_of_the_command(path: str) -> None:
    options, _ = ROOTS[path]
    found, _ = command(path)
    fields = {field.name for field in dataclasses.fields(options)}
    params = {param.name for param in found.params} - {CONFIG_PARAM}

    assert fields == params
    assert options.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_the_policy_options_are_the_parameters_policy_options_adds() -> None:
    @click.command()
    @policy_options
    def command(**options: typing.Any) -> None: ...

    fields = {field.name for field in dataclasses.fields(PolicyOptions)}

    assert fields == {param.name for param in command.params}
    assert PolicyOptions.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ROOTS)
def test_what_click_parses_has_the_types_of_the_options(clean_environment: None, path: str) -> None:
    options_type, args = ROOTS[path]
    options = options_type(**parsed(path, args))

    hints = typing.get_type_hints(options_type)
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        hint = hints[field.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = tuple(typing.get_origin(kind) or kind for kind in allowed)
        assert isinstance(value, kinds), f"{path} {field.name}: {value!r} is not {hint}"


def test_node_serve_refuses_a_store_url_for_clients_with_dist_proxy_before_asking(
    clean_environment: None, tmp_path: Path
) -> None:
    args = ["--region", "eu", "--root", "root.avro", "--data-dir", str(tmp_path), *URLS, *ANY_PORT]
    args += ["--dist", "proxy", "--store-public-url", "https://s3.example"]
    options = NodeServeOptions(**parsed("node serve", args))

    with pytest.raises(ConfigurationError, match="--store-public-url is for --dist redirect"):
        build_frontend(options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Dir"], "--name 'Dir' must be lower-case"),
        (["--region-map", "nonsense"], "--region-map "),
    ],
)
def test_directory_serve_refuses_mistakes_before_the_broker_or_the_store_is_asked(
    clean_environment: None, tmp_path: Path, args: list[str], message: str
) -> None:
    options = DirectoryServeOptions(
        **parsed(
            "directory serve",
            [*args, "--root", "root.avro", "--data-dir", str(tmp_path), *URLS, *ANY_PORT],
        )
    )

    with pytest.raises(ConfigurationError, match=message):
        build_directory(options)
    assert list(tmp_path.iterdir()) == []
