"""connectors.origin.fetch_artifact against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors import origin
from connectors.origin import CHUNK_SIZE, FetchLimits, fetch_artifact
from schemas.errors import ArtifactMismatchError, OriginUnavailableError
from schemas.events import Artifact
from services.origin_http import origin_app

pytestmark = pytest.mark.integration

ZIP = os.urandom(700_000)  # several chunks
FAST = FetchLimits(connect_timeout=2.0, read_timeout=0.5)
#: How long a stalling handler sleeps: far longer than FAST.read_timeout. The server
#: cancels the handler when the client hangs up, so no test waits for it.
STALL_SECONDS = 30


def artifact_for(data: bytes, url: str) -> Artifact:
    return Artifact(
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
        origin_url=url,
    )


class StreamedBytes:
    """Bytes one server handler managed to write before the client hung up."""

    def __init__(self) -> None:
        self.sent = 0


def misbehaving_app(streamed: StreamedBytes) -> web.Application:
    async def server_error(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def other_bytes(request: web.Request) -> web.Response:
        return web.Response(body=bytes(len(ZIP)), content_type="application/zip")

    async def short(request: web.Request) -> web.Response:
        return web.Response(body=ZIP[:-1], content_type="application/zip")

    async def announced_too_long(request: web.Request) -> web.Response:
        return web.Response(body=ZIP + b"extra", content_type="application/zip")

    async def endless(request: web.Request) -> web.StreamResponse:
        # Chunked transfer encoding: no Content-Length announces the excess.
        response = web.StreamResponse()
        response.content_type = "application/zip"
        await response.prepare(request)
        block = b"\0" * 65536
        try:
            while True:
                await response.write(block)
                streamed.sent += len(block)
        except ConnectionResetError:  # the client hung up, as it should
            return response

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(ZIP)
        await response.prepare(request)
        await response.write(ZIP[:1000])
        await asyncio.sleep(STALL_SECONDS)
        await response.write(ZIP[1000:])
        return response

    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(STALL_SECONDS)
        return web.Response(body=ZIP)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/files/token.zip")

    async def good(request: web.Request) -> web.Response:
        return web.Response(body=ZIP, content_type="application/zip")

    app = web.Application()
    app.router.add_get("/500", server_error)
    app.router.add_get("/other", other_bytes)
    app.router.add_get("/short", short)
    app.router.add_get("/announced", announced_too_long)
    app.router.add_get("/endless", endless)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/silent", silent)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/files/token.zip", good)
    return app


@pytest.fixture
def streamed() -> StreamedBytes:
    return StreamedBytes()


@pytest.fixture
async def server(streamed: StreamedBytes) -> AsyncIterator[TestServer]:
    running = TestServer(misbehaving_app(streamed))
    await running.start_server()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def static_origin(tmp_path: Path) -> AsyncIterator[TestServer]:
    root = tmp_path / "origin"
    (root / "files" / "projects").mkdir(parents=True)
    (root / "files" / "projects" / "token-8.x-1.9.zip").write_bytes(ZIP)
    running = TestServer(origin_app(root))
    await running.start_server()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def test_a_good_download_is_returned_as_a_file(
    static_origin: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(static_origin, "/files/projects/token-8.x-1.9.zip")

    path = await fetch_artifact(session, source, artifact_for(ZIP, source), work_dir=work_dir)

    assert path.parent == work_dir
    assert path.name.startswith("fetch-") and path.suffix == ".zip"
    assert path.read_bytes() == ZIP
    assert list(work_dir.iterdir()) == [path]  # the caller owns and deletes it


async def test_redirects_are_followed(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/redirect")

    path = await fetch_artifact(session, source, artifact_for(ZIP, source), work_dir=work_dir)

    assert path.read_bytes() == ZIP


async def test_an_empty_artifact_downloads(
    static_origin: TestServer, session: aiohttp.ClientSession, work_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "origin" / "empty.zip").write_bytes(b"")
    source = url(static_origin, "/empty.zip")

    path = await fetch_artifact(session, source, artifact_for(b"", source), work_dir=work_dir)

    assert path.read_bytes() == b""


@pytest.mark.parametrize(("status", "retry_after"), [(404, 30.0), (500, 5.0)])
async def test_an_error_status_is_origin_unavailable(
    static_origin: TestServer,
    server: TestServer,
    session: aiohttp.ClientSession,
    work_dir: Path,
    status: int,
    retry_after: float,
) -> None:
    source = (
        url(static_origin, "/files/projects/absent.zip") if status == 404 else url(server, "/500")
    )

    with pytest.raises(OriginUnavailableError) as raised:
        await fetch_artifact(session, source, artifact_for(ZIP, source), work_dir=work_dir)

    assert raised.value.status_code == status
    assert raised.value.url == source
    assert raised.value.retry_after == retry_after
    assert f"origin answered {status} for {source}" in str(raised.value)
    assert list(work_dir.iterdir()) == []


async def test_other_bytes_are_an_artifact_mismatch(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/other")

    with pytest.raises(ArtifactMismatchError) as raised:
        await fetch_artifact(session, source, artifact_for(ZIP, source), work_dir=work_dir)

    message = str(raised.value)
    assert f"artifact from {source} differs from the signed one" in message
    assert f"sha256 {hashlib.sha256(bytes(len(ZIP))).hexdigest()} != signed" in message
    assert "sha1 " in message
    assert "size" not in message.split(": ", 1)[1]  # the size was right
    assert raised.value.reason == "artifact-mismatch"
    assert list(work_dir.iterdir()) == []


async def test_fewer_bytes_are_an_artifact_mismatch(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/short")

    with pytest.raises(ArtifactMismatchError, match=f"size {len(ZIP) - 1} != signed {len(ZIP)}"):
        await fetch_artifact(session, source, artifact_for(ZIP, source), work_dir=work_dir)

    assert list(work_dir.iterdir()) == []


async def test_an_announced_excess_is_refused_before_reading(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/announced")

    with pytest.raises(ArtifactMismatchError, match=f"announces {len(ZIP) + 5} bytes"):
        await fetch_artifact(session, source, artifact_for(ZIP, source), work_dir=work_dir)

    assert list(work_dir.iterdir()) == []


async def test_an_endless_body_is_cut_at_the_signed_size(
    server: TestServer,
    streamed: StreamedBytes,
    session: aiohttp.ClientSession,
    work_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = 0
    original_read = aiohttp.StreamReader.read

    async def counting_read(self: aiohttp.StreamReader, n: int = -1) -> bytes:
        nonlocal read
        data = await original_read(self, n)
        if n == CHUNK_SIZE:  # only fetch_artifact reads in chunks of this size
            read += len(data)
        return data

    monkeypatch.setattr(aiohttp.StreamReader, "read", counting_read)
    source = url(server, "/endless")
    signed = artifact_for(ZIP, source)
    started = time.monotonic()

    with pytest.raises(ArtifactMismatchError, match=f"sent more than the {len(ZIP)} bytes"):
        await fetch_artifact(session, source, signed, work_dir=work_dir)

    assert time.monotonic() - started < 5
    assert signed.size < read <= signed.size + CHUNK_SIZE
    assert streamed.sent > signed.size
    assert list(work_dir.iterdir()) == []


async def test_a_trickling_origin_times_out_quickly(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/trickle")
    started = time.monotonic()

    with pytest.raises(OriginUnavailableError) as raised:
        await fetch_artifact(
            session, source, artifact_for(ZIP, source), work_dir=work_dir, limits=FAST
        )

    elapsed = time.monotonic() - started
    assert FAST.read_timeout * 0.9 <= elapsed < 3
    assert raised.value.status_code is None
    assert f"could not download {source}" in str(raised.value)
    assert list(work_dir.iterdir()) == []


async def test_an_origin_that_never_answers_times_out_quickly(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/silent")
    started = time.monotonic()

    with pytest.raises(OriginUnavailableError):
        await fetch_artifact(
            session, source, artifact_for(ZIP, source), work_dir=work_dir, limits=FAST
        )

    assert time.monotonic() - started < 3
    assert list(work_dir.iterdir()) == []


async def test_a_refused_connection_is_origin_unavailable(
    session: aiohttp.ClientSession, work_dir: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        source = f"http://127.0.0.1:{probe.getsockname()[1]}/token.zip"

    with pytest.raises(OriginUnavailableError) as raised:
        await fetch_artifact(
            session, source, artifact_for(ZIP, source), work_dir=work_dir, limits=FAST
        )

    assert raised.value.status_code is None
    assert raised.value.url == source
    assert list(work_dir.iterdir()) == []


async def test_a_cancelled_download_leaves_no_file(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/trickle")
    task = asyncio.create_task(
        fetch_artifact(session, source, artifact_for(ZIP, source), work_dir=work_dir)
    )
    while not list(work_dir.iterdir()):
        await asyncio.sleep(0.01)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(work_dir.iterdir()) == []


def test_the_chunk_size_bounds_the_excess() -> None:
    # The excess read above is bounded by one chunk: keep the chunk small.
    assert origin.CHUNK_SIZE <= 1024 * 1024
