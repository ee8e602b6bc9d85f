"""connectors.origin.fetch_artifact, and first_delivering with it, against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors import origin
from connectors.origin import CHUNK_SIZE, FetchLimits, fetch_artifact, first_delivering
from infra.devtools.origin_http import origin_app
from schemas.errors import (
    ArtifactMismatchError,
    ArtifactMismatchEverywhereError,
    ArtifactUnreachableError,
    ConfigurationError,
    OriginUnavailableError,
    SourceFailure,
)
from schemas.events import Artifact

pytestmark = pytest.mark.integration

ZIP = os.urandom(700_000)  # several chunks
FAST = FetchLimits(connect_timeout=2.0, read_timeout=0.5)
#: How long a stalling handler sleeps: far longer than FAST.read_timeout. The server
#: cancels the handler when the client hangs up, so no test waits for it.
STALL_SECONDS = 30
#: A zip small enough to trickle: at 1 byte/s it would take minutes, while the
#: TRICKLE limits give it TRICKLE.deadline(len(SMALL_ZIP)) == 1 s in all.
SMALL_ZIP = os.urandom(500)
TRICKLE = FetchLimits(connect_timeout=2.0, read_timeout=5.0, min_rate=1000.0, grace=0.5)


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


def misbehaving_app(streamed: StreamedBytes, hits: Counter[str]) -> web.Application:
    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        hits[request.path] += 1
        return await handler(request)

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

    async def drip(request: web.Request) -> web.StreamResponse:
        # One byte a second: every byte comes well within read_timeout.
        response = web.StreamResponse()
        response.content_length = len(SMALL_ZIP)
        await response.prepare(request)
        try:
            for offset in range(len(SMALL_ZIP)):
                await response.write(SMALL_ZIP[offset : offset + 1])
                await asyncio.sleep(1)
        except ConnectionResetError:  # the client hung up, as it should
            pass
        return response

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_ZIP, content_type="application/zip")

    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(STALL_SECONDS)
        return web.Response(body=ZIP)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/files/token.zip")

    async def good(request: web.Request) -> web.Response:
        return web.Response(body=ZIP, content_type="application/zip")

    app = web.Application(middlewares=[count])
    app.router.add_get("/500", server_error)
    app.router.add_get("/other", other_bytes)
    app.router.add_get("/short", short)
    app.router.add_get("/announced", announced_too_long)
    app.router.add_get("/endless", endless)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/drip", drip)
    app.router.add_get("/small.zip", small)
    app.router.add_get("/silent", silent)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/files/token.zip", good)
    return app


@pytest.fixture
def streamed() -> StreamedBytes:
    return StreamedBytes()


@pytest.fixture
def hits() -> Counter[str]:
    """Requests the misbehaving server received, by path."""
    return Counter()


@pytest.fixture
async def server(streamed: StreamedBytes, hits: Counter[str]) -> AsyncIterator[TestServer]:
    running = TestServer(misbehaving_app(streamed, hits))
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


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/token.zip"


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
    source = closed_port_url()

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


# --- first_delivering: fallback from one source to the next ---------------------------


@dataclass(frozen=True)
class Fetched:
    path: Path
    source: str


async def fetch_from_sources(
    session: aiohttp.ClientSession,
    sources: Sequence[str],
    expected: Artifact,
    *,
    work_dir: Path,
    limits: FetchLimits = FetchLimits(),
) -> Fetched:
    """The node's file path: ``first_delivering`` with ``fetch_artifact`` as the attempt."""

    async def into_file(source: str) -> Path:
        return await fetch_artifact(session, source, expected, work_dir=work_dir, limits=limits)

    path, source = await first_delivering(sources, expected, into_file)
    return Fetched(path=path, source=source)


def warned_about(caplog: pytest.LogCaptureFixture, source: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "connectors.origin"
        and record.levelno == logging.WARNING
        and f" {source}: " in record.getMessage()
    ]


async def test_the_first_source_that_delivers_wins(
    server: TestServer, hits: Counter[str], session: aiohttp.ClientSession, work_dir: Path
) -> None:
    origin_url, replica = url(server, "/files/token.zip"), url(server, "/500")

    fetched = await fetch_from_sources(
        session, [origin_url, replica], artifact_for(ZIP, origin_url), work_dir=work_dir
    )

    assert fetched.source == origin_url
    assert fetched.path.read_bytes() == ZIP
    assert hits["/500"] == 0  # the canonical origin is preferred, replicas are a fallback
    assert list(work_dir.iterdir()) == [fetched.path]


