"""A zip sent through the node (``--dist proxy``): streamed from the store, ranges answered, checked.

For a store clients cannot reach. The node reads the object in pieces of
``PIECE`` bytes and writes each before reading the next (the client's pace
bounds memory). A download of the whole zip is hashed as it goes and its last
piece is held back until the sha256 and sha1 match the version's signed ones;
when they do not, the connection is closed instead: the client has fewer bytes
than the ``Content-Length`` announced, which every HTTP client (Composer's curl
too) reports as a failed transfer, never as a good file. A byte range (one
range, answered as nginx answers it for a static file) is sent as stored: a part
cannot be checked on its own, and whoever assembles ranges checks the whole
(Composer checks the sha1 in p2); a range that is the whole zip is checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from connectors.metrics import DIST_PROXY_ABORTED
from connectors.object_store import ObjectReader, ObjectStore
from schemas import layout
from schemas.errors import StoreUnavailableError
from schemas.package_state import VersionRecord

log = logging.getLogger(__name__)

#: Bytes read from the store and written to the client at a time.
PIECE: Final = 256 * 1024
_BYTES_UNIT = re.compile(r"\s*bytes\s*=(.*)", re.IGNORECASE | re.DOTALL)
_ONE_RANGE = re.compile(r"(\d*)\s*-\s*(\d*)")
_RETRY_AFTER: Final = {"Retry-After": "5"}


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` (inclusive) of an object of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end == self.size - 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def requested_range(
    range_header: str | None, if_range: str | None, size: int, etag: str
) -> ByteRange | None:
    """The range a request asks of an object of ``size`` bytes, or None for the whole.

    As nginx answers for a static file: one ``bytes=`` range (first-last, first-, or
    -suffix) is clipped to the object; another unit is ignored, and so is any range when
    ``If-Range`` names another entity than ``etag`` (dates are not compared: the whole is
    then sent, which is always correct). Several ranges are ignored too (RFC 9110 lets a
    server send the whole instead of a multipart answer). Raises
    ``HTTPRequestRangeNotSatisfiable`` for a malformed ``bytes=`` range, one that starts
    past the end, or an empty suffix.
    """
    if range_header is None or size <= 0:
        return None
    if if_range is not None and if_range.strip() != etag:
        return None
    unit = _BYTES_UNIT.fullmatch(range_header)
    if unit is None:
        return None
    spec = unit[1].strip()
    if "," in spec:
        return None
    match = _ONE_RANGE.fullmatch(spec)
    if match is None or not (match[1] or match[2]):
        raise _not_satisfiable(size)
    if not match[1]:
        suffix = int(match[2])
        if suffix == 0:
            raise _not_satisfiable(size)
        return ByteRange(max(size - suffix, 0), size - 1, size)
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if end < start or start >= size:
        raise _not_satisfiable(size)
    return ByteRange(start, min(end, size - 1), size)


def _not_satisfiable(size: int) -> web.HTTPRequestRangeNotSatisfiable:
    return web.HTTPRequestRangeNotSatisfiable(
        headers={"Content-Range": f"bytes */{size}"},
        text=f"the range asked is not within the {size} bytes of this zip\n",
    )


# Long because one streamed answer: ranges, headers and the store's errors where the body is sent.
async def send_artifact(
    request: web.Request,
    store: ObjectStore,
    record: VersionRecord,
    *,
    region: str,
    what: str,
    on_answer: Callable[[], None],
) -> web.StreamResponse | None:
    """Answer ``request`` with the stored zip of ``record`` (200, or 206 for a range).

    None when the store does not hold it: that key missing, or an object of another size
    than signed (a copy to fetch again). ``what`` names the download in logs
    (``drupal/token 1.9.0``); ``on_answer()`` is called once the answer is decided, before
    it is sent. Raises ``HTTPServiceUnavailable`` when the store fails before the answer
    starts, and ``HTTPRequestRangeNotSatisfiable``; after it started, a store failure or
    a digest mismatch closes the connection (logged and counted in
    ``fairstream_dist_proxy_aborted_total``).
    """
    key = layout.artifact_key(record.sha256)
    etag = f'"{record.sha256}"'
    try:
        stored = await asyncio.to_thread(store.stat, key)
    except StoreUnavailableError as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=_RETRY_AFTER) from exc
    if stored is None:
        return None
    if stored.size != record.size:
        log.warning(
            "%s: the stored zip %s has %d bytes, %d signed; not served from here",
            what,
            key,
            stored.size,
            record.size,
        )
        return None
    wanted = requested_range(
        request.headers.get("Range"), request.headers.get("If-Range"), record.size, etag
    )
    span = wanted or ByteRange(0, record.size - 1, record.size)
    response = web.StreamResponse(
        status=200 if wanted is None else 206,
        headers={
            "Content-Type": "application/zip",
            "Accept-Ranges": "bytes",
            # Content addressed: the signed sha256 names these very bytes. No long cache
            # lifetime though: an expunged version must stop being served (410).
            "ETag": etag,
        },
    )
    if wanted is not None:
        response.headers["Content-Range"] = wanted.content_range
    response.content_length = span.length
    if request.method == "HEAD" or span.length == 0:
        on_answer()
        await response.prepare(request)
        return response
    try:
        reader = await asyncio.to_thread(store.reader, key, offset=span.start, length=span.length)
    except StoreUnavailableError as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=_RETRY_AFTER) from exc
    if reader is None:
        return None  # evicted since the stat
    if reader.size != span.length:
        # Replaced since the stat by an object of another size: not the signed bytes.
        await asyncio.to_thread(reader.close)
        log.warning("%s: the stored zip %s changed size while read; not served", what, key)
        return None
    on_answer()
    try:
        await _stream(request, response, reader, span, record, region=region, what=what)
    finally:
        await asyncio.to_thread(reader.close)
    return response


class _Digests:
    """The sha256 and sha1 of a whole download, fed as it is read."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = hashlib.sha1()  # noqa: S324 - Composer's dist.shasum is sha1

    def update(self, piece: bytes) -> None:
        self.sha256.update(piece)
        self.sha1.update(piece)

    def mismatch(self, record: VersionRecord) -> str | None:
        """What differs from the signed digests, or None."""
        if self.sha256.hexdigest() != record.sha256:
            return f"sha256 {self.sha256.hexdigest()}, signed {record.sha256}"
        if self.sha1.hexdigest() != record.sha1:
            return f"sha1 {self.sha1.hexdigest()}, signed {record.sha1}"
        return None


