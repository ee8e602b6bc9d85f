"""A process's own copy of its region's view: sqlite on local disk, p2 in memory, a docroot.

Every worker and frontend of a region keeps one (``LocalView``) and fills it from
the region's compacted view topic (``ViewFollower``); the worker that applies a
package also writes it here first. Nothing of it is in the object store: a new
or replaced machine rebuilds it from the topic.

- sqlite (WAL, one transaction per batch) holds each package's encoded view
  record and the view-topic offsets applied, so a restart resumes where it was;
- the p2 documents are held in memory with their Last-Modified, for the node's
  own HTTP answers (no thread hop, no store request);
- with a docroot, each document is also a file whose mtime is its Last-Modified
  (written to a temporary name and renamed), for nginx's static path.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from connectors.docroot import DocrootFiles, FileOp, FileWriterProcess, InlineFiles
from connectors.kafka_connection import client_config
from connectors.kafka_followers import wait_for_partitions
from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import topic_partitions
from schemas import layout
from schemas.errors import BrokerUnavailableError, MalformedEventError
from schemas.package_state import PackageState
from schemas.view import PackageView, supersedes

log = logging.getLogger(__name__)

#: Package states kept decoded in memory (the rest are read from sqlite when needed).
STATE_CACHE_SIZE = 4096
#: Keys of the view topic that are not packages start with this byte: a worker's
#: read barrier (``ViewFollower.wait_past``), skipped by every reader.
MARKER_PREFIX = b"\x00"


def marker_key(reader: str) -> bytes:
    """The key of a reader's read-barrier markers on a view topic. Never raises."""
    return MARKER_PREFIX + b"barrier/" + reader.encode()


@dataclass(frozen=True)
class ServedDocument:
    """A p2 document as answered: its bytes, Last-Modified (epoch seconds) and that as an HTTP date."""

    body: bytes
    modified: int
    last_modified: str


