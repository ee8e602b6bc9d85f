"""The publishing service: an HTTP API that checks, signs and produces a namespace publisher's events.

Drupal.org's release pipeline (or any namespace publisher) posts a release, a
yank, an expunge or an advisory; the service authenticates the request by its
Ed25519 signature (a key the trust root delegates for the package's namespace,
no shared password), checks everything (the artifact: sha256, sha1, size, one
top directory named after the project), signs the event with its own publisher
keys, checks that a node would accept it, and produces it. It answers only after
the broker acknowledged the record, and produces nothing when any check fails.
The API and the request-signing format: docs/publishing.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import mmap
import re
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiohttp
import nacl.exceptions
import nacl.signing
import orjson
from aiohttp import web

from connectors.kafka import Delivered, EventProducer, Topics
from connectors.metrics import PUBLISHED, TRUST_ROOT_EXPIRY, instrument
from connectors.origin import FetchLimits
from schemas.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    FairstreamError,
    RejectedError,
    RootExpiredError,
)
from schemas.events import (
    DEFAULT_MAX_ARTIFACT_SIZE,
    HEX_SHA1,
    HEX_SHA256,
    AdvisorySource,
    ReleaseExpunged,
    ReleasePublished,
    ReleaseYanked,
    SecurityAdvisory,
    check_version_text,
)
from schemas.names import check_package_name
from schemas.request_signing import (
    CONTENT_SHA256_HEADER,
    DATE_HEADER,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    request_message,
)
from schemas.signing import PublicKey, SigningKey, seal
from schemas.trust import Delegation, TrustRoot, namespace_of, short_ids, verify_event
from schemas.versions import drupal_to_composer
from services.publishing.publisher import PublishInputError, build_release, next_sequence

log = logging.getLogger(__name__)

#: How far a request's date may be from the service's clock, either way; a
#: signature is also remembered this long after its date, so it is accepted once.
REPLAY_WINDOW = timedelta(minutes=5)
#: Largest JSON request document (a release's metadata, a yank, an advisory).
MAX_DOCUMENT_SIZE = 1 << 20
#: What a multipart upload may carry beside the zip: its text fields and part headers.
_FORM_OVERHEAD = 2 * MAX_DOCUMENT_SIZE
_MAX_PART_HEADERS = 16 * 1024
_CHUNK = 256 * 1024
_RFC3339_UTC = re.compile(
    r"(?P<seconds>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,6}))?(?:Z|\+00:00)"
)
_DRUPAL_VERSION_SHAPE = re.compile(r"\d+\.x-")
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")
_SEVERITIES = ("low", "medium", "high", "critical")
_Event = TypeVar("_Event", ReleaseYanked, ReleaseExpunged, SecurityAdvisory)
_Body = TypeVar("_Body")
_Published = TypeVar(
    "_Published", ReleasePublished, ReleaseYanked, ReleaseExpunged, SecurityAdvisory
)


# --- errors: each carries its HTTP status and a stable code -----------------------------


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


# --- authentication: pure, no IO; the clock is a parameter -----------------------------


@dataclass(frozen=True)
class RequestCredentials:
    """A request's authentication headers, parsed, with the trusted key they name."""

    keyid: str
    date: str
    signed_at: datetime
    signature: bytes
    key: PublicKey
    #: The body's sha256 as the client announced it (optional header), so that the
    #: signature can be checked before a large body is read.
    content_sha256: str | None = None


