"""connectors.streamed_upload: the feed from a download on the event loop to an uploader
thread, and the kept end of a stream that zipfile reads. No sockets: a thread reads the
feed as a store's upload would (``tests/integration/test_streamed_fetch.py`` runs the
same pieces against the real S3 server and aiohttp)."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import threading
import zipfile
from collections.abc import Callable, Iterator

import pytest

from connectors.streamed_upload import (
    RollingTail,
    StreamTail,
    TailTooShortError,
    UploadAbandonedError,
    UploadFeed,
    UploadStoppedError,
)

#: How long a test waits for what must happen (a thread's read, a send resuming): only a
#: hang reaches it.
PATIENCE = 10.0
#: How long a test lets something that must not happen have its chance to.
SETTLE = 0.2


class Reader:
    """A thread reading a feed in pieces of the given sizes, as a store's upload does."""

    def __init__(self, feed: UploadFeed, sizes: Iterator[int]) -> None:
        self.feed = feed
        self.pieces: list[bytes] = []
        self.error: BaseException | None = None
        self.last_read_returned = threading.Event()
        self._sizes = sizes
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Reader:
        self._thread.start()
        return self

    def _run(self) -> None:
        left = self.feed.size
        try:
            while left > 0:
                piece = self.feed.read(min(next(self._sizes), left))
                if not piece:
                    break
                self.pieces.append(piece)
                left -= len(piece)
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            self.last_read_returned.set()

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)

    async def join(self) -> None:
        await asyncio.to_thread(self._thread.join, PATIENCE)
        assert not self._thread.is_alive(), "the reader is still blocked in a read"


def odd_sizes() -> Iterator[int]:
    return itertools.cycle([1, 7, 4093, 65_537, 3, 250_001])


def chunks_of(data: bytes, sizes: Iterator[int]) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        size = next(sizes)
        yield data[at : at + size]
        at += size


async def feed_all(feed: UploadFeed, data: bytes) -> None:
    for chunk in chunks_of(data, itertools.cycle([100_003, 17, 65_536, 1])):
        await feed.send(chunk)


# --- UploadFeed ---------------------------------------------------------------------


async def test_every_byte_comes_through_in_order_in_reads_of_odd_sizes() -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    feed = UploadFeed(len(data), loop=asyncio.get_running_loop(), buffer_bytes=256 * 1024)
    reader = Reader(feed, odd_sizes()).start()

    await feed_all(feed, data)
    feed.finish(None)
    await reader.join()

    assert reader.error is None
    assert reader.data == data
    assert len(reader.pieces) > 10  # really read in pieces, each at most the size asked


async def test_the_read_that_completes_the_object_waits_for_finish() -> None:
    data = os.urandom(100_000)
    feed = UploadFeed(len(data), loop=asyncio.get_running_loop())
    reader = Reader(feed, odd_sizes()).start()

    await feed_all(feed, data)
    # Every byte is queued, and the reader has all but the last ones: the read that would
    # complete the object waits for the verdict of the download's checks.
    returned = await asyncio.to_thread(reader.last_read_returned.wait, SETTLE)
    assert not returned
    assert len(reader.data) < len(data)

    feed.finish(None)
    await reader.join()

    assert reader.error is None
    assert reader.data == data


async def test_reads_past_the_end_return_nothing_as_a_file_does() -> None:
    feed = UploadFeed(10, loop=asyncio.get_running_loop())
    await feed.send(b"0123456789")
    feed.finish(None)

    def read_like_a_file() -> list[bytes]:
        return [feed.read(4), feed.read(100), feed.read(100), feed.read(-1)]

    pieces = await asyncio.wait_for(asyncio.to_thread(read_like_a_file), PATIENCE)

    assert pieces == [b"0123", b"456789", b"", b""]


async def test_a_failed_check_makes_the_completing_read_raise() -> None:
    data = os.urandom(100_000)
    feed = UploadFeed(len(data), loop=asyncio.get_running_loop())
    reader = Reader(feed, odd_sizes()).start()

    await feed_all(feed, data)
    await asyncio.to_thread(reader.last_read_returned.wait, SETTLE)
    feed.finish(ValueError("sha256 differs from the signed one"))
    await reader.join()

    assert isinstance(reader.error, UploadAbandonedError)
    assert "sha256 differs from the signed one" in str(reader.error)
    # The reader never got the object's last bytes: an uploader cannot complete it.
    assert len(reader.data) < len(data)
    assert data.startswith(reader.data)


async def test_an_error_before_the_end_makes_the_waiting_read_raise() -> None:
    feed = UploadFeed(1000, loop=asyncio.get_running_loop())
    reader = Reader(feed, iter([1000] * 10)).start()

    await feed.send(b"x" * 400)  # the download breaks off after 400 of 1,000 bytes
    feed.finish(ConnectionResetError("the origin hung up"))
    await reader.join()

    assert isinstance(reader.error, UploadAbandonedError)
    assert "the origin hung up" in str(reader.error)
    assert reader.pieces == []


async def test_finish_is_final() -> None:
    feed = UploadFeed(3, loop=asyncio.get_running_loop())
    reader = Reader(feed, iter([3])).start()

    await feed.send(b"abc")
    feed.finish(ValueError("bad"))
    feed.finish(None)  # too late: the first verdict stands
    await reader.join()

    assert isinstance(reader.error, UploadAbandonedError)


