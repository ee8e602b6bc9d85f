"""The settings model: a TOML file, FAIRSTREAM_* variables and the command line, in that order of weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from schemas.signing import SigningKey
from services.cli import config as config_cli
from services.cli.main import cli
from services.node.config import (
    ConfigCheck,
    check_config,
    configurable_commands,
    read_config,
    settings_of,
    shown_value,
)
from services.publishing.trust_admin import build_root, write_key_pair

COMMANDS = configurable_commands(cli)
NODE_RUN = COMMANDS["node-run"]
DIRECTORY_SERVE = COMMANDS["directory-serve"]
BROKER = "kafka+sasl-ssl://fairstream-eu:s3cr3t@kafka-1:9093,kafka-2:9093?mechanism=SCRAM-SHA-512"
STORE = "s3://fairstream:m1n10s3cr3t@minio:9000"
# Every variable a configurable command could read, unset for the CLI tests.
CLEAN_ENV: dict[str, str | None] = {
    setting.envvar: None
    for command in COMMANDS.values()
    for setting in settings_of(command).values()
} | {"FAIRSTREAM_CONFIG": None}


@pytest.fixture
def root_file(tmp_path: Path) -> Path:
    key = SigningKey.generate()
    root = build_root(version=1, root_keys=[key.public_key], root_threshold=1, delegations=[])
    path = tmp_path / "root.avro"
    path.write_bytes(root.sign([key]))
    return path


@pytest.fixture
def node_key(tmp_path: Path) -> Path:
    path = tmp_path / "node-eu-1.key"
    write_key_pair(SigningKey.generate(), path)
    return path


def good_table(root_file: Path, node_key: Path) -> dict[str, Any]:
    return {
        "region": "eu",
        "root": str(root_file),
        "listen": "0.0.0.0:8081",
        "public_url": "https://eu.packages.example.org",
        "mode": "full",
        "include": ["drupal/*"],
        "exclude": ["drupal/legacy_*"],
        "quota": "20G",
        "status_every": 10,
        "session_timeout": 10.0,
        "node_key": str(node_key),
        "broker": BROKER,
        "store": STORE,
    }


def problems(check: ConfigCheck) -> list[tuple[str, str]]:
    return [(problem.key, problem.kind) for problem in check.problems]


def message(check: ConfigCheck) -> str:
    assert len(check.problems) == 1, check.problems
    return check.problems[0].message


def sources(check: ConfigCheck) -> dict[str, str]:
    return {resolved.setting.key: resolved.source for resolved in check.settings}


def values(check: ConfigCheck) -> dict[str, object]:
    return {resolved.setting.key: resolved.value for resolved in check.settings}


# ---------------------------------------------------------------------------
# The model is the command's own options
# ---------------------------------------------------------------------------


def test_the_keys_are_the_options_in_snake_case() -> None:
    keys = set(settings_of(NODE_RUN))

    assert {
        "region",
        "root",
        "listen",
        "public_url",
        "bucket",
        "mode",
        "include",
        "exclude",
        "quota",
        "jurisdiction",
        "allow_jurisdiction",
        "origin_jurisdiction",
        "broker",
        "store",
        "peer",
        "status_every",
        "retry_parked_every",
        "node_key",
        "max_artifact_size",
        "session_timeout",
        "stuck_after",
        "ready_lag",
        "topic_prefix",
        "partitions",
        "data_dir",
        "view",
        "dist",
        "store_public_url",
    } == keys
    # Hidden options of the fault harness are no settings, nor is --config.
    assert not keys & {"fault_point", "clock_skew", "config"}


def test_each_key_has_its_variable_and_declared_ones_are_kept() -> None:
    envvars = {key: setting.envvar for key, setting in settings_of(NODE_RUN).items()}

    assert envvars["region"] == "FAIRSTREAM_REGION"
    assert envvars["public_url"] == "FAIRSTREAM_PUBLIC_URL"
    assert envvars["retry_parked_every"] == "FAIRSTREAM_RETRY_PARKED_EVERY"
    assert envvars["broker"] == "FAIRSTREAM_BROKER_URL"
    assert envvars["store"] == "FAIRSTREAM_STORE_URL"
    assert envvars["data_dir"] == "FAIRSTREAM_DATA_DIR"


def test_the_configurable_commands_are_the_long_running_ones() -> None:
    assert set(COMMANDS) == {"node-run", "directory-serve", "publishing-serve"}


# ---------------------------------------------------------------------------
# check_config: a good file, then each kind of problem
# ---------------------------------------------------------------------------


def test_a_good_file_has_no_problem(root_file: Path, node_key: Path) -> None:
    check = check_config(NODE_RUN, good_table(root_file, node_key), {})

    assert check.ok, check.problems
    assert sources(check)["region"] == "file"
    assert sources(check)["bucket"] == "default"
    assert values(check)["status_every"] == 10.0
    assert values(check)["include"] == ("drupal/*",)
    assert values(check)["root"] == root_file


def test_an_unknown_key_gets_a_did_you_mean(root_file: Path, node_key: Path) -> None:
    table = good_table(root_file, node_key) | {"regoin": "eu", "public-url": "https://x"}

    check = check_config(NODE_RUN, table, {})

    assert problems(check) == [("regoin", "unknown-key"), ("public-url", "unknown-key")]
    assert "did you mean 'region'?" in check.problems[0].message
    assert "did you mean 'public_url'?" in check.problems[1].message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("status_every", "ten", "must be a number, like status_every = 10.0; it is a string"),
        ("partitions", 2.5, "must be a whole number, like partitions = 4; it is a float"),
        ("partitions", True, "must be a whole number"),
        ("region", 7, 'must be a string, like region = "..."; it is an integer'),
        (
            "include",
            "drupal/*",
            'must be a list of strings, one per --include, like include = ["..."]',
        ),
        ("peer", [1], "must be a list of strings"),
    ],
)
def test_a_value_of_the_wrong_type_says_which_type(
    root_file: Path, node_key: Path, key: str, value: object, expected: str
) -> None:
    check = check_config(NODE_RUN, good_table(root_file, node_key) | {key: value}, {})

    assert problems(check) == [(key, "wrong-type")]
    assert expected in message(check)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("status_every", 0.01, "0.01 is not in the range 0.2<=x<=3600"),
        ("mode", "mirror", "'mirror' is not one of 'full', 'metadata-only'"),
        ("partitions", 0, "0 is not in the range 1<=x<=1024"),
    ],
)
def test_a_value_click_refuses_is_refused_with_the_option(
    root_file: Path, node_key: Path, key: str, value: object, expected: str
) -> None:
    check = check_config(NODE_RUN, good_table(root_file, node_key) | {key: value}, {})

    assert problems(check) == [(key, "invalid-value")]
    assert expected in message(check)
    assert "--help" in message(check)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("broker", "kafka://kafka-1", "'kafka-1', which has no port"),
        ("broker", "kafka+sasl-ssl://u:hunter2@k:9093", "names no mechanism"),
        ("store", "s3://minio:9000", "has no ACCESS:SECRET credentials"),
        ("quota", "lots", "write it like 500M, 20G"),
        ("listen", "8081", "is not HOST:PORT"),
        ("jurisdiction", "eu", "'eu' is not a code such as EU, DE or US-gov"),
        ("origin_jurisdiction", "USA", "'USA' is not a code"),
        ("allow_jurisdiction", ["serve=EU"], "'serve' is not a purpose"),
    ],
)
def test_a_value_the_command_would_refuse_as_it_starts_is_refused(
    root_file: Path, node_key: Path, key: str, value: object, expected: str
) -> None:
    check = check_config(NODE_RUN, good_table(root_file, node_key) | {key: value}, {})

    assert problems(check) == [(key, "invalid-value")]
    assert expected in message(check)
    assert "hunter2" not in message(check)


def test_a_missing_required_key_is_named_with_its_variable(root_file: Path, node_key: Path) -> None:
    table = good_table(root_file, node_key)
    del table["region"]

    check = check_config(NODE_RUN, table, {})

    assert problems(check) == [("region", "missing")]
    assert "add region = ... to the file or set FAIRSTREAM_REGION" in message(check)


def test_a_required_key_may_come_from_the_environment(root_file: Path, node_key: Path) -> None:
    table = good_table(root_file, node_key)
    del table["region"]

    check = check_config(NODE_RUN, table, {"FAIRSTREAM_REGION": "eu"})

    assert check.ok
    assert sources(check)["region"] == "environment"


def test_files_that_do_not_exist_are_problems(tmp_path: Path) -> None:
    table = good_table(tmp_path / "root.avro", tmp_path / "node.key")
    table["broker"] = f"kafka+ssl://k1:9093?ca={tmp_path / 'ca.pem'}"

    check = check_config(NODE_RUN, table, {})

    assert problems(check) == [("root", "file"), ("node_key", "file"), ("broker", "invalid-value")]
    assert "cannot read trust root file" in check.problems[0].message
    assert "--skip-file-checks" in check.problems[0].message
    assert "`node run` would create a new one" in check.problems[1].message
    assert "the CA file" in check.problems[2].message


def test_a_root_file_that_is_no_signed_root_is_a_problem(tmp_path: Path, node_key: Path) -> None:
    not_a_root = tmp_path / "root.avro"
    not_a_root.write_bytes(b"hello")

    check = check_config(NODE_RUN, good_table(not_a_root, node_key), {})

    assert problems(check) == [("root", "file")]
    assert "is not a valid signed root" in message(check)


def test_files_are_not_opened_for_a_file_written_for_another_machine(tmp_path: Path) -> None:
    table = good_table(tmp_path / "root.avro", tmp_path / "node.key")
    table["broker"] = f"kafka+ssl://k1:9093?ca={tmp_path / 'ca.pem'}"

    assert check_config(NODE_RUN, table, {}, check_files=False).ok


def test_a_peer_is_checked_whole_where_its_root_file_is(root_file: Path, node_key: Path) -> None:
    table = good_table(root_file, node_key) | {"peer": ["typo3:policy=mirror,broker=kafka://h:1"]}

    check = check_config(NODE_RUN, table, {})

    assert problems(check) == [("peer", "invalid-value")]
    assert "'mirror' is not one of canonical" in message(check)


@pytest.mark.parametrize("check_files", [True, False])
def test_a_peer_jurisdiction_that_is_no_code_is_refused_even_without_its_files(
    root_file: Path, node_key: Path, check_files: bool
) -> None:
    spec = f"typo3:policy=source,broker=kafka://h:1,root={root_file},jurisdiction=europe"
    table = good_table(root_file, node_key) | {"peer": [spec]}

    check = check_config(NODE_RUN, table, {}, check_files=check_files)

    assert problems(check) == [("peer", "invalid-value")]
    assert "'europe' is not a code such as EU" in message(check)
    assert "jurisdiction=EU" in message(check)


def test_a_peer_with_a_jurisdiction_is_accepted_without_its_files(tmp_path: Path) -> None:
    table = good_table(tmp_path / "root.avro", tmp_path / "node.key")
    table["peer"] = ["typo3:policy=source,broker=kafka://h:1,root=gone.avro,jurisdiction=EU"]

    assert check_config(NODE_RUN, table, {}, check_files=False).ok


def test_directory_serve_has_its_own_keys_and_checks(root_file: Path) -> None:
    table = {"root": str(root_file), "name": "directory", "region_map": ["10.0.0.0/33=eu"]}

    check = check_config(DIRECTORY_SERVE, table | {"region": "eu"}, {})

    assert problems(check) == [("region", "unknown-key"), ("region_map", "invalid-value")]
    assert "10.0.0.0/33=eu" in check.problems[1].message


# ---------------------------------------------------------------------------
# Precedence: environment over file over default
# ---------------------------------------------------------------------------


def test_the_environment_overrides_the_file(root_file: Path, node_key: Path) -> None:
    environ = {
        "FAIRSTREAM_LISTEN": "0.0.0.0:9000",
        "FAIRSTREAM_INCLUDE": "drupal/token drupal/pathauto",
        "FAIRSTREAM_STATUS_EVERY": "5",
        "FAIRSTREAM_BROKER_URL": "kafka://kafka.internal:9092",
        "FAIRSTREAM_BUCKET": "",  # empty: unset, as for click
    }

    check = check_config(NODE_RUN, good_table(root_file, node_key), environ)

    assert check.ok, check.problems
    assert values(check)["listen"] == "0.0.0.0:9000"
    assert values(check)["include"] == ("drupal/token", "drupal/pathauto")
    assert values(check)["status_every"] == 5.0
    assert values(check)["broker"] == "kafka://kafka.internal:9092"
    assert {k: sources(check)[k] for k in ("listen", "include", "mode", "bucket")} == {
        "listen": "environment",
        "include": "environment",
        "mode": "file",
        "bucket": "default",
    }


def test_an_environment_value_is_checked_like_a_file_value(root_file: Path, node_key: Path) -> None:
    check = check_config(
        NODE_RUN, good_table(root_file, node_key), {"FAIRSTREAM_STATUS_EVERY": "often"}
    )

    assert problems(check) == [("status_every", "invalid-value")]
    assert message(check).startswith("FAIRSTREAM_STATUS_EVERY (environment): ")


def test_secrets_in_urls_are_masked_for_display() -> None:
    assert shown_value(BROKER) == (
        "kafka+sasl-ssl://fairstream-eu:***@kafka-1:9093,kafka-2:9093?mechanism=SCRAM-SHA-512"
    )
    assert shown_value((STORE,)) == "s3://fairstream:***@minio:9000"
    assert shown_value(None) == shown_value(()) == "—"


# ---------------------------------------------------------------------------
# The real commands: --config, the environment and the command line
# ---------------------------------------------------------------------------


def run(args: list[str], env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(cli, args, env=CLEAN_ENV | (env or {}))


@pytest.mark.parametrize(
    ("env", "args", "region"),
    [
        ({}, [], "File!"),
        ({"FAIRSTREAM_REGION": "Env!"}, [], "Env!"),
        ({"FAIRSTREAM_REGION": "Env!"}, ["--region", "Cli!"], "Cli!"),
    ],
)
def test_node_run_takes_the_command_line_then_the_environment_then_the_file(
    tmp_path: Path, env: dict[str, str], args: list[str], region: str
) -> None:
    config = tmp_path / "node.toml"
    # The region is the first thing node run checks, before any IO: its error shows
    # which value won.
    config.write_text('region = "File!"\nroot = "root.avro"\nstatus_every = 2\n')

    result = run(["node", "run", "--config", str(config), *args], env)

    assert f"region {region!r} must be lower-case" in str(result.exception)


def test_the_config_file_may_be_named_by_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "directory.toml"
    config.write_text('root = "root.avro"\nname = "Bad Name"\n')

    result = run(["directory", "serve"], {"FAIRSTREAM_CONFIG": str(config)})

    assert "--name 'Bad Name' must be lower-case" in str(result.exception)


def test_a_required_option_missing_everywhere_is_clicks_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('root = "root.avro"\n')

    result = run(["node", "run", "--config", str(config)])

    assert result.exit_code == 2
    assert "Missing option '--region'" in result.output


def test_node_run_refuses_a_file_with_problems_before_starting(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('regoin = "eu"\nroot = "root.avro"\nstatus_every = "often"\n')

    result = run(["node", "run", "--config", str(config), "--region", "eu"])

    error = str(result.exception)
    assert error.startswith(f"configuration file {config}: ")
    assert "regoin (file) is not a setting of this command; did you mean 'region'?" in error
    assert "status_every (file) must be a number" in error
    assert f"fairstream config check {config} --command node-run" in error


def test_a_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("region: eu\n")

    with pytest.raises(Exception, match=r"is not a TOML file .*region = \"eu\""):
        read_config(config)


# ---------------------------------------------------------------------------
# fairstream config check
# ---------------------------------------------------------------------------


def test_config_check_prints_the_settings_and_where_they_came_from(
    tmp_path: Path, root_file: Path, node_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wide enough for each value on one line of the table.
    monkeypatch.setattr(config_cli.console, "width", 250)
    table = good_table(root_file, node_key)
    del table["store"]
    config = tmp_path / "node.toml"
    config.write_text("".join(f"{key} = {toml(value)}\n" for key, value in table.items()))

    result = run(["config", "check", str(config)], {"FAIRSTREAM_STORE_URL": STORE})

    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "file" in lines["region"] and "FAIRSTREAM_REGION" in lines["region"]
    assert "environment" in lines["store"]
    assert "default" in lines["bucket"]
    assert "fairstream-eu:***@kafka-1" in result.output
    assert "s3cr3t" not in result.output and "m1n10s3cr3t" not in result.output
    assert f"ok: {config} configures `fairstream node run`" in result.output


def test_config_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "directory.toml"
    config.write_text(
        'root = "missing-root.avro"\nlisten = "8090"\nstale_after = 0\nspot_check = 60\n'
    )

    result = run(["config", "check", str(config), "--command", "directory-serve"])

    assert result.exit_code == 1
    problem_lines = [line for line in result.output.splitlines() if line.startswith("✗ ")]
    assert len(problem_lines) == 4, result.output
    assert "spot_check (file) is not a setting of this command; did you mean" in result.output
    assert "cannot read trust root file missing-root.avro" in result.output
    assert "4 problems in" in result.output


def test_config_check_can_leave_the_files_alone(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('region = "eu"\nroot = "/etc/fairstream/root.avro"\n')

    result = run(["config", "check", str(config), "--skip-file-checks"])

    assert result.exit_code == 0, result.output


def toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)
