"""connectors.origin.stream_artifact into S3Store.put_stream: a download from a real aiohttp
server on loopback streamed straight into the real embedded S3 server, and nothing of it
stored under the key unless every check passed (size, sha256, sha1, the zip's top
directory read from the stream's end)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import os
import socket
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, cast
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.origin import STREAM_CHUNK_SIZE, FetchLimits, first_delivering, stream_artifact
from connectors.store import STREAM_PART_SIZE, S3Store, StoreLocation
from connectors.streamed_upload import (
    TAIL_BYTES,
    StreamTail,
    TailTooShortError,
    UploadAbandonedError,
    UploadFeed,
)
from schemas import layout
from schemas.errors import (
    ArtifactMismatchError,
    OriginUnavailableError,
    StoreUnavailableError,
    WrongPackageError,
)
from schemas.events import Artifact
from streams.artifact_fetch import check_top_directory

pytestmark = pytest.mark.integration

FAST = FetchLimits(connect_timeout=2.0, read_timeout=2.0)
#: Far longer than any of these tests takes when it works: only a hang reaches it.
NO_HANG = 30.0


def project_zip(top: str, files: int, file_size: int) -> bytes:
    """A release zip: ``files`` files of random bytes, stored, under one ``top/`` directory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{top}/", b"")
        archive.writestr(f"{top}/{top}.info.yml", f"name: {top}\n".encode())
        for n in range(files):
            archive.writestr(f"{top}/src/Part{n}.php", os.urandom(file_size))
    return buffer.getvalue()


def central_directory_size(data: bytes) -> int:
    """Bytes from the zip's central directory to its end (the end record says where)."""
    end = data.rindex(b"PK\x05\x06")
    return len(data) - int.from_bytes(data[end + 16 : end + 20], "little")