async def test_send_waits_while_the_buffer_is_full_and_resumes_on_a_read() -> None:
    feed = UploadFeed(100, loop=asyncio.get_running_loop(), buffer_bytes=30)

    await feed.send(b"a" * 20)
    await feed.send(b"b" * 10)  # 30 bytes queued: the buffer is full
    blocked = asyncio.create_task(feed.send(b"c" * 10))
    await asyncio.sleep(SETTLE)
    assert not blocked.done()

    first = await asyncio.to_thread(feed.read, 20)
    await asyncio.wait_for(blocked, PATIENCE)

    assert first == b"a" * 20
    assert await asyncio.to_thread(feed.read, 20) == b"b" * 10 + b"c" * 10


async def test_send_raises_once_the_uploader_stopped() -> None:
    feed = UploadFeed(100, loop=asyncio.get_running_loop())
    await feed.send(b"x" * 10)

    feed.stopped()

    with pytest.raises(UploadStoppedError):
        await feed.send(b"y" * 10)


async def test_a_send_waiting_for_room_raises_when_the_uploader_stops() -> None:
    feed = UploadFeed(100, loop=asyncio.get_running_loop(), buffer_bytes=10)
    await feed.send(b"x" * 10)
    blocked = asyncio.create_task(feed.send(b"y" * 10))
    await asyncio.sleep(SETTLE)
    assert not blocked.done()

    await asyncio.to_thread(feed.stopped)  # from the uploader's thread, as in stream_artifact

    with pytest.raises(UploadStoppedError):
        await asyncio.wait_for(blocked, PATIENCE)


async def test_on_read_sees_the_bytes_handed_before_each_read() -> None:
    seen: list[int] = []
    feed = UploadFeed(10, loop=asyncio.get_running_loop(), on_read=seen.append)
    reader = Reader(feed, iter([4, 4, 4])).start()

    await feed.send(b"0123456789")
    feed.finish(None)
    await reader.join()

    assert reader.data == b"0123456789"
    assert seen == [0, 4, 8]


# --- StreamTail and RollingTail -----------------------------------------------------


def zip_of(names: list[str], *, content: Callable[[int], bytes] = lambda n: b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for n, name in enumerate(names):
            archive.writestr(name, content(n))
    return buffer.getvalue()


def central_directory_size(data: bytes) -> int:
    """Bytes from the central directory's first to the end of the zip (its end record
    says where the directory starts)."""
    end = data.rindex(b"PK\x05\x06")
    return len(data) - int.from_bytes(data[end + 16 : end + 20], "little")


NAMES = ["token/", "token/token.info.yml", *(f"token/src/File{n}.php" for n in range(200))]
ZIP = zip_of(NAMES, content=lambda n: os.urandom(n * 37))


def test_a_tail_holding_the_central_directory_lists_the_zip() -> None:
    kept = central_directory_size(ZIP)
    assert kept < len(ZIP) // 2  # the tail really is a part of the zip

    for end in (ZIP[-kept:], ZIP[-(kept + 1000) :], ZIP):
        with zipfile.ZipFile(StreamTail(len(ZIP), end)) as archive:
            assert archive.namelist() == NAMES


def test_a_tail_short_of_the_central_directory_is_too_short() -> None:
    kept = central_directory_size(ZIP)

    for end in (ZIP[-(kept - 1) :], ZIP[-22:], ZIP[-10:]):
        with pytest.raises(TailTooShortError, match=f"only the last {len(end)} of {len(ZIP)}"):
            zipfile.ZipFile(StreamTail(len(ZIP), end))


def test_a_stream_tail_reads_and_seeks_like_a_file() -> None:
    data = bytes(range(100))
    tail = StreamTail(len(data), data[60:])

    assert tail.known_from == 60
    assert tail.seek(0, io.SEEK_END) == 100
    assert tail.seek(-30, io.SEEK_CUR) == 70
    assert tail.read(5) == data[70:75]
    assert tail.tell() == 75
    assert tail.read() == data[75:]
    assert tail.read(10) == b""
    tail.seek(60)
    assert tail.read(None) == data[60:]
    tail.seek(59)
    with pytest.raises(TailTooShortError):
        tail.read(1)
    with pytest.raises(OSError, match="before the start"):
        tail.seek(-101, io.SEEK_END)


@pytest.mark.parametrize("limit", [1, 1000, 65_536, 200_000])
def test_a_rolling_tail_keeps_at_least_its_limit(limit: int) -> None:
    data = os.urandom(700_001)
    sizes = [1, 4096, 65_537, 3, 100_000, 17]
    rolling = RollingTail(limit)

    for chunk in chunks_of(data, itertools.cycle(sizes)):
        rolling.add(chunk)
    tail = rolling.file()

    assert rolling.seen == len(data)
    assert tail.seek(0, io.SEEK_END) == len(data)
    assert len(data) - tail.known_from >= limit
    # It drops what is further back than it needs: never a chunk more than its limit.
    assert len(data) - tail.known_from < limit + max(sizes)
    tail.seek(tail.known_from)
    assert tail.read() == data[tail.known_from :]


def test_a_rolling_tail_keeps_everything_of_a_short_stream() -> None:
    rolling = RollingTail(1_000_000)
    for chunk in chunks_of(ZIP, itertools.cycle([1000, 7, 65_536])):
        rolling.add(chunk)
    tail = rolling.file()

    assert tail.known_from == 0
    assert tail.read() == ZIP
    tail.seek(0)
    with zipfile.ZipFile(tail) as archive:
        assert archive.namelist() == NAMES


def test_a_rolling_tail_of_nothing_is_an_empty_file() -> None:
    tail = RollingTail(10).file()

    assert tail.seek(0, io.SEEK_END) == 0
    assert tail.read() == b""