class RequestVerifier:
    """Authenticates signed requests against a trust root, and remembers signatures (replay).

    ``credentials`` checks the headers alone (before the body is read),
    ``verify`` the signature over method, path, date and body digest (and
    ``verify_body`` does it around reading the body), and ``authorize`` that
    the key is delegated for the package's namespace. The first three raise
    ``UnauthenticatedRequestError`` (401), the last ``ForbiddenRequestError`` (403).
    """

    def __init__(
        self,
        root: TrustRoot,
        *,
        clock: Callable[[], datetime],
        window: timedelta = REPLAY_WINDOW,
    ) -> None:
        self.root = root
        self._clock = clock
        self._window = window
        # (keyid, signature) -> until when it must be remembered (its date + window);
        # after that the date check refuses the request anyway.
        self._seen: dict[tuple[str, bytes], datetime] = {}

    def credentials(self, headers: Mapping[str, str]) -> RequestCredentials:
        """The parsed authentication headers, if present, well-formed, fresh and of a known key."""
        values = _single_headers(headers, (KEY_ID_HEADER, DATE_HEADER, SIGNATURE_HEADER))
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise UnauthenticatedRequestError(
                "unsigned",
                f"the request lacks the {', '.join(missing)} header(s): every request is signed "
                "with an Ed25519 key the trust root delegates for the package's namespace (see "
                "docs/publishing.md, 'Signing a request'), e.g. with `fairstream publishing`",
            )
        keyid, date, signature_text = (
            str(values[KEY_ID_HEADER]),
            str(values[DATE_HEADER]),
            str(values[SIGNATURE_HEADER]),
        )
        signed_at = self._check_date(date)
        try:
            signature = base64.b64decode(signature_text, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != 64:
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"{SIGNATURE_HEADER} is not the standard base64 of a 64-byte Ed25519 signature; "
                "send base64(Ed25519-sign(key, message)) as docs/publishing.md describes",
            )
        key = self.root.keys.get(keyid)
        if key is None:
            raise UnauthenticatedRequestError(
                "unknown-key",
                f"key id {keyid[:16]!r} is not in trust root v{self.root.version}: sign with a "
                "key the root delegates for the namespace (the key id is the hex sha256 of the "
                "raw public key), or ask the root key holders to delegate yours",
            )
        announced = _single_headers(headers, (CONTENT_SHA256_HEADER,))[CONTENT_SHA256_HEADER]
        if announced is not None and not HEX_SHA256.fullmatch(announced):
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"{CONTENT_SHA256_HEADER} is not the lower-case hex sha256 of the body; send "
                "the digest the signature covers, or leave the header out",
            )
        return RequestCredentials(keyid, date, signed_at, signature, key, announced)

    async def verify_body(
        self,
        credentials: RequestCredentials,
        method: str,
        path: str,
        read_body: Callable[[], Awaitable[tuple[_Body, str]]],
    ) -> _Body:
        """Read the body with ``read_body`` (which returns it and its sha256) and verify the
        request; returns the body.

        With an announced ``Fairstream-Content-Sha256`` the signature is checked
        first, so a forged request is refused before its body is read; the body
        must then hash to the announced digest.
        """
        announced = credentials.content_sha256
        if announced is None:
            body, digest = await read_body()
            self.verify(credentials, method, path, digest)
            return body
        self.verify(credentials, method, path, announced)
        body, digest = await read_body()
        if digest != announced:
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"the body's sha256 is {digest[:16]}…, not the {announced[:16]}… the request "
                f"announced in {CONTENT_SHA256_HEADER} and signed: the body was altered or cut "
                "in transit; send the request again, signed anew",
            )
        return body

    def verify(
        self, credentials: RequestCredentials, method: str, path: str, body_sha256: str
    ) -> None:
        """Check the signature over the request, then that it was not used before."""
        try:
            message = request_message(method, path, credentials.date, body_sha256)
            nacl.signing.VerifyKey(credentials.key.raw).verify(message, credentials.signature)
        except (nacl.exceptions.BadSignatureError, ValueError) as exc:
            raise UnauthenticatedRequestError(
                "bad-signature",
                f"the signature by key {credentials.keyid[:16]} does not verify over {method} "
                f"{path}, date {credentials.date} and body sha256 {body_sha256[:16]}…: the "
                "request was altered after signing or signed over other bytes; sign the exact "
                "path, the date header as sent and the sha256 of the body as sent",
            ) from exc
        now = self._clock()
        self._seen = {seen: until for seen, until in self._seen.items() if until > now}
        used = (credentials.keyid, credentials.signature)
        if used in self._seen:
            raise UnauthenticatedRequestError(
                "replayed",
                f"this request (key {credentials.keyid[:16]}, date {credentials.date}) was "
                "received before: a signed request is accepted once; sign every request and "
                "every retry anew, with a fresh date",
            )
        self._seen[used] = credentials.signed_at + self._window

    def authorize(self, credentials: RequestCredentials, package: str) -> Delegation:
        """The delegation of ``package``'s namespace, if it lists the request's key."""
        namespace = namespace_of(package)
        delegation = self.root.delegation_for(package)
        if delegation is None:
            raise ForbiddenRequestError(
                "undelegated-namespace",
                f"{namespace} is delegated to no publisher by trust root v{self.root.version}; "
                "nobody may publish there until the root key holders delegate it",
            )
        if credentials.keyid not in delegation.keyids:
            elsewhere = sorted(
                d.namespace for d in self.root.delegations if credentials.keyid in d.keyids
            )
            where = f"it is delegated for {', '.join(elsewhere)}" if elsewhere else "not delegated"
            raise ForbiddenRequestError(
                "undelegated-key",
                f"key {credentials.keyid[:16]} may not publish for {namespace} in trust root "
                f"v{self.root.version} ({where}); sign with one of {delegation.publisher}'s keys "
                f"({short_ids(delegation.keyids)}) or ask the root key holders to delegate yours",
            )
        return delegation

    def _check_date(self, date: str) -> datetime:
        match = _RFC3339_UTC.fullmatch(date)
        if match is None:
            raise UnauthenticatedRequestError(
                "bad-date",
                f"{DATE_HEADER} {date!r} is not an RFC 3339 UTC time like "
                "2024-05-01T12:00:00.123Z (Z or +00:00, at most 6 fraction digits)",
            )
        try:
            signed_at = datetime.fromisoformat(match["seconds"]).replace(
                microsecond=int((match["fraction"] or "0").ljust(6, "0")), tzinfo=UTC
            )
        except ValueError as exc:
            raise UnauthenticatedRequestError(
                "bad-date", f"{DATE_HEADER} {date!r} is not a valid time: {exc}"
            ) from exc
        now = self._clock()
        skew = (signed_at - now).total_seconds()
        if abs(skew) > self._window.total_seconds():
            direction = "ahead of" if skew > 0 else "behind"
            raise UnauthenticatedRequestError(
                "stale-date",
                f"{DATE_HEADER} {date} is {abs(skew):.0f} s {direction} the service's clock "
                f"({now.isoformat()}), more than the {self._window.total_seconds():.0f} s "
                "allowed; sync the client's clock (NTP) and sign the request again",
            )
        return signed_at


