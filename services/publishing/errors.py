"""The publishing service's refusals: each carries its HTTP status and a stable code, and
every refusal is answered as ``{error, reason}`` JSON (docs/publishing.md, "Answers")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar

from aiohttp import web

from schemas.errors import BrokerUnavailableError, FairstreamError, RootExpiredError


class PublishingRequestError(FairstreamError):
    """A request the service refuses: ``status`` (4xx), a stable ``error`` code, and a message
    that says what was wrong and what to do."""

    status: ClassVar[int] = 400

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


class BadRequestError(PublishingRequestError):
    """The request is malformed: not JSON, a field missing, of the wrong type, or unknown."""

    status = 400


class UnauthenticatedRequestError(PublishingRequestError):
    """No valid signature: headers missing, bad signature, unknown key, stale date, replay."""

    status = 401


class ForbiddenRequestError(PublishingRequestError):
    """A valid signature by a key that may not publish for the package's namespace."""

    status = 403


class RequestTooLargeError(PublishingRequestError):
    """The body or the artifact is over the service's limit."""

    status = 413


class RequestTimeoutError(PublishingRequestError):
    """The body did not arrive in time: a client trickling it would hold a connection."""

    status = 408


class UnsupportedMediaTypeError(PublishingRequestError):
    """A body that is neither JSON nor (for releases) a multipart form."""

    status = 415


class UnacceptableReleaseError(PublishingRequestError):
    """A well-formed request whose content nodes would refuse: bad artifact, name or version."""

    status = 422


class OriginFailedError(PublishingRequestError):
    """The origin did not deliver the artifact to download."""

    status = 502


def _error_response(
    status: int, error: str, reason: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status, headers=headers)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every refusal as ``{error, reason}`` JSON with its status; 503 + Retry-After when the
    broker or the trust root cannot be relied on now."""
    try:
        return await handler(request)
    except PublishingRequestError as exc:
        return _error_response(exc.status, exc.error, str(exc))
    except BrokerUnavailableError as exc:
        return _error_response(
            503,
            "broker-unavailable",
            f"{exc}; nothing was acknowledged for this request: retry it later (signed anew)",
            {"Retry-After": str(max(1, round(exc.retry_after)))},
        )
    except RootExpiredError as exc:
        return _error_response(503, "root-expired", str(exc), {"Retry-After": "300"})