#: About 20 MB: uploaded in three parts, its end more than the kept tail.
ZIP = project_zip("token", 20, 1024 * 1024)
#: The same zip with one byte changed in the middle: a tampered copy, its end intact.
TAMPERED = ZIP[: len(ZIP) // 2] + bytes([ZIP[len(ZIP) // 2] ^ 0xFF]) + ZIP[len(ZIP) // 2 + 1 :]
#: Another project's release: its own digests, another top directory (multipart too).
OTHER_PROJECT = project_zip("other", 12, 1024 * 1024)


def many_files_zip() -> bytes:
    buffer = io.BytesIO()
    deep = "very-deep-directory/" * 18
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("token/", b"")
        for n in range(3000):
            archive.writestr(f"token/{deep}File{n}.php", b"<?php\n")
    return buffer.getvalue()


#: 3,000 files with long names: a central directory of more than a megabyte, longer than
#: the end a stream keeps with a small ``tail_bytes`` plus the longest chunk it reads.
MANY_FILES = many_files_zip()
#: Zeros that the store stops reading long before their end.
BIG_SIZE = 64 * 1024 * 1024


def artifact_for(data: bytes, url: str) -> Artifact:
    return Artifact(
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
        origin_url=url,
    )


class Served:
    """What the server did: requests by path, and bytes written by the streaming handlers."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.hung_up: set[str] = set()


def streaming_app(served: Served) -> web.Application:
    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        served.hits[request.path] += 1
        return await handler(request)

    def whole(data: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=data, content_type="application/zip")

        return handler

    async def broken_off(request: web.Request) -> web.StreamResponse:
        # Announces the whole zip, sends half of it, then closes the connection.
        response = web.StreamResponse()
        response.content_length = len(ZIP)
        response.content_type = "application/zip"
        await response.prepare(request)
        await response.write(ZIP[: len(ZIP) // 2])
        assert request.transport is not None
        request.transport.close()
        return response

    async def more_than_signed(request: web.Request) -> web.StreamResponse:
        # Chunked: no Content-Length announces the excess, it comes after the zip.
        response = web.StreamResponse()
        response.content_type = "application/zip"
        await response.prepare(request)
        try:
            await response.write(ZIP)
            await response.write(os.urandom(1024 * 1024))
        except ConnectionResetError:  # the client hung up, as it should
            served.hung_up.add(request.path)
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = BIG_SIZE
        response.content_type = "application/zip"
        await response.prepare(request)
        block = bytes(256 * 1024)
        try:
            while served.sent[request.path] < BIG_SIZE:
                await response.write(block)
                served.sent[request.path] += len(block)
        except ConnectionResetError:  # the client hung up, as it should
            served.hung_up.add(request.path)
        return response

    app = web.Application(middlewares=[count])
    app.router.add_get("/token.zip", whole(ZIP))
    app.router.add_get("/tampered.zip", whole(TAMPERED))
    app.router.add_get("/other.zip", whole(OTHER_PROJECT))
    app.router.add_get("/many-files.zip", whole(MANY_FILES))
    app.router.add_get("/announced-more.zip", whole(ZIP + b"extra"))
    app.router.add_get("/broken-off.zip", broken_off)
    app.router.add_get("/more-than-signed.zip", more_than_signed)
    app.router.add_get("/big.zip", big)
    return app


@pytest.fixture
def served() -> Served:
    return Served()


@pytest.fixture
async def server(served: Served) -> AsyncIterator[TestServer]:
    running = TestServer(streaming_app(served))
    await running.start_server()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2, thread_name_prefix="test-upload")
    try:
        yield pool
    finally:
        # Never waits: a test whose upload is stuck in a read fails rather than hangs (the
        # read gives up once the test's event loop is closed). Each test checks that its
        # upload returned before stream_artifact did (``Upload.outcomes``).
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def store(location: StoreLocation) -> S3Store:
    created = S3Store(location, f"t-{uuid4().hex[:12]}")
    created.ensure_bucket()
    return created


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


class Upload:
    """``put_stream`` of one key, as the copier's upload; each call's outcome recorded."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self.store = store
        self.key = key
        self.size = size
        self.outcomes: list[BaseException | None] = []

    def __call__(self, feed: UploadFeed) -> None:
        try:
            self.store.put_stream(self.key, feed, self.size, content_type="application/zip")
        except BaseException as exc:
            self.outcomes.append(exc)
            raise
        self.outcomes.append(None)


class Check:
    """The zip check on the stream's end, as the copier's: the tails it was given kept."""

    def __init__(self, package: str = "drupal/token") -> None:
        self.package = package
        self.tails: list[StreamTail] = []

    async def __call__(self, tail: StreamTail) -> None:
        self.tails.append(tail)
        check_top_directory(cast(IO[bytes], tail), self.package)


async def stream(
    session: aiohttp.ClientSession,
    source: str,
    signed: Artifact,
    upload: Upload,
    executor: ThreadPoolExecutor,
    check: Check,
    *,
    tail_bytes: int = TAIL_BYTES,
) -> None:
    await asyncio.wait_for(
        stream_artifact(
            session,
            source,
            signed,
            upload,
            executor=executor,
            limits=FAST,
            check_end=check,
            tail_bytes=tail_bytes,
        ),
        NO_HANG,
    )


def key_of(signed: Artifact) -> str:
    return layout.artifact_key(signed.sha256)


def assert_nothing_stored(store: S3Store, signed: Artifact) -> None:
    assert store.stat(key_of(signed)) is None
    assert store.list_keys("") == []


def test_the_zips_are_what_the_tests_need() -> None:
    assert len(ZIP) > 2 * STREAM_PART_SIZE  # uploaded in parts
    assert len(ZIP) > TAIL_BYTES  # the check sees only its end
    assert len(OTHER_PROJECT) > STREAM_PART_SIZE
    assert len(TAMPERED) == len(ZIP) and TAMPERED != ZIP
    assert central_directory_size(MANY_FILES) > STREAM_CHUNK_SIZE + 4096


async def test_a_good_zip_is_streamed_into_the_store_byte_for_byte(
    server: TestServer,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    store: S3Store,
) -> None:
    source = url(server, "/token.zip")
    signed = artifact_for(ZIP, source)
    upload, check = Upload(store, key_of(signed), signed.size), Check()

    await stream(session, source, signed, upload, executor, check)

    assert upload.outcomes == [None]
    info = store.stat(key_of(signed))
    body = store.get(key_of(signed))
    assert info is not None and info.size == len(ZIP)
    assert body is not None and body.data == ZIP
    # The check read the zip's names from its end alone.
    [tail] = check.tails
    assert tail.seek(0, io.SEEK_END) == len(ZIP)
    assert 0 < tail.known_from <= len(ZIP) - TAIL_BYTES
    tail.seek(tail.known_from)
    assert tail.read() == ZIP[tail.known_from :]


async def test_other_bytes_of_the_signed_size_store_nothing(
    server: TestServer,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    store: S3Store,
) -> None:
    source = url(server, "/tampered.zip")
    signed = artifact_for(ZIP, source)
    upload, check = Upload(store, key_of(signed), signed.size), Check()

    with pytest.raises(ArtifactMismatchError, match="differs from the signed one"):
        await stream(session, source, signed, upload, executor, check)
    returned = list(upload.outcomes)  # before any other call: was it awaited?

    assert check.tails == []  # the digests failed first
    assert_nothing_stored(store, signed)
    [outcome] = returned
    assert isinstance(outcome, UploadAbandonedError)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/more-than-signed.zip", f"sent more than the {len(ZIP)} bytes"),
        ("/announced-more.zip", f"announces {len(ZIP) + 5} bytes"),
    ],
    ids=["chunked", "announced"],
)
async def test_more_bytes_than_signed_store_nothing(
    server: TestServer,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    store: S3Store,
    path: str,
    message: str,
) -> None:
    source = url(server, path)
    signed = artifact_for(ZIP, source)
    upload, check = Upload(store, key_of(signed), signed.size), Check()

    with pytest.raises(ArtifactMismatchError, match=message):
        await stream(session, source, signed, upload, executor, check)
    returned = list(upload.outcomes)  # before any other call: was it awaited?

    assert check.tails == []
    assert_nothing_stored(store, signed)
    [outcome] = returned
    assert isinstance(outcome, UploadAbandonedError)


