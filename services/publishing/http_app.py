"""The publishing service: an HTTP API that checks, signs and produces a namespace publisher's events.

Drupal.org's release pipeline (or any namespace publisher) posts a release, a
yank, an expunge or an advisory; the service authenticates the request by its
Ed25519 signature (a key the trust root delegates for the package's namespace,
no shared password), checks everything (the artifact: sha256, sha1, size, one
top directory named after the project), signs the event with its own publisher
keys, checks that a node would accept it, and produces it. It answers only after
the broker acknowledged the record, and produces nothing when any check fails.
The API and the request-signing format: docs/publishing.md.

The service's parts: ``errors`` (the refusals and their JSON answers), ``request_auth``
(signatures, delegations), ``body_limits`` (reading a body within a size and a deadline),
``multipart`` (the upload form), ``validation`` (request documents); this module is the
aiohttp application and its handlers.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from connectors.kafka_producers import Delivered, EventProducer
from connectors.kafka_topics import Topics
from connectors.metrics import PUBLISHED, TRUST_ROOT_EXPIRY, instrument
from connectors.origin import FetchLimits
from schemas.errors import RejectedError, RootExpiredError
from schemas.event_verification import verify_event
from schemas.events import (
    DEFAULT_MAX_ARTIFACT_SIZE,
    ReleaseExpunged,
    ReleasePublished,
    ReleaseYanked,
    SecurityAdvisory,
)
from schemas.signing import SigningKey, seal
from schemas.trust import TrustRoot, namespace_of
from services.publishing.body_limits import (
    CHUNK,
    FORM_OVERHEAD,
    MAX_DOCUMENT_SIZE,
    read_limited,
    spool,
)
from services.publishing.errors import (
    BadRequestError,
    ForbiddenRequestError,
    OriginFailedError,
    RequestTooLargeError,
    UnacceptableReleaseError,
    UnsupportedMediaTypeError,
    json_errors,
)
from services.publishing.multipart import form_boundary, read_form
from services.publishing.publisher import PublishInputError, build_release, next_sequence
from services.publishing.request_auth import (
    REPLAY_WINDOW,
    RequestCredentials,
    RequestVerifier,
    signers_by_namespace,
)
from services.publishing.validation import (
    ReleaseRequest,
    advisory_sources,
    check_advisory,
    check_artifact,
    check_composer_version,
    check_fields,
    check_package,
    optional_text,
    parse_document,
    required_text,
)

log = logging.getLogger(__name__)

_Event = TypeVar("_Event", ReleaseYanked, ReleaseExpunged, SecurityAdvisory)
_Published = TypeVar(
    "_Published", ReleasePublished, ReleaseYanked, ReleaseExpunged, SecurityAdvisory
)


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
        self.app = web.Application(middlewares=[json_errors])
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
                limit = self.settings.max_artifact_size + FORM_OVERHEAD
                body_path = await self.verifier.verify_body(
                    credentials,
                    request.method,
                    request.raw_path,
                    lambda: spool(request, work / "body", limit),
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
        check_fields(document, {"package", "version", "reason"}, set())
        package, version = required_text(document, "package"), required_text(document, "version")
        reason = required_text(document, "reason")
        check_package(package)
        signers = self._authorize(credentials, package)
        check_composer_version(version)
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
        check_fields(document, {"package", "version", "sha256", "reason"}, set())
        package, version = required_text(document, "package"), required_text(document, "version")
        sha256, reason = required_text(document, "sha256"), required_text(document, "reason")
        check_package(package)
        signers = self._authorize(credentials, package)
        check_composer_version(version)
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
        check_fields(
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
        package = required_text(document, "packageName")
        check_package(package)
        sources = advisory_sources(document["sources"])
        advisory_id, affected = (
            required_text(document, "advisoryId"),
            required_text(document, "affectedVersions"),
        )
        title, link = required_text(document, "title"), required_text(document, "link")
        reported_at = required_text(document, "reportedAt")
        cve, severity = optional_text(document, "cve"), optional_text(document, "severity")
        signers = self._authorize(credentials, package)
        check_advisory(reported_at, cve, severity)
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
            lambda: read_limited(request, MAX_DOCUMENT_SIZE),
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
                    async for chunk in response.content.iter_chunked(CHUNK):
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