async def test_a_server_error_falls_back_to_a_replica(
    server: TestServer,
    hits: Counter[str],
    session: aiohttp.ClientSession,
    work_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin_url, replica = url(server, "/500"), url(server, "/files/token.zip")

    fetched = await fetch_from_sources(
        session, [origin_url, replica], artifact_for(ZIP, origin_url), work_dir=work_dir
    )

    assert fetched.source == replica
    assert fetched.path.read_bytes() == ZIP
    assert hits["/500"] == 1
    assert any("answered 500" in message for message in warned_about(caplog, origin_url))
    assert list(work_dir.iterdir()) == [fetched.path]


async def test_a_missing_file_falls_back_to_a_replica(
    static_origin: TestServer,
    server: TestServer,
    session: aiohttp.ClientSession,
    work_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin_url = url(static_origin, "/files/projects/absent.zip")
    replica = url(server, "/files/token.zip")

    fetched = await fetch_from_sources(
        session, [origin_url, replica], artifact_for(ZIP, origin_url), work_dir=work_dir
    )

    assert fetched.source == replica
    assert fetched.path.read_bytes() == ZIP
    assert any("answered 404" in message for message in warned_about(caplog, origin_url))
    assert list(work_dir.iterdir()) == [fetched.path]


async def test_a_refused_connection_falls_back_to_a_replica(
    server: TestServer,
    session: aiohttp.ClientSession,
    work_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin_url, replica = closed_port_url(), url(server, "/files/token.zip")

    fetched = await fetch_from_sources(
        session,
        [origin_url, replica],
        artifact_for(ZIP, origin_url),
        work_dir=work_dir,
        limits=FAST,
    )

    assert fetched.source == replica
    assert fetched.path.read_bytes() == ZIP
    assert any("could not download" in message for message in warned_about(caplog, origin_url))
    assert list(work_dir.iterdir()) == [fetched.path]


async def test_other_bytes_fall_back_to_the_signed_bytes(
    server: TestServer,
    session: aiohttp.ClientSession,
    work_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin_url, replica = url(server, "/other"), url(server, "/files/token.zip")

    fetched = await fetch_from_sources(
        session, [origin_url, replica], artifact_for(ZIP, origin_url), work_dir=work_dir
    )

    assert fetched.source == replica
    assert fetched.path.read_bytes() == ZIP
    assert any("differs from the signed one" in m for m in warned_about(caplog, origin_url))
    assert list(work_dir.iterdir()) == [fetched.path]  # the wrong bytes were deleted


async def test_a_trickling_source_is_too_slow(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    source = url(server, "/drip")

    with pytest.raises(OriginUnavailableError) as raised:
        await fetch_artifact(
            session, source, artifact_for(SMALL_ZIP, source), work_dir=work_dir, limits=TRICKLE
        )

    message = str(raised.value)
    # Abandoned by the rate, not by read_timeout: a byte came every second.
    assert f"source {source} is too slow: " in message
    assert f" of {len(SMALL_ZIP)} bytes in " in message
    assert "below the minimum rate of 1000 bytes/s" in message
    assert "lower min_rate" in message
    assert raised.value.url == source
    assert raised.value.status_code is None
    assert list(work_dir.iterdir()) == []


async def test_a_trickling_source_is_abandoned_for_the_next(
    server: TestServer,
    hits: Counter[str],
    session: aiohttp.ClientSession,
    work_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    origin_url, replica = url(server, "/drip"), url(server, "/small.zip")

    fetched = await fetch_from_sources(
        session,
        [origin_url, replica],
        artifact_for(SMALL_ZIP, origin_url),
        work_dir=work_dir,
        limits=TRICKLE,
    )

    assert fetched.source == replica
    assert fetched.path.read_bytes() == SMALL_ZIP
    assert hits["/drip"] == 1
    assert any("is too slow" in message for message in warned_about(caplog, origin_url))
    assert list(work_dir.iterdir()) == [fetched.path]


async def test_other_bytes_everywhere_is_an_artifact_mismatch(
    server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    sources = [url(server, "/other"), url(server, "/short"), url(server, "/announced")]

    with pytest.raises(ArtifactMismatchError) as raised:
        await fetch_from_sources(
            session, sources, artifact_for(ZIP, sources[0]), work_dir=work_dir, limits=FAST
        )

    assert isinstance(raised.value, ArtifactMismatchEverywhereError)
    assert raised.value.reason == "artifact-mismatch"  # rejected, never retried
    assert [attempt.url for attempt in raised.value.attempts] == sources
    assert all(attempt.definite for attempt in raised.value.attempts)
    message = str(raised.value)
    assert "every source of the artifact sha256" in message
    assert f"[1] {sources[0]}: artifact from {sources[0]} differs" in message
    assert f"[2] {sources[1]}: artifact from {sources[1]} differs" in message
    assert f"size {len(ZIP) - 1} != signed" in message
    assert f"[3] {sources[2]}: origin {sources[2]} announces" in message
    assert list(work_dir.iterdir()) == []


async def test_mixed_failures_are_unreachable_and_retried(
    static_origin: TestServer, server: TestServer, session: aiohttp.ClientSession, work_dir: Path
) -> None:
    sources = [
        url(server, "/500"),
        url(server, "/other"),
        closed_port_url(),
        url(static_origin, "/files/projects/absent.zip"),
        url(server, "/endless"),
    ]
    signed = artifact_for(ZIP, sources[0])

    with pytest.raises(ArtifactUnreachableError) as raised:
        await fetch_from_sources(session, sources, signed, work_dir=work_dir, limits=FAST)

    error = raised.value
    assert isinstance(error, OriginUnavailableError)  # transient: retried with backoff
    assert not isinstance(error, ArtifactMismatchError)
    assert error.url == signed.origin_url
    assert error.retry_after == 30.0
    assert [(a.url, a.definite) for a in error.attempts] == [
        (sources[0], False),
        (sources[1], True),
        (sources[2], False),
        (sources[3], False),
        (sources[4], True),
    ]
    message = str(error)
    assert f"no source delivered the artifact sha256 {signed.sha256}" in message
    for number, source in enumerate(sources, start=1):
        assert f"[{number}] {source}: " in message
    assert "answered 500" in message and "answered 404" in message
    assert "retried with backoff" in message
    assert list(work_dir.iterdir()) == []


async def test_duplicate_sources_are_tried_once(
    server: TestServer, hits: Counter[str], session: aiohttp.ClientSession, work_dir: Path
) -> None:
    failing, other = url(server, "/500"), url(server, "/other")

    with pytest.raises(ArtifactUnreachableError) as raised:
        await fetch_from_sources(
            session,
            [failing, other, failing, other, failing],
            artifact_for(ZIP, failing),
            work_dir=work_dir,
        )

    assert hits["/500"] == 1
    assert hits["/other"] == 1
    assert [attempt.url for attempt in raised.value.attempts] == [failing, other]
    assert list(work_dir.iterdir()) == []


async def test_no_source_is_unreachable(session: aiohttp.ClientSession, work_dir: Path) -> None:
    signed = artifact_for(ZIP, "https://ftp.drupal.org/files/projects/token-8.x-1.9.zip")

    with pytest.raises(ArtifactUnreachableError) as raised:
        await fetch_from_sources(session, [], signed, work_dir=work_dir)

    assert raised.value.attempts == ()
    assert raised.value.url == signed.origin_url
    assert "neither the origin nor any replica is known" in str(raised.value)
    assert list(work_dir.iterdir()) == []


def test_source_failures_compare_by_value() -> None:
    assert SourceFailure("http://a/", "answered 500", definite=False) == SourceFailure(
        "http://a/", "answered 500", definite=False
    )


def test_the_default_limits_let_a_big_zip_download_on_a_slow_link() -> None:
    # 500 MB at 1 MB/s, far below loopback or any data centre link, takes 500 s.
    assert FetchLimits().deadline(500 * 1000 * 1000) > 500
    assert TRICKLE.deadline(len(SMALL_ZIP)) == pytest.approx(1.0)


@pytest.mark.parametrize(("min_rate", "grace"), [(0.0, 1.0), (-5.0, 1.0), (1000.0, -1.0)])
def test_limits_that_cannot_work_are_refused(min_rate: float, grace: float) -> None:
    with pytest.raises(ConfigurationError, match="fetch limits"):
        FetchLimits(min_rate=min_rate, grace=grace)