async def test_a_body_broken_off_in_the_middle_stores_nothing(
    server: TestServer,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    store: S3Store,
) -> None:
    source = url(server, "/broken-off.zip")
    signed = artifact_for(ZIP, source)
    upload, check = Upload(store, key_of(signed), signed.size), Check()

    with pytest.raises(OriginUnavailableError, match=f"could not download {source}"):
        await stream(session, source, signed, upload, executor, check)
    returned = list(upload.outcomes)  # before any other call: was it awaited?

    assert check.tails == []
    assert_nothing_stored(store, signed)
    [outcome] = returned
    assert isinstance(outcome, UploadAbandonedError)


async def test_another_projects_zip_stores_nothing(
    server: TestServer,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    store: S3Store,
) -> None:
    source = url(server, "/other.zip")
    signed = artifact_for(OTHER_PROJECT, source)  # the right bytes of the wrong project
    upload, check = Upload(store, key_of(signed), signed.size), Check("drupal/token")

    with pytest.raises(WrongPackageError, match=r"\['other'\], not one token/ directory"):
        await stream(session, source, signed, upload, executor, check)
    returned = list(upload.outcomes)  # before any other call: was it awaited?

    assert len(check.tails) == 1
    assert_nothing_stored(store, signed)
    [outcome] = returned
    assert isinstance(outcome, UploadAbandonedError)


async def test_a_central_directory_longer_than_the_tail_stores_nothing(
    server: TestServer,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    store: S3Store,
) -> None:
    source = url(server, "/many-files.zip")
    signed = artifact_for(MANY_FILES, source)
    upload, check = Upload(store, key_of(signed), signed.size), Check()

    with pytest.raises(TailTooShortError):
        await stream(session, source, signed, upload, executor, check, tail_bytes=4096)
    returned = list(upload.outcomes)  # before any other call: was it awaited?

    [tail] = check.tails
    assert tail.known_from > 0
    assert_nothing_stored(store, signed)
    [outcome] = returned
    assert isinstance(outcome, UploadAbandonedError)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("failure", ["missing bucket", "closed port"])
async def test_a_failing_store_is_store_unavailable_and_cuts_the_download_short(
    server: TestServer,
    served: Served,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    location: StoreLocation,
    failure: str,
) -> None:
    if failure == "missing bucket":
        failing = S3Store(location, f"t-{uuid4().hex[:12]}")  # never created
    else:
        failing = S3Store(
            dataclasses.replace(location, endpoint=f"127.0.0.1:{closed_port()}"), "t-closed"
        )
    source = url(server, "/big.zip")
    signed = artifact_for(bytes(BIG_SIZE), source)
    upload, check = Upload(failing, key_of(signed), signed.size), Check()

    with pytest.raises(StoreUnavailableError, match=failing.bucket):
        await stream(session, source, signed, upload, executor, check)

    [outcome] = upload.outcomes
    assert isinstance(outcome, StoreUnavailableError)
    assert check.tails == []  # the download never reached its end
    assert 0 < served.sent["/big.zip"] < BIG_SIZE


async def test_a_source_with_other_bytes_falls_back_to_the_signed_bytes(
    server: TestServer,
    served: Served,
    session: aiohttp.ClientSession,
    executor: ThreadPoolExecutor,
    store: S3Store,
) -> None:
    bad, good = url(server, "/tampered.zip"), url(server, "/token.zip")
    signed = artifact_for(ZIP, bad)
    upload, check = Upload(store, key_of(signed), signed.size), Check()

    stored_before: list[bool] = []

    async def attempt(source: str) -> None:
        stored_before.append(await asyncio.to_thread(store.stat, key_of(signed)) is not None)
        await stream(session, source, signed, upload, executor, check)

    _, delivered = await first_delivering([bad, good], signed, attempt)

    assert delivered == good
    assert stored_before == [False, False]  # the other bytes never landed under the key
    assert served.hits["/tampered.zip"] == served.hits["/token.zip"] == 1
    # The first attempt's upload was abandoned (minio aborted it), the second stored.
    assert len(upload.outcomes) == 2
    assert isinstance(upload.outcomes[0], UploadAbandonedError)
    assert upload.outcomes[1] is None
    assert len(check.tails) == 1  # only the good bytes got as far as the zip check
    body = store.get(key_of(signed))
    assert body is not None and body.data == ZIP
    assert store.list_keys("") == [key_of(signed)]