class LocalView:
    """One process's copy of a region's view (thread-safe: the event loop writes what its
    worker applies, the follower's thread what the topic brings)."""

    def __init__(
        self, path: Path | None, *, docroot: Path | None = None, files_in_process: bool = False
    ) -> None:
        """``files_in_process``: the docroot's files are written by a process of their own
        (``connectors.docroot.FileWriterProcess``: a worker's or a frontend's event loop never
        waits on the disk), not at once in the caller's thread."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS view "
            "(package TEXT PRIMARY KEY, sequence INTEGER NOT NULL, record BLOB NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS followed "
            "(topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, "
            "PRIMARY KEY (topic, partition))"
        )
        #: Held while a write judges what is held and replaces it (the follower's thread and the
        #: event loop both write).
        self.lock = threading.RLock()
        self._files: DocrootFiles | None = None
        if docroot is not None:
            self._files = (
                FileWriterProcess(docroot, self._every_file)
                if files_in_process
                else InlineFiles(docroot)
            )
        #: Present packages, state stripped (``state=b""``): what the next write compares with.
        self._views: dict[str, PackageView] = {}
        self._documents: dict[str, ServedDocument] = {}
        self._states: OrderedDict[str, PackageState] = OrderedDict()
        #: Records this process wrote and has not read back from the topic yet.
        self._echoes: dict[str, bytes] = {}
        self._load()

    def _load(self) -> None:
        started = time.monotonic()
        for (record,) in self._db.execute("SELECT record FROM view"):
            view = PackageView.from_bytes(record)
            self._hold(view)
        if self._files is not None:
            self._files.write(self._file_ops(self._views.values()))
        if self._views:
            log.info(
                "local view: %d packages loaded in %.1f s",
                len(self._views),
                time.monotonic() - started,
            )

    # Reading -----------------------------------------------------------------------

    def held(self, package: str) -> PackageView | None:
        """The package's view as held (its state stripped), or None. Never raises."""
        return self._views.get(package)

    def document(self, key: str) -> ServedDocument | None:
        """A p2 document by key (``p2/drupal/token.json``), or None. Never raises."""
        return self._documents.get(key)

    def packages(self) -> list[str]:
        """Every package held, sorted."""
        return sorted(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def load(self, package: str) -> PackageState | None:
        """The package's state, or None when the region has none. Never raises for a view
        this module wrote."""
        with self.lock:
            cached = self._states.get(package)
            if cached is not None:
                self._states.move_to_end(package)
                return cached
            row = self._db.execute(
                "SELECT record FROM view WHERE package = ?", (package,)
            ).fetchone()
        if row is None:
            return None
        view = PackageView.from_bytes(row[0])
        if view.state is None:
            return None
        state = PackageState.from_json(view.state)
        self._cache_state(state)
        return state

    def next_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read of each partition of ``topic`` followed so far."""
        with self.lock:
            rows = self._db.execute(
                "SELECT partition, next_offset FROM followed WHERE topic = ?", (topic,)
            ).fetchall()
        return {partition: offset for partition, offset in rows}

    # Writing -----------------------------------------------------------------------

    def put(
        self,
        view: PackageView,
        encoded: bytes,
        *,
        state: PackageState | None = None,
    ) -> None:
        """Hold ``view`` (whose record is ``encoded``) unless a newer one of its package is held
        (a newer owner's record the follower read meanwhile). Raises ``sqlite3.Error`` when
        the local disk fails."""
        self.put_newest([(view, encoded, state)])

    def put_newest(self, items: Iterable[tuple[PackageView, bytes, PackageState | None]]) -> None:
        """``put`` of several views in one transaction: of each package, the newest of these
        and what is held. Raises ``sqlite3.Error`` when the local disk fails (nothing is held
        then)."""
        newest: dict[str, tuple[PackageView, bytes, PackageState | None]] = {}
        for item in items:
            kept = newest.get(item[0].package)
            if kept is None or item[0].sequence >= kept[0].sequence:
                newest[item[0].package] = item
        with self.lock:
            chosen = [
                (view, encoded, state)
                for view, encoded, state in newest.values()
                if (held := self._views.get(view.package)) is None or held.sequence <= view.sequence
            ]
            self.put_many((view, encoded) for view, encoded, _ in chosen)
            for _, _, state in chosen:
                if state is not None:
                    self._cache_state(state)

    def put_many(
        self,
        views: Iterable[tuple[PackageView, bytes]],
        *,
        followed: tuple[str, Mapping[int, int]] | None = None,
    ) -> None:
        """Hold several views in one transaction, and record the topic offsets they came from.

        Raises ``sqlite3.Error`` when the local disk fails (nothing is held then).
        """
        items = list(views)
        with self.lock:
            self._db.execute("BEGIN")
            try:
                for view, encoded in items:
                    if view.removed:
                        self._db.execute("DELETE FROM view WHERE package = ?", (view.package,))
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO view (package, sequence, record) "
                            "VALUES (?, ?, ?)",
                            (view.package, view.sequence, encoded),
                        )
                if followed is not None:
                    topic, offsets = followed
                    self._db.executemany(
                        "INSERT OR REPLACE INTO followed (topic, partition, next_offset) "
                        "VALUES (?, ?, ?)",
                        [(topic, partition, offset) for partition, offset in offsets.items()],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for view, _ in items:
                self._states.pop(view.package, None)
                self._hold(view)
            if self._files is not None:
                # Under the lock: the docroot's changes go in the order they are held.
                self._files.write(self._file_ops(view for view, _ in items))

    def expect_echo(self, package: str, encoded: bytes) -> None:
        """This process is producing ``encoded`` for ``package`` and holds it once the broker
        acknowledged it: the follower, which may read it back before that, skips it."""
        with self.lock:
            self._echoes[package] = encoded

    def is_echo(self, package: str, encoded: bytes) -> bool:
        """Whether ``encoded`` is the record this process wrote last for ``package`` (read back
        from the topic: nothing to do)."""
        with self.lock:
            if self._echoes.get(package) == encoded:
                del self._echoes[package]
                return True
            return False

    def _hold(self, view: PackageView) -> None:
        old = self._views.get(view.package)
        if view.removed:
            self._views.pop(view.package, None)
            if old is not None:
                for key in old.documents():
                    self._documents.pop(key, None)
            return
        self._views[view.package] = replace(view, state=b"")
        for key, (body, modified) in view.documents().items():
            self._documents[key] = ServedDocument(body, modified, formatdate(modified, usegmt=True))

    def _cache_state(self, state: PackageState) -> None:
        with self.lock:
            self._states[state.package] = state
            self._states.move_to_end(state.package)
            while len(self._states) > STATE_CACHE_SIZE:
                self._states.popitem(last=False)

    def _file_ops(self, views: Iterable[PackageView]) -> list[FileOp]:
        """The docroot's changes for ``views``: each document (the writer leaves a file that
        already carries its Last-Modified alone, ``connectors.docroot.apply_op``), or a
        removed package's two files gone."""
        ops: list[FileOp] = []
        for view in views:
            if view.removed:
                package = view.package
                ops.append((layout.p2_key(package), None, 0))
                ops.append((layout.p2_key(package, dev=True), None, 0))
            else:
                ops.extend(
                    (key, body, modified) for key, (body, modified) in view.documents().items()
                )
        return ops

    def _every_file(self) -> list[FileOp]:
        """Every file the docroot should hold (for a docroot writer that replaces one that died)."""
        with self.lock:
            return [(key, doc.body, doc.modified) for key, doc in self._documents.items()]

    def flush_files(self, timeout: float = 30.0) -> bool:
        """Wait until the docroot holds every document held so far; False after ``timeout``."""
        return self._files is None or self._files.flush(timeout)

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
        with self.lock:
            self._db.close()


OnOlder = Callable[[PackageView, PackageView], None]


class ViewFollower:
    """Follows a region's view topic into a ``LocalView``, in a thread.

    Reads every partition from where the local view left off (0 for a new one), keeps
    the highest sequence of each package (``schemas.view.supersedes``), skips its own
    process's echoes and the read-barrier markers, and tells ``on_older(incoming, held)``
    of a record older than what is held (compaction may keep it: its owner re-sends).
    """

    def __init__(
        self,
        broker_url: str,
        topic: str,
        view: LocalView,
        *,
        on_older: OnOlder | None = None,
        name: str = "view",
    ) -> None:
        self._broker_url = broker_url
        self._topic = topic
        self._view = view
        self._on_older = on_older
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}:{topic}", daemon=True)
        self._progress = threading.Condition()
        #: Next offset applied, per partition.
        self.positions: dict[int, int] = view.next_offsets(topic)
        self.records = 0
        self.failed: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def past(self, targets: Mapping[int, int]) -> bool:
        """Whether every partition in ``targets`` was read past its offset there."""
        with self._progress:
            return all(self.positions.get(p, 0) > offset for p, offset in targets.items())

    def wait_past(self, targets: Mapping[int, int], timeout: float) -> bool:
        """Block until ``past(targets)`` or ``timeout`` seconds; returns whether it got there."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while not all(self.positions.get(p, 0) > o for p, o in targets.items()):
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._progress.wait(min(left, 0.5))
            return True

    def catch_up(self, producer: EventProducer, reader: str, *, timeout: float = 600.0) -> None:
        """Block until the follower has read the topic to its end: a marker is produced to every
        partition and must be read back (exact on any broker). A process serves its view only
        after this, so a restarted one never answers with what it held before it stopped.

        Raises ``BrokerUnavailableError`` when that takes longer than ``timeout`` seconds.
        """
        targets = {
            partition: producer.produce(
                self._topic, marker_key(reader), b"", partition=partition
            ).offset
            for partition in topic_partitions(self._broker_url, self._topic)
        }
        started = time.monotonic()
        if not self.wait_past(targets, timeout):
            raise BrokerUnavailableError(
                f"the view topic {self._topic} was not read to its end within {timeout:.0f} s "
                f"({self.failed or 'still reading'}); is the broker answering?"
            )
        log.info(
            "view %s read to its end: %d packages, %d records in %.1f s",
            self._topic,
            len(self._view),
            self.records,
            time.monotonic() - started,
        )

    def _run(self) -> None:
        consumer = Consumer(
            {
                **client_config(self._broker_url),
                "group.id": "fairstream-view-follower",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                "log.connection.close": False,
            }
        )
        try:
            partitions = wait_for_partitions(consumer, self._topic, self._stop, every=0.5)
            consumer.assign(
                [TopicPartition(self._topic, p, self.positions.get(p, 0)) for p in partitions]
            )
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=1000, timeout=0.1)
                if messages:
                    self._apply(messages)
        except KafkaException as exc:
            self.failed = str(exc)
            log.error("following %s stopped: %s", self._topic, exc)
        finally:
            consumer.close()

    def _apply(self, messages: list[Message]) -> None:
        with self._view.lock:  # judged and held at once: the worker's own writes wait
            self._apply_locked(messages)

    def _apply_locked(self, messages: list[Message]) -> None:
        taken: dict[str, tuple[PackageView, bytes]] = {}
        offsets: dict[int, int] = {}
        for message in messages:
            if message.error() is not None:
                continue
            partition = message.partition()
            offset = message.offset()
            if partition is None or offset is None:
                continue
            offsets[partition] = offset + 1
            key = message.key()
            value = message.value()
            if value is None or key is None or key.startswith(MARKER_PREFIX):
                continue
            self.records += 1
            if self._view.is_echo(key.decode("utf-8", "replace"), value):
                continue
            try:
                incoming = PackageView.from_bytes(value)
            except MalformedEventError as exc:
                log.error("%s@%s: not a view record, skipped: %s", self._topic, offsets, exc)
                continue
            held = taken[incoming.package][0] if incoming.package in taken else None
            if held is None:
                held = self._view.held(incoming.package)
            if supersedes(incoming, held):
                taken[incoming.package] = (incoming, value)
            elif held is not None and incoming.sequence < held.sequence and self._on_older:
                try:
                    self._on_older(incoming, held)
                except Exception:  # a re-send is best effort; the owner's next write repairs
                    log.exception("re-sending %s after an older record failed", incoming.package)
        self._view.put_many(taken.values(), followed=(self._topic, offsets))
        with self._progress:
            self.positions.update(offsets)
            self._progress.notify_all()
