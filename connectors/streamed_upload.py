"""A download streamed into an upload: bytes handed from the event loop to a blocking
uploader in a thread, bounded in memory, the last bytes held back until the checks pass.

The downloader (on the event loop) ``send``s chunks and then ``finish``es with the
verdict of its checks; the uploader (``minio``'s ``put_object`` in a thread) ``read``s
them as a file. The read that would hand over the object's last bytes first waits for
the verdict and raises ``UploadAbandonedError`` when there was one against the bytes, so
an uploader that stores nothing when its source raises (``ObjectStore.put_stream``) never
stores bytes that were not checked: a multipart upload is aborted, a single-part object
never sent. ``StreamTail`` keeps the last bytes, for checks that read the end of a file
(a zip's central directory) without the whole of it on disk or in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections import deque
from collections.abc import Callable

#: Bytes queued between the download and the upload, per stream: one part of the upload
#: (``connectors.store.STREAM_PART_SIZE``), so the download goes on while a part is sent.
FEED_BYTES = 8 * 1024 * 1024
#: Bytes kept of a stream's end for the zip check: a central directory of about 60,000
#: files. A zip whose directory is larger is fetched through a temporary file instead.
TAIL_BYTES = 8 * 1024 * 1024
#: How long the uploader waits for bytes before it checks that the downloader still runs.
_WAKE_SECONDS = 1.0


class UploadAbandonedError(Exception):
    """Raised to the uploader: the download failed or its bytes are not the signed ones,
    so the upload must store nothing. Not an ``OSError``: stores pass it through."""


class UploadStoppedError(Exception):
    """Raised to the downloader: the uploader stopped reading (the store failed)."""


class TailTooShortError(Exception):
    """A check read further back than ``StreamTail`` keeps."""


_End = object()


class UploadFeed:
    """The bytes of one object of ``size`` bytes, from the event loop to an uploader thread.

    Loop side: ``send`` (waits while ``buffer_bytes`` are queued), then ``finish`` once,
    with ``None`` when every check passed or the error that failed. Thread side: ``read``,
    a file's ``read``; ``stopped`` when the uploader returns or raises. ``on_read`` is
    called with the bytes handed over so far before each read (the fault harness's hook).
    """

    def __init__(
        self,
        size: int,
        *,
        loop: asyncio.AbstractEventLoop,
        buffer_bytes: int = FEED_BYTES,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.size = size
        self._loop = loop
        self._limit = buffer_bytes
        self._on_read = on_read
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: deque[object] = deque()
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()
        self._finished = False
        self._stopped = False
        self._pending = memoryview(b"")
        self._handed = 0
        #: The end (with its verdict) was taken: every later read returns ``b""``.
        self._ended = False

    # The event loop's side ---------------------------------------------------

    async def send(self, chunk: bytes) -> None:
        """Queue ``chunk`` for the uploader; waits while the queue is full. Raises
        ``UploadStoppedError`` when the uploader no longer reads."""
        while not self._room.is_set():
            await self._room.wait()
        with self._lock:
            if self._stopped:
                raise UploadStoppedError("the upload stopped reading")
            self._items.append(chunk)
            self._queued += len(chunk)
            if self._queued >= self._limit:
                # Cleared under the lock, in the same step as the count: a read that
                # frees room afterwards schedules ``set`` after this.
                self._room.clear()
            self._ready.notify()

    def finish(self, error: BaseException | None) -> None:
        """End the stream: ``None`` lets the uploader take the last bytes; an error makes
        its next read raise ``UploadAbandonedError``. Never blocks; later calls do nothing."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._items.append(_End if error is None else error)
            self._ready.notify()

    # The uploader's side (a thread) ------------------------------------------

    def read(self, amount: int = -1) -> bytes:
        """Up to ``amount`` bytes (all that are left when negative), fewer only at the end,
        then ``b""``.

        Raises ``UploadAbandonedError`` when the stream was finished with an error; the
        read that completes the object waits for ``finish`` first.
        """
        if self._ended:
            return b""
        if self._on_read is not None:
            self._on_read(self._handed)
        wanted = self.size - self._handed if amount < 0 else amount
        pieces: list[memoryview] = []
        got = 0
        while got < wanted:
            if not self._pending:
                item = self._take()
                if item is _End:
                    self._ended = True
                    break
                self._pending = memoryview(item)  # type: ignore[arg-type]
            piece = self._pending[: wanted - got]
            self._pending = self._pending[len(piece) :]
            pieces.append(piece)
            got += len(piece)
        self._handed += got
        if self._handed >= self.size and not self._ended:
            self._await_verdict()
        return b"".join(pieces)

    def stopped(self) -> None:
        """The uploader returned or raised: ``send`` raises from now on."""
        with self._lock:
            self._stopped = True
        self._wake_sender()

    def _take(self) -> object:
        """The next chunk or ``_End``; raises for an error. Freed room wakes the sender."""
        with self._lock:
            while not self._items:
                if not self._ready.wait(_WAKE_SECONDS) and self._loop.is_closed():
                    raise UploadAbandonedError("the download's event loop is gone")
            item = self._items.popleft()
            if isinstance(item, bytes):
                self._queued -= len(item)
                wake = self._queued < self._limit
            else:
                wake = False
        if isinstance(item, BaseException):
            raise UploadAbandonedError(f"the download failed: {item}")
        if wake:
            self._wake_sender()
        return item

    def _await_verdict(self) -> None:
        item = self._take()
        self._ended = True
        if item is not _End:
            # More bytes than the object's size: the downloader caps them, so never.
            raise UploadAbandonedError(f"the stream had more than its {self.size} bytes")

    def _wake_sender(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._room.set)


class StreamTail(io.RawIOBase):
    """A read-only, seekable file of ``size`` bytes of which only the end is known.

    Reading before the known end raises ``TailTooShortError``: for ``zipfile``, which
    reads only the end of an archive (its central directory) to list the names.
    """

    def __init__(self, size: int, end: bytes) -> None:
        super().__init__()
        self._size = size
        self._end = end
        self._start = size - len(end)
        self._at = 0

    @property
    def known_from(self) -> int:
        """The offset of the first byte this tail holds."""
        return self._start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"cannot seek to {base + offset}, before the start of the file")
        self._at = base + offset
        return self._at

    def read(self, amount: int | None = -1) -> bytes:
        if self._at >= self._size:
            return b""
        if self._at < self._start:
            raise TailTooShortError(
                f"byte {self._at} was read, and only the last {len(self._end)} of "
                f"{self._size} bytes are kept"
            )
        end = self._size if amount is None or amount < 0 else min(self._size, self._at + amount)
        piece = self._end[self._at - self._start : end - self._start]
        self._at = end
        return piece

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


class RollingTail:
    """The last ``limit`` bytes (at least) of a stream of chunks, without copying them."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self.seen = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._held += len(chunk)
        self.seen += len(chunk)
        while self._chunks and self._held - len(self._chunks[0]) >= self._limit:
            self._held -= len(self._chunks.popleft())

    def file(self) -> StreamTail:
        """The stream so far as a file of which the kept end is readable."""
        return StreamTail(self.seen, b"".join(self._chunks))
