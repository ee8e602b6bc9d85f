"""A node's docroot: the p2 files nginx serves, each dated by its mtime (its Last-Modified).

A ``LocalView`` hands each batch of changes over as one list of ``FileOp`` to a
``DocrootFiles``:

- ``InlineFiles`` writes them at once, in the caller's thread (a test, a tool);
- ``FileWriterProcess`` sends them to a child process (``python -m
  connectors.docroot DOCROOT``) that writes them in order, so that a worker's
  event loop never waits on a file system call (issue 15: creating and renaming a
  package's two files took 27 % of a worker's main thread at 1,000 releases a
  second, most of it waiting to take the GIL back after each call, which a
  writer thread in the same process only makes worse: measured, ``docs/benchmarks.md``).

The docroot is a cache of the view the node holds in sqlite: files written late,
or lost, are written again from it whenever the view is opened
(``LocalView._load``), and a writer process that died is replaced and given every
file again (it skips those already in place).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

log = logging.getLogger(__name__)

#: One change to the docroot: the file's key under it (``p2/drupal/token.json``), its bytes
#: (None: remove the file) and its mtime, epoch seconds.
FileOp = tuple[str, bytes | None, int]

#: A frame on the writer's pipe: its length and kind (``o``: ops, ``s``: a sync token), then
#: the token, or each op as its key's length, mtime and body's length (``_REMOVE``: none),
#: key and body.
_FRAME = struct.Struct("!Ic")
_TOKEN = struct.Struct("!Q")
_OP = struct.Struct("!HqI")
_REMOVE = 0xFFFFFFFF
#: The writer's pipe (Linux allows up to 1 MiB without privileges): a batch of a few
#: hundred documents goes over in one or two writes.
PIPE_SIZE = 1 << 20
#: Ops per frame: a view opened on a large region hands every file over at once.
OPS_PER_FRAME = 500
#: How long ``close`` waits for the writer to finish what it was given.
CLOSE_SECONDS = 30.0
#: How long to wait before starting a writer again when the last one stopped at once.
RESTART_SECONDS = 1.0


class DocrootFiles(Protocol):
    """Where a ``LocalView`` sends the changes of its docroot, in order."""

    def write(self, ops: list[FileOp]) -> None:
        """Write ``ops``, after every op written before them. Never blocks on the disk for
        long (``FileWriterProcess``) or raises ``OSError`` (``InlineFiles``)."""

    def flush(self, timeout: float) -> bool:
        """Wait until every op written so far is on disk; False after ``timeout`` seconds."""

    def close(self) -> None:
        """Flush (bounded), then release what the writer holds."""


def write_document(path: Path, body: bytes, modified: int) -> None:
    """Write a docroot file atomically (temporary name, then rename) with mtime ``modified``.

    nginx reads a file whole or not at all, and dates it by its mtime; the temporary name
    starts with a dot, so it never looks like a package to nginx. Raises ``OSError``.
    """
    directory = os.fspath(path.parent)
    if directory not in _MADE_DIRECTORIES:
        os.makedirs(directory, exist_ok=True)
        _MADE_DIRECTORIES.add(directory)
    final = os.fspath(path)
    temporary = f"{directory}/.{path.name}.{threading.get_ident()}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:  # the directory was removed under us: make it again
        _MADE_DIRECTORIES.discard(directory)
        os.makedirs(directory, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(descriptor, body)
        # nginx's workers run as another user: readable by all, whatever the umask.
        os.fchmod(descriptor, 0o644)
        os.utime(descriptor, (modified, modified))
    finally:
        os.close(descriptor)
    os.replace(temporary, final)


#: Docroot directories this process made or found (one makedirs each, not one per write).
_MADE_DIRECTORIES: set[str] = set()


def apply_op(docroot: Path, op: FileOp) -> None:
    """Make one op true on disk. A file that already carries the op's mtime is left alone: a
    document's Last-Modified strictly increases whenever its bytes change
    (``schemas.view.next_view``), so that file holds these bytes (a stat, not a write: about
    150 µs less on ext4, measured). Raises ``OSError``."""
    key, body, modified = op
    path = docroot / key
    if body is None:
        path.unlink(missing_ok=True)
        return
    try:
        if int(os.stat(path).st_mtime) == modified:
            return
    except FileNotFoundError:
        pass
    write_document(path, body, modified)


class InlineFiles:
    """Writes each op at once, in the caller's thread."""

    def __init__(self, docroot: Path) -> None:
        self.docroot = docroot

    def write(self, ops: list[FileOp]) -> None:
        for op in ops:
            apply_op(self.docroot, op)

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


