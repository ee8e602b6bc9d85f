"""The broker and store URLs (which hold credentials) from a file named by `<VARIABLE>_FILE`,
as Docker and Kubernetes mount secrets: read by the commands and by `config check`."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from schemas.errors import ConfigurationError
from services.cli.main import cli
from services.node.config import check_config, configurable_commands, settings_of

NODE_RUN = configurable_commands(cli)["node-run"]
BROKER = "kafka+sasl-ssl://fairstream-eu:s3cr3t@kafka-1:9093?mechanism=SCRAM-SHA-512"
STORE = "s3://fairstream-eu:m1n10s3cr3t@minio:9000"


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    """Two secret files as a mounted Secret holds them (one with a trailing newline)."""
    (tmp_path / "broker-url").write_text(BROKER + "\n")
    (tmp_path / "store-url").write_text(STORE)
    return {
        "FAIRSTREAM_BROKER_URL_FILE": str(tmp_path / "broker-url"),
        "FAIRSTREAM_STORE_URL_FILE": str(tmp_path / "store-url"),
    }


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for setting in settings_of(NODE_RUN).values():
        monkeypatch.delenv(setting.envvar, raising=False)
        monkeypatch.delenv(setting.envvar + "_FILE", raising=False)
    monkeypatch.delenv("FAIRSTREAM_CONFIG", raising=False)
    return monkeypatch


def node_run_params(args: list[str]) -> dict[str, object]:
    """`fairstream node run ARGS` as click parses it (no IO happens before the command body)."""
    parent = click.Context(cli, info_name="fairstream")
    node = cli.get_command(parent, "node")
    assert isinstance(node, click.Group)
    ctx = NODE_RUN.make_context(
        "run", args, parent=click.Context(node, info_name="node", parent=parent)
    )
    return ctx.params


def test_node_run_reads_the_urls_from_the_files_the_variables_name(
    clean_environment: pytest.MonkeyPatch, secrets: dict[str, str]
) -> None:
    for name, value in secrets.items():
        clean_environment.setenv(name, value)

    params = node_run_params(["--region", "eu", "--root", "root.avro"])

    assert params["broker"] == BROKER
    assert params["store"] == STORE


def test_the_command_line_still_wins_over_the_file(
    clean_environment: pytest.MonkeyPatch, secrets: dict[str, str]
) -> None:
    for name, value in secrets.items():
        clean_environment.setenv(name, value)

    params = node_run_params(["--region", "eu", "--root", "r", "--store", "s3://a:b@other:9000"])

    assert params["store"] == "s3://a:b@other:9000"


def test_a_variable_and_its_file_both_set_is_refused(
    clean_environment: pytest.MonkeyPatch, secrets: dict[str, str]
) -> None:
    clean_environment.setenv("FAIRSTREAM_STORE_URL_FILE", secrets["FAIRSTREAM_STORE_URL_FILE"])
    clean_environment.setenv("FAIRSTREAM_STORE_URL", STORE)

    with pytest.raises(ConfigurationError, match="both FAIRSTREAM_STORE_URL and "):
        node_run_params(["--region", "eu", "--root", "root.avro"])


def test_a_missing_file_is_named(clean_environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment.setenv("FAIRSTREAM_BROKER_URL_FILE", str(tmp_path / "absent"))

    with pytest.raises(ConfigurationError, match=r"FAIRSTREAM_BROKER_URL_FILE names .*absent"):
        node_run_params(["--region", "eu", "--root", "root.avro"])


def test_config_check_reads_the_files_and_checks_their_urls(
    secrets: dict[str, str], tmp_path: Path
) -> None:
    table = {"region": "eu", "root": "/etc/fairstream/root.avro"}

    check = check_config(NODE_RUN, table, secrets, check_files=False)

    assert check.ok, check.problems
    resolved = {r.setting.key: (r.value, r.source) for r in check.settings}
    assert resolved["broker"] == (BROKER, "environment")
    assert resolved["store"] == (STORE, "environment")

    (tmp_path / "store-url").write_text("http://minio:9000")
    check = check_config(NODE_RUN, table, secrets, check_files=False)

    assert [p.key for p in check.problems] == ["store"]
    assert check.problems[0].message.startswith("FAIRSTREAM_STORE_URL_FILE (environment): ")


def test_config_check_refuses_both(secrets: dict[str, str]) -> None:
    environ = secrets | {"FAIRSTREAM_BROKER_URL": BROKER}

    check = check_config(NODE_RUN, {"region": "eu", "root": "r"}, environ, check_files=False)

    assert [(p.key, p.kind) for p in check.problems] == [("broker", "invalid-value")]
    assert "set only one" in check.problems[0].message
