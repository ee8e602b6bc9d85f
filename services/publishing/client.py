"""A small sync client of the publishing service: requests signed as
``schemas.request_signing`` says (the contract ``services.publishing.request_auth`` verifies).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from schemas.errors import ConfigurationError, TransientError
from schemas.events import AdvisorySource
from schemas.request_signing import sign_request
from schemas.signing import SigningKey

_CHUNK = 1 << 20


class PublishRefusedError(ConfigurationError):
    """The service refused the request (4xx): ``status``, its ``error`` code and ``reason``."""

    def __init__(self, message: str, *, status: int, error: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.reason = reason


class PublishingUnavailableError(TransientError):
    """The service could not be reached or could not publish now (5xx); retry later."""

    def __init__(
        self, message: str, *, status: int | None = None, error: str = "", retry_after: float = 5.0
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.error = error


@dataclass(frozen=True)
class Receipt:
    """The service's answer to an accepted request: where the event landed, and what it says."""

    topic: str
    partition: int
    offset: int
    document: Mapping[str, Any]


@dataclass(frozen=True)
class _Body:
    """A request body: its length, its sha256, and its bytes as an iterable (streamed once)."""

    content_type: str
    length: int
    sha256: str
    chunks: Callable[[], Iterator[bytes]]


class PublishingClient:
    """Signed requests to a publishing service, made with ``key`` (delegated for the namespace).

    Every method returns a ``Receipt`` once the broker has acknowledged the
    event. Raises ``PublishRefusedError`` when the service refuses the request
    (its reason says what to fix) and ``PublishingUnavailableError`` when it
    cannot be reached or cannot publish now. Each attempt is signed anew, so
    retrying a call is never refused as a replay.
    """

    def __init__(
        self,
        base_url: str,
        key: SigningKey,
        *,
        timeout: float = 300.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"publishing service URL {base_url!r} is not http:// or https://"
            )
        self.base_url = base_url.rstrip("/")
        self.key = key
        self._timeout = timeout
        self._clock = clock

    def publish_release(
        self,
        package: str,
        drupal_version: str,
        origin_url: str,
        *,
        zip_path: Path | None = None,
        metadata: Mapping[str, Any] | None = None,
        sha256: str | None = None,
        sha1: str | None = None,
        size: int | None = None,
    ) -> Receipt:
        """Publish a release. Without ``zip_path`` the service downloads ``origin_url``;
        with it the zip is uploaded (and nodes still fetch it from ``origin_url``).

        ``sha256``, ``sha1``, ``size``: what the caller expects the zip to be; the
        service refuses the release if it differs.
        """
        fields: dict[str, Any] = {
            "package": package,
            "drupal_version": drupal_version,
            "origin_url": origin_url,
        }
        if metadata is not None:
            fields["metadata"] = dict(metadata)
        for name, value in (("sha256", sha256), ("sha1", sha1), ("size", size)):
            if value is not None:
                fields[name] = value
        if zip_path is None:
            return self._post("/v1/releases", _json_body(fields))
        form = {
            name: value if isinstance(value, str) else orjson.dumps(value).decode()
            for name, value in fields.items()
        }
        return self._post("/v1/releases", _form_body(form, zip_path))

    def yank(self, package: str, version: str, reason: str) -> Receipt:
        """Withdraw a Composer ``version`` (``1.9.0``) from metadata; its zip stays for lock files."""
        return self._post(
            "/v1/yanks", _json_body({"package": package, "version": version, "reason": reason})
        )

    def expunge(self, package: str, version: str, sha256: str, reason: str) -> Receipt:
        """Delete a Composer ``version`` and its artifact (``sha256``) everywhere."""
        return self._post(
            "/v1/expunges",
            _json_body(
                {"package": package, "version": version, "sha256": sha256, "reason": reason}
            ),
        )

    # Long because it takes one keyword per field of Composer's security advisory.
    def advise(
        self,
        package: str,
        *,
        advisory_id: str,
        affected_versions: str,
        title: str,
        link: str,
        reported_at: str,
        sources: Sequence[AdvisorySource],
        cve: str | None = None,
        severity: str | None = None,
    ) -> Receipt:
        """Publish a security advisory, in Composer's security-advisories terms."""
        advisory: dict[str, Any] = {
            "advisoryId": advisory_id,
            "packageName": package,
            "affectedVersions": affected_versions,
            "title": title,
            "link": link,
            "reportedAt": reported_at,
            "sources": [{"name": s.name, "remoteId": s.remote_id} for s in sources],
        }
        if cve is not None:
            advisory["cve"] = cve
        if severity is not None:
            advisory["severity"] = severity
        return self._post("/v1/advisories", _json_body(advisory))

    def _post(self, path: str, body: _Body) -> Receipt:
        url = self.base_url + path
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = sign_request(self.key, "POST", target, body.sha256, now=self._clock())
        headers["Content-Type"] = body.content_type
        headers["Content-Length"] = str(body.length)
        request = urllib.request.Request(url, data=body.chunks(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                document = _json_document(response.read())
        except urllib.error.HTTPError as exc:
            raise _refusal(url, exc) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PublishingUnavailableError(
                f"could not reach the publishing service at {url}: {reason}; is it running?"
            ) from exc
        try:
            return Receipt(
                topic=str(document["topic"]),
                partition=int(document["partition"]),
                offset=int(document["offset"]),
                document=document,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PublishingUnavailableError(
                f"{url} answered without the event's coordinates ({exc}); is it a "
                "fairstream publishing service?"
            ) from exc


def _json_document(data: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


def _refusal(url: str, exc: urllib.error.HTTPError) -> ConfigurationError | TransientError:
    document = _json_document(exc.read())
    error = str(document.get("error", "")) or f"http-{exc.code}"
    reason = str(document.get("reason", "")) or exc.reason
    message = f"the publishing service at {url} answered {exc.code} ({error}): {reason}"
    if exc.code >= 500:
        retry_after = exc.headers.get("Retry-After", "5")
        return PublishingUnavailableError(
            message,
            status=exc.code,
            error=error,
            retry_after=float(retry_after) if retry_after.isdigit() else 5.0,
        )
    return PublishRefusedError(message, status=exc.code, error=error, reason=reason)


def _json_body(document: Mapping[str, Any]) -> _Body:
    data = orjson.dumps(document)
    return _Body(
        "application/json", len(data), hashlib.sha256(data).hexdigest(), lambda: iter([data])
    )


def _form_body(fields: Mapping[str, str], zip_path: Path) -> _Body:
    """A ``multipart/form-data`` body of ``fields`` and the zip as part ``zip``, streamed from disk.

    Raises ``ConfigurationError`` if the zip cannot be read.
    """
    try:
        size = zip_path.stat().st_size
        boundary = _boundary_absent_from(zip_path)
    except OSError as exc:
        raise ConfigurationError(f"cannot read zip {zip_path}: {exc.strerror}") from exc
    filename = re.sub(r'["\\\r\n]', "_", zip_path.name)
    head = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
            for name, value in fields.items()
        )
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="zip"; '
            f'filename="{filename}"\r\nContent-Type: application/zip\r\n\r\n'
        ).encode()
    )
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with zip_path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
        yield tail

    digest = hashlib.sha256()
    for chunk in chunks():
        digest.update(chunk)
    return _Body(
        f"multipart/form-data; boundary={boundary}",
        len(head) + size + len(tail),
        digest.hexdigest(),
        chunks,
    )


def _boundary_absent_from(path: Path) -> str:
    """A random multipart boundary that does not occur in the file (checked, not assumed)."""
    while True:
        boundary = f"fairstream-{secrets.token_hex(16)}"
        marker = boundary.encode()
        found, tail = False, b""
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                if marker in tail + chunk:
                    found = True
                    break
                tail = chunk[-len(marker) :]
        if not found:
            return boundary