def _read(reader: ObjectReader, amount: int, digests: _Digests | None) -> bytes:
    # Hashing here keeps it off the event loop (hashlib releases the GIL on large pieces).
    piece = reader.read(amount)
    if digests is not None:
        digests.update(piece)
    return piece


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    reader: ObjectReader,
    span: ByteRange,
    record: VersionRecord,
    *,
    region: str,
    what: str,
) -> None:
    """Copy ``span`` from ``reader`` to the client; a whole zip is checked before its last piece."""
    digests = _Digests() if span.whole else None
    sent = 0
    try:
        while sent < span.length:
            amount = min(PIECE, span.length - sent)
            piece = await asyncio.to_thread(_read, reader, amount, digests)
            if len(piece) != amount:
                raise StoreUnavailableError(
                    f"the store sent {sent + len(piece)} of the {span.length} bytes of "
                    f"{what} ({span.content_range})"
                )
            if not response.prepared:
                # Only once the store delivered: a store failing at once is a clean 503.
                await response.prepare(request)
            if digests is not None and sent + amount == span.length:
                mismatch = digests.mismatch(record)
                if mismatch is not None:
                    log.error(
                        "%s: the zip in the store is not the signed one (%s); download broken "
                        "off before its last %d bytes. Delete %s from the bucket so that the "
                        "node fetches it again",
                        what,
                        mismatch,
                        amount,
                        layout.artifact_key(record.sha256),
                    )
                    DIST_PROXY_ABORTED.labels(region, "digest-mismatch").inc()
                    _break_off(request, response)
                    return
            await response.write(piece)
            sent += amount
    except StoreUnavailableError as exc:
        if not response.prepared:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n", headers=_RETRY_AFTER) from exc
        log.warning("%s: download broken off after %d bytes: %s", what, sent, exc)
        DIST_PROXY_ABORTED.labels(region, "store-error").inc()
        _break_off(request, response)
        return
    except ConnectionResetError:
        # The client went away (a cancelled download): nothing to answer.
        log.info("%s: the client left after %d of %d bytes", what, sent, span.length)
        return
    await response.write_eof()


def _break_off(request: web.Request, response: web.StreamResponse) -> None:
    """End the answer short of its Content-Length: the client sees a failed transfer."""
    response.force_close()
    if request.transport is not None:
        request.transport.close()
