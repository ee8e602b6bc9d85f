"""The CLI an operator types: trust roots, key files, and clear errors for their mistakes."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
from click.testing import CliRunner

from infra import devstack
from schemas.errors import ConfigurationError, RootRotationError
from schemas.signing import SigningKey
from schemas.trust import load_pinned_root, verify_root_update
from services.cli.main import cli
from services.publishing.trust_admin import write_key_pair

pytestmark = pytest.mark.integration


def keys(tmp_path: Path, *names: str) -> dict[str, Path]:
    """Private key files NAME.key (with NAME.pub beside them)."""
    paths = {}
    for name in names:
        paths[name] = tmp_path / f"{name}.key"
        write_key_pair(SigningKey.generate(), paths[name])
    return paths


def test_trust_init_writes_a_root_nodes_can_pin(tmp_path: Path) -> None:
    key = keys(tmp_path, "root", "drupal")
    out = tmp_path / "root.avro"

    result = CliRunner().invoke(
        cli,
        [
            "trust",
            "init",
            str(out),
            "--root-key",
            str(key["root"]),
            "--delegate",
            f"drupal/*=drupal.org:{key['drupal'].with_suffix('.pub')}",
        ],
    )

    assert result.exit_code == 0, result.output
    root = load_pinned_root(out.read_bytes())
    assert root.version == 1
    delegation = root.delegation_for("drupal/token")
    assert delegation is not None and delegation.publisher == "drupal.org"


def test_trust_init_needs_the_private_root_keys(tmp_path: Path) -> None:
    key = keys(tmp_path, "root")
    result = CliRunner().invoke(
        cli,
        [
            "trust",
            "init",
            str(tmp_path / "r.avro"),
            "--root-key",
            str(key["root"].with_suffix(".pub")),
        ],
    )

    assert isinstance(result.exception, ConfigurationError)
    assert "private .key files" in str(result.exception)


def test_trust_rotate_refuses_a_rotation_signed_only_by_the_new_keys(tmp_path: Path) -> None:
    key = keys(tmp_path, "old", "new", "drupal")
    delegate = f"drupal/*=drupal.org:{key['drupal'].with_suffix('.pub')}"
    runner = CliRunner()
    init = runner.invoke(
        cli,
        [
            "trust",
            "init",
            str(tmp_path / "v1.avro"),
            "--root-key",
            str(key["old"]),
            "--delegate",
            delegate,
        ],
    )
    assert init.exit_code == 0, init.output
    rotate = [
        "trust",
        "rotate",
        str(tmp_path / "v1.avro"),
        str(tmp_path / "v2.avro"),
        "--root-key",
        str(key["new"].with_suffix(".pub")),
        "--delegate",
        delegate,
    ]

    refused = runner.invoke(cli, [*rotate, "--sign", str(key["new"])])

    assert isinstance(refused.exception, RootRotationError)
    assert not (tmp_path / "v2.avro").exists(), "a refused root must not be written"

    accepted = runner.invoke(cli, [*rotate, "--sign", str(key["old"]), "--sign", str(key["new"])])

    assert accepted.exit_code == 0, accepted.output
    v1 = load_pinned_root((tmp_path / "v1.avro").read_bytes())
    assert verify_root_update(v1, (tmp_path / "v2.avro").read_bytes()).version == 2


def test_node_run_with_a_bad_pinned_root_says_which_file(
    stack: devstack.Stack, tmp_path: Path
) -> None:
    bad = tmp_path / "root.avro"
    bad.write_bytes(b"not a root")

    result = CliRunner().invoke(
        cli,
        [
            "node",
            "run",
            "--region",
            "eu",
            "--root",
            str(bad),
            "--broker",
            stack.broker_url,
            "--store",
            stack.store_url,
            "--topic-prefix",
            f"cli-{uuid4().hex[:8]}.",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
        ],
    )

    assert isinstance(result.exception, ConfigurationError)
    assert str(bad) in str(result.exception)
    assert "fairstream trust init" in str(result.exception)