def _single_headers(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str | None]:
    """The value of each named header (case-insensitive), None if absent; refuses repeats."""
    found: dict[str, list[str]] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), []).append(value)
    values: dict[str, str | None] = {}
    for name in names:
        given = found.get(name.lower(), [])
        if len(given) > 1:
            raise UnauthenticatedRequestError(
                "bad-signature", f"the {name} header is given {len(given)} times; send it once"
            )
        values[name] = given[0] if given else None
    return values


def signers_by_namespace(
    root: TrustRoot, keys: Sequence[SigningKey]
) -> dict[str, list[SigningKey]]:
    """The namespaces ``keys`` can sign for on their own (a threshold of delegated keys), and
    which of the keys sign there.

    Raises ``ConfigurationError`` if they meet no delegation's threshold.
    """
    served: dict[str, list[SigningKey]] = {}
    for delegation in root.delegations:
        delegated = {k.public_key.keyid: k for k in keys if k.public_key.keyid in delegation.keyids}
        if len(delegated) >= delegation.threshold:
            served[delegation.namespace] = list(delegated.values())
    if not served:
        raise ConfigurationError(
            f"the service's keys ({short_ids(k.public_key.keyid for k in keys)}) meet the "
            f"threshold of no namespace in trust root v{root.version} (delegated: "
            f"{', '.join(f'{d.namespace}@{d.threshold}' for d in root.delegations) or 'none'}); "
            "give the publisher's private keys with --key, or pin a root that delegates them"
        )
    return served


# --- the upload form --------------------------------------------------------------------


@dataclass(frozen=True)
class UploadForm:
    """A multipart/form-data body: its text fields, and the ``zip`` part copied to a file."""

    fields: dict[str, str]
    zip_path: Path | None


