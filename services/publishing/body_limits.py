"""How the publishing service reads a request body: within a size limit and a deadline,
whole into memory (a JSON document) or spooled to a file (an upload form), with its sha256."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from aiohttp import web

from services.publishing.errors import RequestTimeoutError, RequestTooLargeError

#: Largest JSON request document (a release's metadata, a yank, an advisory).
MAX_DOCUMENT_SIZE = 1 << 20
#: What a multipart upload may carry beside the zip: its text fields and part headers.
FORM_OVERHEAD = 2 * MAX_DOCUMENT_SIZE
#: How much of a body, an upload or a download is read or copied at a time.
CHUNK = 256 * 1024

#: A request body must arrive within this grace plus its size at ``BODY_MIN_RATE``: a client
#: trickling bytes (slowloris) would otherwise hold a connection and a spool file forever.
BODY_GRACE = 10.0
BODY_MIN_RATE = 50_000.0


def _body_deadline(request: web.Request, limit: int) -> float:
    size = request.content_length if request.content_length is not None else limit
    return BODY_GRACE + min(size, limit) / BODY_MIN_RATE


def _body_too_slow(deadline: float) -> RequestTimeoutError:
    return RequestTimeoutError(
        "request-timeout",
        f"the request body did not arrive within {deadline:.0f} s (it must come at "
        f"{BODY_MIN_RATE / 1000:.0f} kB/s or faster after {BODY_GRACE:.0f} s); send it again "
        "over a faster link",
    )


async def read_limited(request: web.Request, limit: int) -> tuple[bytes, str]:
    """The whole body and its sha256, refused (413) past ``limit`` bytes and (408) when it
    does not arrive within ``_body_deadline``."""
    _refuse_announced(request, limit)
    body = bytearray()
    deadline = _body_deadline(request, limit)
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > limit:
                    raise _body_too_large(limit)
    except TimeoutError:
        raise _body_too_slow(deadline) from None
    return bytes(body), hashlib.sha256(body).hexdigest()


async def spool(request: web.Request, path: Path, limit: int) -> tuple[Path, str]:
    """Write the body to ``path``; returns it and its sha256. Refused (413) past ``limit`` bytes
    and (408) when it does not arrive within ``_body_deadline``."""
    _refuse_announced(request, limit)
    digest, size = hashlib.sha256(), 0
    deadline = _body_deadline(request, limit)
    try:
        async with asyncio.timeout(deadline):
            with path.open("wb") as out:
                async for chunk in request.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise _body_too_large(limit)
                    digest.update(chunk)
                    out.write(chunk)
    except TimeoutError:
        raise _body_too_slow(deadline) from None
    return path, digest.hexdigest()


def _refuse_announced(request: web.Request, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise _body_too_large(limit)


def _body_too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        "too-large",
        f"the request body is over the {limit} bytes this service accepts here; a release zip "
        "may be up to the service's max artifact size",
    )