class FileWriterProcess:
    """Sends ops to a writer process of its own, which applies them in order.

    ``write`` only queues: a thread of this process sends each batch over the pipe in one
    write. Should the writer die (killed, or its pipe broken), a new one is started and
    given ``everything()`` (every file the docroot should hold) before anything newer.
    """

    def __init__(self, docroot: Path, everything: Callable[[], Iterable[FileOp]]) -> None:
        self.docroot = docroot
        self._everything = everything
        #: Batches of ops and sync tokens, in order (None: stop); framed by the sender thread,
        #: so a queued batch holds the documents the view holds anyway, not a copy of them.
        self._queue: queue.SimpleQueue[list[FileOp] | int | None] = queue.SimpleQueue()
        self._tokens = itertools.count(1)
        #: The last sync token the writer answered, and who waits for the next.
        self._synced = 0
        self._synced_changed = threading.Condition()
        #: Writers started so far (1 once running; more after a restart).
        self.started = 0
        self._closed = False
        self._process = self._start()
        self._sender = threading.Thread(target=self._send, name="docroot-sender", daemon=True)
        self._sender.start()

    def _start(self) -> subprocess.Popen[bytes]:
        # Importable wherever the node was started from.
        project = os.fspath(Path(__file__).resolve().parent.parent)
        path = os.environ.get("PYTHONPATH")
        process = subprocess.Popen(
            [sys.executable, "-m", "connectors.docroot", os.fspath(self.docroot)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pipesize=PIPE_SIZE,
            env={**os.environ, "PYTHONPATH": f"{project}{os.pathsep}{path}" if path else project},
        )
        self.started += 1
        threading.Thread(
            target=self._read_answers, args=(process,), name="docroot-answers", daemon=True
        ).start()
        return process

    def write(self, ops: list[FileOp]) -> None:
        if ops:
            self._queue.put(ops)

    def flush(self, timeout: float) -> bool:
        token = next(self._tokens)
        self._queue.put(token)
        with self._synced_changed:
            return self._synced_changed.wait_for(lambda: self._synced >= token, timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.flush(CLOSE_SECONDS):
            log.warning("docroot writer: files still unwritten after %.0f s", CLOSE_SECONDS)
        self._queue.put(None)
        self._sender.join(CLOSE_SECONDS)
        process = self._process
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _send(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            frames = [_frame(b"s", _TOKEN.pack(item))] if isinstance(item, int) else _frames(item)
            for frame in frames:
                while not self._deliver(frame):
                    self._replace_writer()

    def _deliver(self, frame: bytes) -> bool:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            _write_all(stdin.fileno(), frame)
        except (BrokenPipeError, ValueError):
            return False
        return True

    def _replace_writer(self) -> None:
        """The writer died: start another and give it every file, then carry on (what the
        dead one was given and did not write is among them)."""
        old = self._process
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            assert old.stdin is not None
            old.stdin.close()
            old.wait(1.0)
        log.error(
            "docroot writer (pid %d) stopped (exit code %s); starting another and writing "
            "every file it may have missed",
            old.pid,
            old.returncode,
        )
        while True:
            self._process = self._start()
            if all(self._deliver(frame) for frame in _frames(self._everything())):
                return
            time.sleep(RESTART_SECONDS)  # it stopped again at once: its errors say why

    def _read_answers(self, process: subprocess.Popen[bytes]) -> None:
        stdout = process.stdout
        assert stdout is not None
        with stdout:
            for line in stdout:
                with self._synced_changed:
                    self._synced = max(self._synced, int(line))
                    self._synced_changed.notify_all()


def _frames(ops: Iterable[FileOp]) -> Iterator[bytes]:
    """``ops`` in frames of at most ``OPS_PER_FRAME``."""
    batch = iter(ops)
    while chunk := list(itertools.islice(batch, OPS_PER_FRAME)):
        parts: list[bytes] = []
        for key, body, modified in chunk:
            name = key.encode()
            parts.append(_OP.pack(len(name), modified, _REMOVE if body is None else len(body)))
            parts.append(name)
            if body is not None:
                parts.append(body)
        yield _frame(b"o", b"".join(parts))


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), kind) + payload


def _ops_of(payload: bytes) -> Iterator[FileOp]:
    at = 0
    while at < len(payload):
        size, modified, length = _OP.unpack_from(payload, at)
        at += _OP.size
        key = payload[at : at + size].decode()
        at += size
        if length == _REMOVE:
            yield key, None, modified
            continue
        yield key, payload[at : at + length], modified
        at += length


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def _read_exactly(descriptor: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(descriptor, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(docroot: Path, source: int, answers: BinaryIO) -> None:
    """The writer process's loop: apply each batch of ops read from ``source`` in order,
    answer each sync token on ``answers``, until the parent closes the pipe. An op that fails
    (a full disk) is said on stderr and tried again with every later batch until it succeeds
    or a newer op of its file replaces it."""
    failed: dict[str, FileOp] = {}
    said: set[str] = set()  # failed keys already said on stderr
    while True:
        header = _read_exactly(source, _FRAME.size)
        if header is None:
            return
        length, kind = _FRAME.unpack(header)
        payload = _read_exactly(source, length)
        if payload is None:
            return
        if kind == b"s":
            answers.write(b"%d\n" % _TOKEN.unpack(payload)[0])
            answers.flush()
            continue
        retry, failed = list(failed.values()), {}
        for op in itertools.chain(retry, _ops_of(payload)):
            try:
                apply_op(docroot, op)
            except OSError as exc:
                if op[0] not in said:
                    print(f"docroot writer: {op[0]} not written: {exc}", file=sys.stderr)
                    said.add(op[0])
                failed[op[0]] = op
            else:
                failed.pop(op[0], None)
                said.discard(op[0])


if __name__ == "__main__":
    # A Ctrl-C or a service manager's SIGTERM reaches the whole process group: the writer
    # leaves the stop to its parent, which hands over what is left and closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Path(sys.argv[1]), sys.stdin.fileno(), sys.stdout.buffer)