def form_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type; raises ``BadRequestError``."""
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise BadRequestError(
            "malformed-request",
            "the multipart/form-data Content-Type has no valid boundary parameter",
        )
    return boundary


def read_form(body: Path, boundary: str, zip_dest: Path) -> UploadForm:
    """Split a spooled multipart/form-data body; the ``zip`` part is copied to ``zip_dest``.

    Text fields are UTF-8, at most ``MAX_DOCUMENT_SIZE`` bytes each. Raises
    ``BadRequestError`` for a body that is not such a form, a part without a
    name, a field given twice or a text field that is not UTF-8.
    """
    delimiter = b"--" + boundary.encode("ascii")
    fields: dict[str, str] = {}
    zip_path: Path | None = None

    def bad(problem: str) -> BadRequestError:
        return BadRequestError("malformed-request", f"the multipart form {problem}")

    if body.stat().st_size == 0:
        raise bad("is empty")
    with body.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[: len(delimiter)] == delimiter:
            position = 0
        else:
            found = data.find(b"\r\n" + delimiter)
            if found < 0:
                raise bad(f"never uses its boundary {boundary!r}")
            position = found + 2
        while True:
            position += len(delimiter)
            marker = data[position : position + 2]
            if marker == b"--":
                break
            if marker != b"\r\n":
                raise bad("has a boundary line not followed by CRLF")
            headers_start = position + 2
            headers_end = data.find(b"\r\n\r\n", headers_start, headers_start + _MAX_PART_HEADERS)
            if headers_end < 0:
                raise bad("has a part whose headers do not end (or exceed 16 KiB)")
            headers = BytesHeaderParser().parsebytes(data[headers_start : headers_end + 2])
            name = headers.get_param("name", header="content-disposition")
            if headers.get_content_disposition() != "form-data" or not isinstance(name, str):
                raise bad("has a part without Content-Disposition: form-data; name=...")
            content_start = headers_end + 4
            content_end = data.find(b"\r\n" + delimiter, content_start)
            if content_end < 0:
                raise bad("is truncated: its closing boundary is missing")
            if name in fields or (name == "zip" and zip_path is not None):
                raise bad(f"gives the field {name!r} twice")
            if name == "zip":
                zip_path = zip_dest
                with zip_dest.open("wb") as out:
                    for start in range(content_start, content_end, _CHUNK):
                        out.write(data[start : min(start + _CHUNK, content_end)])
            else:
                if content_end - content_start > MAX_DOCUMENT_SIZE:
                    raise bad(f"has a field {name!r} over {MAX_DOCUMENT_SIZE} bytes")
                try:
                    fields[name] = data[content_start:content_end].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise bad(f"has a field {name!r} that is not UTF-8") from exc
            position = content_end + 2
    return UploadForm(fields, zip_path)


# --- request documents -------------------------------------------------------------------


def parse_document(body: bytes) -> dict[str, Any]:
    """A JSON request body as an object; raises ``BadRequestError``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError("malformed-request", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequestError("malformed-request", "the body is JSON but not an object")
    return document


def _check_fields(document: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - document.keys())
    unknown = sorted(document.keys() - required - optional)
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown {', '.join(unknown)}")
    if problems:
        raise BadRequestError(
            "malformed-request",
            f"fields: {'; '.join(problems)}; this request takes {', '.join(sorted(required))}"
            + (f" and optionally {', '.join(sorted(optional))}" if optional else ""),
        )


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document[name]
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError("malformed-request", f"field {name} must be a non-empty string")
    return value


def _optional_text(document: Mapping[str, Any], name: str) -> str | None:
    if document.get(name) is None:
        return None
    return _text(document, name)


@dataclass(frozen=True)
class ReleaseRequest:
    """What a release request asks for; ``sha256``, ``sha1`` and ``size`` are what the caller
    expects the artifact to be, if it says."""

    package: str
    drupal_version: str
    origin_url: str
    metadata: dict[str, Any] | None = None
    sha256: str | None = None
    sha1: str | None = None
    size: int | None = None

    REQUIRED: ClassVar[set[str]] = {"package", "drupal_version", "origin_url"}
    OPTIONAL: ClassVar[set[str]] = {"metadata", "sha256", "sha1", "size"}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ReleaseRequest:
        """From a JSON body; raises ``BadRequestError``."""
        _check_fields(document, cls.REQUIRED, cls.OPTIONAL)
        metadata = document.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise BadRequestError("malformed-request", "field metadata must be a JSON object")
        size = document.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise BadRequestError("malformed-request", "field size must be an integer")
        return cls(
            package=_text(document, "package"),
            drupal_version=_text(document, "drupal_version"),
            origin_url=_text(document, "origin_url"),
            metadata=metadata,
            sha256=_optional_text(document, "sha256"),
            sha1=_optional_text(document, "sha1"),
            size=size,
        )

    @classmethod
    def from_form(cls, fields: Mapping[str, str]) -> ReleaseRequest:
        """From an upload form's text fields (``metadata`` as JSON text); raises ``BadRequestError``."""
        document: dict[str, Any] = dict(fields)
        if "metadata" in document:
            document["metadata"] = parse_document(document["metadata"].encode())
        if "size" in document:
            if not document["size"].isdigit():
                raise BadRequestError("malformed-request", "field size must be an integer")
            document["size"] = int(document["size"])
        return cls.from_document(document)

    def check(self) -> None:
        """Refuse, before any download, what would make the release invalid (422)."""
        _check_package(self.package)
        try:
            check_version_text(self.drupal_version, "drupal_version")
            drupal_to_composer(self.drupal_version)
        except RejectedError as exc:
            raise UnacceptableReleaseError(exc.reason, str(exc)) from exc
        problems = []
        if not self.origin_url.startswith(("http://", "https://")):
            problems.append(f"origin_url {self.origin_url!r} is not http:// or https://")
        if self.sha256 is not None and not HEX_SHA256.fullmatch(self.sha256):
            problems.append("sha256 is not 64 lower-case hex digits")
        if self.sha1 is not None and not HEX_SHA1.fullmatch(self.sha1):
            problems.append("sha1 is not 40 lower-case hex digits")
        if self.size is not None and self.size < 0:
            problems.append(f"size {self.size} is negative")
        if problems:
            raise UnacceptableReleaseError("malformed", "; ".join(problems))


def _check_package(package: str) -> None:
    try:
        check_package_name(package)
    except RejectedError as exc:
        raise UnacceptableReleaseError(exc.reason, str(exc)) from exc


def check_artifact(release: ReleasePublished, wanted: ReleaseRequest, zip_path: Path) -> None:
    """The built release's artifact is what the caller expected, and its zip is safe and named
    after the project (``token/`` for ``drupal/token``). Raises ``UnacceptableReleaseError``."""
    artifact = release.artifact
    mismatches = [
        f"{name} is {actual}, the request says {expected}"
        for name, actual, expected in (
            ("sha256", artifact.sha256, wanted.sha256),
            ("sha1", artifact.sha1, wanted.sha1),
            ("size", artifact.size, wanted.size),
        )
        if expected is not None and actual != expected
    ]
    if mismatches:
        raise UnacceptableReleaseError(
            "artifact-mismatch",
            f"the artifact of {release.package} {release.drupal_version} differs from the one "
            f"the request describes: {'; '.join(mismatches)}; check the zip (or origin_url)",
        )


# --- the service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishingSettings:
    """What a publishing service needs; built once by its composition root (the CLI)."""

    broker_url: str = field(repr=False)  # may carry SASL credentials
    topics: Topics = Topics()
    max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE
    delivery_timeout: float = 30.0
    replay_window: timedelta = REPLAY_WINDOW
    fetch_limits: FetchLimits = FetchLimits()
    #: Where request bodies and downloads are spooled; the system's temporary directory if None.
    work_dir: Path | None = None


class PublishingService:
    """The aiohttp application of the publishing service (``self.app``).

    Construction raises ``ConfigurationError`` when ``keys`` meet the threshold
    of no namespace the trust root delegates.
    """

    def __init__(
        self,
        settings: PublishingSettings,
        root: TrustRoot,
        keys: Sequence[SigningKey],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.root = root
        self._signers = signers_by_namespace(root, keys)
        self._clock = clock
        self.verifier = RequestVerifier(root, clock=clock, window=settings.replay_window)
        self._producer = EventProducer(
            settings.broker_url, delivery_timeout=settings.delivery_timeout
        )
        # One thread: produce calls wait for their delivery reports one at a time,
        # and never block the event loop.
        self._produce_thread = ThreadPoolExecutor(1, thread_name_prefix="fairstream-produce")
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(middlewares=[_json_errors])
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)
        self.app.add_routes(
            [
                web.get("/health", self.health),
                web.post("/v1/releases", self.releases),
                web.post("/v1/yanks", self.yanks),
                web.post("/v1/expunges", self.expunges),
                web.post("/v1/advisories", self.advisories),
            ]
        )
        instrument(self.app, "publishing")
        TRUST_ROOT_EXPIRY.set_function(lambda: self.root.expires.timestamp())

    @property
    def namespaces(self) -> list[str]:
        """The namespaces this service signs for."""
        return sorted(self._signers)

    async def _start(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession()

    async def _stop(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
        await asyncio.get_running_loop().run_in_executor(self._produce_thread, self._producer.close)
        self._produce_thread.shutdown(wait=True)

    # --- handlers ------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        expired = self.root.expires <= self._clock()
        body = {
            "status": "frozen: trust root expired" if expired else "ok",
            "namespaces": self.namespaces,
            "topic": self.settings.topics.releases,
            "max_artifact_size": self.settings.max_artifact_size,
            "trust_root": {"version": self.root.version, "expires": self.root.expires.isoformat()},
        }
        return web.json_response(body, status=503 if expired else 200)

    async def releases(self, request: web.Request) -> web.Response:
        """``POST /v1/releases``: JSON (the service downloads ``origin_url``) or an upload form."""
        credentials = self._credentials(request)
        with tempfile.TemporaryDirectory(prefix="publish-", dir=self.settings.work_dir) as tmp:
            work = Path(tmp)
            zip_path: Path | None
            if request.content_type == "multipart/form-data":
                boundary = form_boundary(request.headers.get("Content-Type", ""))
                limit = self.settings.max_artifact_size + _FORM_OVERHEAD
                body_path = await self.verifier.verify_body(
                    credentials,
                    request.method,
                    request.raw_path,
                    lambda: _spool(request, work / "body", limit),
                )
                form = await asyncio.to_thread(read_form, body_path, boundary, work / "upload.zip")
                wanted = ReleaseRequest.from_form(form.fields)
                if form.zip_path is None:
                    raise BadRequestError(
                        "malformed-request",
                        "the upload form has no zip part; send the release zip as the field "
                        "'zip' (or post JSON for the service to download origin_url)",
                    )
                zip_path = form.zip_path
                await asyncio.to_thread(body_path.unlink)
            else:
                document = await self._json_body(request, credentials)
                wanted = ReleaseRequest.from_document(document)
                zip_path = None
            wanted.check()
            signers = self._authorize(credentials, wanted.package)
            if zip_path is None:
                zip_path = await self._download(wanted.origin_url, work / "download.zip")
            release = await asyncio.to_thread(self._build_release, wanted, zip_path)
            release, delivered = await self._publish(release, signers)
        return _created(
            delivered,
            package=release.package,
            version=release.version,
            drupal_version=release.drupal_version,
            sha256=release.artifact.sha256,
            sha1=release.artifact.sha1,
            size=release.artifact.size,
            sequence=release.sequence,
        )

    async def yanks(self, request: web.Request) -> web.Response:
        """``POST /v1/yanks`` ``{package, version, reason}``."""
        credentials = self._credentials(request)
        document = await self._json_body(request, credentials)
        _check_fields(document, {"package", "version", "reason"}, set())
        package, version = _text(document, "package"), _text(document, "version")
        reason = _text(document, "reason")
        _check_package(package)
        signers = self._authorize(credentials, package)
        _check_composer_version(version)
        event = _built(
            lambda: ReleaseYanked(
                package=package,
                version=version,
                sequence=0,  # numbered when produced
                reason=reason,
                yanked_at=self._now(),
            )
        )
        event, delivered = await self._publish(event, signers)
        return _created(delivered, package=package, version=version, sequence=event.sequence)

    async def expunges(self, request: web.Request) -> web.Response:
        """``POST /v1/expunges`` ``{package, version, sha256, reason}``."""
        credentials = self._credentials(request)
        document = await self._json_body(request, credentials)
        _check_fields(document, {"package", "version", "sha256", "reason"}, set())
        package, version = _text(document, "package"), _text(document, "version")
        sha256, reason = _text(document, "sha256"), _text(document, "reason")
        _check_package(package)
        signers = self._authorize(credentials, package)
        _check_composer_version(version)
        event = _built(
            lambda: ReleaseExpunged(
                package=package,
                version=version,
                sha256=sha256,
                sequence=0,  # numbered when produced
                reason=reason,
                expunged_at=self._now(),
            )
        )
        event, delivered = await self._publish(event, signers)
        return _created(
            delivered, package=package, version=version, sha256=sha256, sequence=event.sequence
        )

    async def advisories(self, request: web.Request) -> web.Response:
        """``POST /v1/advisories``: one advisory in Composer's security-advisories fields."""
        credentials = self._credentials(request)
        document = await self._json_body(request, credentials)
        _check_fields(
            document,
            {
                "advisoryId",
                "packageName",
                "affectedVersions",
                "title",
                "link",
                "reportedAt",
                "sources",
            },
            {"cve", "severity"},
        )
        package = _text(document, "packageName")
        _check_package(package)
        sources = _advisory_sources(document["sources"])
        advisory_id, affected = _text(document, "advisoryId"), _text(document, "affectedVersions")
        title, link = _text(document, "title"), _text(document, "link")
        reported_at = _text(document, "reportedAt")
        cve, severity = _optional_text(document, "cve"), _optional_text(document, "severity")
        signers = self._authorize(credentials, package)
        _check_advisory(reported_at, cve, severity)
        event = _built(
            lambda: SecurityAdvisory(
                package=package,
                sequence=0,  # numbered when produced
                advisory_id=advisory_id,
                affected_versions=affected,
                title=title,
                link=link,
                reported_at=reported_at,
                sources=sources,
                published_at=self._now(),
                cve=cve,
                severity=severity,
            )
        )
        event, delivered = await self._publish(event, signers)
        return _created(delivered, package=package, advisoryId=advisory_id, sequence=event.sequence)

    # --- steps -----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def _credentials(self, request: web.Request) -> RequestCredentials:
        """Check the root and the authentication headers before reading any of the body."""
        if self.root.expires <= self._clock():
            # Fail closed, as nodes do: a key revoked after this root might still be in it.
            raise RootExpiredError(
                f"the service's trust root v{self.root.version} expired at "
                f"{self.root.expires.isoformat()}; it publishes nothing until its operator pins "
                "a newer root and restarts it"
            )
        return self.verifier.credentials(request.headers)

    async def _json_body(
        self, request: web.Request, credentials: RequestCredentials
    ) -> dict[str, Any]:
        """Read, authenticate and parse a JSON body (at most ``MAX_DOCUMENT_SIZE`` bytes)."""
        if request.content_type != "application/json":
            raise UnsupportedMediaTypeError(
                "unsupported-media-type",
                f"the body is {request.content_type or 'untyped'}; send application/json"
                + (" or multipart/form-data" if request.path == "/v1/releases" else ""),
            )
        body = await self.verifier.verify_body(
            credentials,
            request.method,
            request.raw_path,
            lambda: _read_limited(request, MAX_DOCUMENT_SIZE),
        )
        return parse_document(body)

    def _authorize(self, credentials: RequestCredentials, package: str) -> list[SigningKey]:
        """The request's key may publish ``package``, and this service can sign for it."""
        self.verifier.authorize(credentials, package)
        namespace = namespace_of(package)
        signers = self._signers.get(namespace)
        if signers is None:
            raise ForbiddenRequestError(
                "namespace-not-served",
                f"this service signs for {', '.join(self.namespaces)}, not {namespace}: its keys "
                f"are not delegated for it in trust root v{self.root.version}; publish through "
                f"the publishing service of {namespace}'s publisher",
            )
        return signers

    async def _download(self, url: str, dest: Path) -> Path:
        """Stream ``url`` to ``dest``, refusing more than the artifact size limit."""
        limit = self.settings.max_artifact_size
        limits = self.settings.fetch_limits
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
        )
        assert self._session is not None, "the app was not started"
        too_large = RequestTooLargeError(
            "too-large",
            f"the artifact at {url} is over this service's limit of {limit} bytes; nodes "
            "refuse it too (ask the operators to raise the limit if the release is genuine)",
        )
        try:
            async with self._session.get(url, timeout=timeout, allow_redirects=True) as response:
                if response.status != 200:
                    raise OriginFailedError(
                        "origin-unavailable",
                        f"the origin answered {response.status} for {url}; check origin_url, "
                        "or upload the zip with a multipart/form-data request",
                    )
                if response.content_length is not None and response.content_length > limit:
                    raise too_large
                size = 0
                with dest.open("wb") as out:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise too_large
                        out.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OriginFailedError(
                "origin-unavailable",
                f"could not download {url} ({type(exc).__name__}: {exc}); check that the origin "
                "serves it, or upload the zip with a multipart/form-data request",
            ) from exc
        return dest

    def _build_release(self, wanted: ReleaseRequest, zip_path: Path) -> ReleasePublished:
        """Hash, inspect and describe the zip (runs in a thread); raises 413 or 422 errors."""
        limit = self.settings.max_artifact_size
        if zip_path.stat().st_size > limit:
            raise RequestTooLargeError(
                "too-large",
                f"the uploaded zip is over this service's limit of {limit} bytes; nodes refuse "
                "it too (ask the operators to raise the limit if the release is genuine)",
            )
        label = f"the zip of {wanted.package} {wanted.drupal_version}"
        try:
            release = build_release(
                package=wanted.package,
                drupal_version=wanted.drupal_version,
                zip_path=zip_path,
                origin_url=wanted.origin_url,
                metadata=wanted.metadata,
                published_at=self._now(),
                sequence=0,  # numbered when produced
            )
        except PublishInputError as exc:
            # The message names the spooled file: name what the caller sent instead.
            message = str(exc).replace(f"zip {zip_path}", label).replace(str(zip_path), label)
            raise UnacceptableReleaseError("bad-artifact", message) from exc
        except RejectedError as exc:
            raise UnacceptableReleaseError(exc.reason, str(exc)) from exc
        check_artifact(release, wanted, zip_path)
        return release

    async def _publish(
        self, event: _Published, signers: Sequence[SigningKey]
    ) -> tuple[_Published, Delivered]:
        """Number, sign, check and produce ``event``; returns it as published and where it landed.

        It runs on the one produce thread, so that events get their sequence
        numbers in the order they are produced: two concurrent requests about
        one package cannot reach nodes in the reverse order of their sequences
        (nodes would refuse the second as a rollback).
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._produce_thread, self._sign_and_produce, event, signers
        )

    def _sign_and_produce(
        self, event: _Published, signers: Sequence[SigningKey]
    ) -> tuple[_Published, Delivered]:
        numbered = replace(event, sequence=next_sequence())
        try:
            value = seal(numbered.to_bytes(), signers)
            verify_event(
                value,
                self.root,
                now=self._clock(),
                max_artifact_size=self.settings.max_artifact_size,
            )
        except RootExpiredError:
            raise
        except RejectedError as exc:
            raise UnacceptableReleaseError(
                exc.reason, f"nodes would refuse this event, so it is not published: {exc}"
            ) from exc
        delivered = self._producer.produce(
            self.settings.topics.releases, numbered.package.encode(), value
        )
        PUBLISHED.labels(type(numbered).__name__).inc()
        log.info(
            "published %s of %s to %s[%d]@%d",
            type(numbered).__name__,
            numbered.package,
            delivered.topic,
            delivered.partition,
            delivered.offset,
        )
        return numbered, delivered


def _check_composer_version(version: str) -> None:
    try:
        check_version_text(version)
    except RejectedError as exc:
        raise UnacceptableReleaseError(exc.reason, str(exc)) from exc
    if _DRUPAL_VERSION_SHAPE.match(version):
        try:
            hint = f" ({drupal_to_composer(version)} for {version})"
        except RejectedError:
            hint = ""
        raise UnacceptableReleaseError(
            "invalid-version",
            f"version {version!r} is a Drupal version; give the Composer version nodes list{hint}",
        )


def _advisory_sources(value: object) -> tuple[AdvisorySource, ...]:
    problem = BadRequestError(
        "malformed-request",
        'field sources must be a list of {"name": ..., "remoteId": ...} objects of strings',
    )
    if not isinstance(value, list):
        raise problem
    sources = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"name", "remoteId"}:
            raise problem
        if not all(isinstance(item[k], str) and item[k] for k in ("name", "remoteId")):
            raise problem
        sources.append(AdvisorySource(name=item["name"], remote_id=item["remoteId"]))
    return tuple(sources)


def _check_advisory(reported_at: str, cve: str | None, severity: str | None) -> None:
    problems = []
    try:
        datetime.strptime(reported_at, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        problems.append(f"reportedAt {reported_at!r} is not 'YYYY-MM-DD HH:MM:SS' (UTC)")
    if cve is not None and not _CVE.fullmatch(cve):
        problems.append(f"cve {cve!r} is not a CVE id like CVE-2024-12345")
    if severity is not None and severity not in _SEVERITIES:
        problems.append(f"severity {severity!r} is not one of {', '.join(_SEVERITIES)}")
    if problems:
        raise UnacceptableReleaseError("malformed", "; ".join(problems))


def _built(build: Callable[[], _Event]) -> _Event:
    """An event from its constructor, whose checks become 422s."""
    try:
        return build()
    except RejectedError as exc:
        raise UnacceptableReleaseError(exc.reason, str(exc)) from exc


def _created(delivered: Delivered, **details: object) -> web.Response:
    body = {
        "topic": delivered.topic,
        "partition": delivered.partition,
        "offset": delivered.offset,
        **details,
    }
    return web.json_response(body, status=201)


def _error_response(
    status: int, error: str, reason: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status, headers=headers)


@web.middleware
async def _json_errors(
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


async def _read_limited(request: web.Request, limit: int) -> tuple[bytes, str]:
    """The whole body and its sha256, refused (413) past ``limit`` bytes and (408) when it
    does not arrive within ``_body_deadline``."""
    _refuse_announced(request, limit)
    body = bytearray()
    deadline = _body_deadline(request, limit)
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise _body_too_large(limit)
    except TimeoutError:
        raise _body_too_slow(deadline) from None
    return bytes(body), hashlib.sha256(body).hexdigest()


async def _spool(request: web.Request, path: Path, limit: int) -> tuple[Path, str]:
    """Write the body to ``path``; returns it and its sha256. Refused (413) past ``limit`` bytes
    and (408) when it does not arrive within ``_body_deadline``."""
    _refuse_announced(request, limit)
    digest, size = hashlib.sha256(), 0
    deadline = _body_deadline(request, limit)
    try:
        async with asyncio.timeout(deadline):
            with path.open("wb") as out:
                async for chunk in request.content.iter_chunked(_CHUNK):
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
