"""The publishing service on a real socket, against the real embedded broker (Tansu) and a real
local origin: what it publishes verifies under the trust root, and what it refuses leaves the
topic untouched."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from connectors.kafka_reading import read_partition
from connectors.kafka_topics import Topics, ensure_topics
from infra import devstack
from infra.devtools.origin_http import origin_app
from infra.devtools.sample_projects import sample_zip
from schemas.errors import ConfigurationError
from schemas.event_verification import verify_event
from schemas.events import (
    AdvisorySource,
    ReleaseExpunged,
    ReleasePublished,
    ReleaseYanked,
    SecurityAdvisory,
    utc_now,
)
from schemas.request_signing import CONTENT_SHA256_HEADER, SIGNATURE_HEADER, sign_request
from schemas.signing import SignedEvent, SigningKey
from services.publishing.cli import publishing
from services.publishing.client import (
    PublishingClient,
    PublishingUnavailableError,
    PublishRefusedError,
)
from services.publishing.http_app import PublishingService, PublishingSettings
from services.publishing.trust_admin import DelegationSpec, build_root, write_key_pair

pytestmark = pytest.mark.integration

ROOT_KEY = SigningKey(seed=b"\x61" * 32)
SERVICE = SigningKey(seed=b"\x62" * 32)
PIPELINE = SigningKey(seed=b"\x63" * 32)
ACME = SigningKey(seed=b"\x64" * 32)
STRANGER = SigningKey(seed=b"\x65" * 32)

ROOT = build_root(
    version=1,
    root_keys=[ROOT_KEY.public_key],
    root_threshold=1,
    delegations=[
        DelegationSpec("drupal/*", "drupal.org", (SERVICE.public_key, PIPELINE.public_key), 1),
        DelegationSpec("acme/*", "acme.example", (ACME.public_key,), 1),
    ],
)
#: The test service's artifact size limit: sample zips are about 1 KB.
LIMIT = 64 * 1024


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def topics(stack: devstack.Stack) -> Topics:
    created = Topics.with_prefix(f"pub-{uuid4().hex[:12]}.")
    ensure_topics(stack.broker_url, {created.releases: 1})
    return created


@pytest.fixture
def origin_dir(tmp_path: Path) -> Path:
    """Zips as an origin serves them: good ones, and every kind of bad one."""
    root = tmp_path / "origin"
    sample_zip(root, "token", "8.x-1.9")
    sample_zip(root, "pathauto", "8.x-1.12", {"drupal/token": "*"})
    write_zip(root / "two-tops.zip", {"token/a.txt": b"a", "other/b.txt": b"b"})
    write_zip(root / "unsafe.zip", {"token/a.txt": b"a", "token/../../evil.php": b"<?php"})
    (root / "not-a-zip.zip").write_bytes(b"this is not a zip file at all")
    (root / "big.zip").write_bytes(bytes(LIMIT + 1))
    return root


@pytest.fixture
async def origin(origin_dir: Path) -> AsyncIterator[TestServer]:
    running = TestServer(origin_app(origin_dir))
    await running.start_server()
    try:
        yield running
    finally:
        await running.close()


async def start_service(settings: PublishingSettings) -> TestServer:
    running = TestServer(PublishingService(settings, ROOT, [SERVICE]).app)
    await running.start_server()
    return running


@pytest.fixture
async def service(
    stack: devstack.Stack, topics: Topics, tmp_path: Path
) -> AsyncIterator[TestServer]:
    work = tmp_path / "spool"
    work.mkdir()
    running = await start_service(
        PublishingSettings(
            broker_url=stack.broker_url,
            topics=topics,
            max_artifact_size=LIMIT,
            delivery_timeout=10.0,
            work_dir=work,
        )
    )
    try:
        yield running
    finally:
        await running.close()
    assert list(work.iterdir()) == [], "every request's spooled files are removed"


def url(server: TestServer, path: str = "") -> str:
    return str(server.make_url(path))


def client(server: TestServer, key: SigningKey = PIPELINE) -> PublishingClient:
    return PublishingClient(url(server), key)


def on_topic(stack: devstack.Stack, topics: Topics) -> list[tuple[int, bytes]]:
    return read_partition(stack.broker_url, topics.releases, 0)


@dataclass
class Answer:
    status: int
    document: dict[str, Any]
    headers: dict[str, str]


async def post(
    server: TestServer,
    path: str,
    body: bytes,
    *,
    key: SigningKey | None = PIPELINE,
    content_type: str = "application/json",
    signed_body: bytes | None = None,
    at: datetime | None = None,
    announce: bool = True,
    forge: bool = False,
) -> Answer:
    """A raw request, signed over ``signed_body`` (default: the body sent) at ``at``;
    ``announce``: with the body digest header; ``forge``: with a signature of zeros."""
    headers = {"Content-Type": content_type}
    if key is not None:
        digest = hashlib.sha256(body if signed_body is None else signed_body).hexdigest()
        headers.update(sign_request(key, "POST", path, digest, now=at or datetime.now(UTC)))
        if not announce:
            del headers[CONTENT_SHA256_HEADER]
        if forge:
            headers[SIGNATURE_HEADER] = base64.b64encode(bytes(64)).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(server, path), data=body, headers=headers) as response,
    ):
        return Answer(response.status, await response.json(), dict(response.headers))


def release_body(origin: TestServer, file: str = "token-8.x-1.9.zip", **fields: Any) -> bytes:
    document = {
        "package": "drupal/token",
        "drupal_version": "8.x-1.9",
        "origin_url": url(origin, f"/{file}"),
        **fields,
    }
    return orjson.dumps({k: v for k, v in document.items() if v is not None})


# --- what gets published -----------------------------------------------------------------


async def test_a_release_published_through_the_client_lands_on_the_topic_and_verifies(
    stack: devstack.Stack, topics: Topics, service: TestServer, origin: TestServer, origin_dir: Path
) -> None:
    zip_path = origin_dir / "pathauto-8.x-1.12.zip"
    origin_url = url(origin, "/pathauto-8.x-1.12.zip")

    receipt = await asyncio.to_thread(
        client(service).publish_release,
        "drupal/pathauto",
        "8.x-1.12",
        origin_url,
        metadata={"description": "Aliases for every path."},
        sha1=hashlib.sha1(zip_path.read_bytes()).hexdigest(),
        size=zip_path.stat().st_size,
    )

    assert (receipt.topic, receipt.partition) == (topics.releases, 0)
    assert receipt.document["package"] == "drupal/pathauto"
    assert receipt.document["version"] == "1.12.0"
    assert receipt.document["sha256"] == sha256_of(zip_path)
    assert receipt.document["size"] == zip_path.stat().st_size
    records = on_topic(stack, topics)
    assert [offset for offset, _ in records] == [receipt.offset]
    event = verify_event(records[0][1], ROOT, now=utc_now())
    assert isinstance(event, ReleasePublished)
    assert event.artifact.sha256 == sha256_of(zip_path)
    assert event.artifact.origin_url == origin_url
    assert event.sequence == receipt.document["sequence"]
    assert event.composer["require"] == {"drupal/token": "*"}  # from the zip's composer.json
    assert event.composer["description"] == "Aliases for every path."  # from the request
    signed_by = {s.keyid for s in SignedEvent.from_bytes(records[0][1]).signatures}
    assert signed_by == {SERVICE.public_key.keyid}, "the service signs, not the pipeline"


async def test_an_uploaded_zip_is_published_without_being_downloaded(
    stack: devstack.Stack, topics: Topics, service: TestServer, origin_dir: Path
) -> None:
    zip_path = origin_dir / "token-8.x-1.9.zip"
    # Nothing listens there: the service must not try to download an uploaded release.
    origin_url = f"http://127.0.0.1:{closed_port()}/files/token-8.x-1.9.zip"

    receipt = await asyncio.to_thread(
        client(service).publish_release,
        "drupal/token",
        "8.x-1.9",
        origin_url,
        zip_path=zip_path,
        metadata={"require": {"drupal/core": "^10"}},
        sha256=sha256_of(zip_path),
    )

    assert receipt.document["sha256"] == sha256_of(zip_path)
    event = verify_event(on_topic(stack, topics)[0][1], ROOT, now=utc_now())
    assert isinstance(event, ReleasePublished)
    assert event.artifact.origin_url == origin_url
    assert event.artifact.size == zip_path.stat().st_size
    assert event.composer["require"] == {"drupal/core": "^10"}


async def test_yank_expunge_and_advisory_produce_verifiable_events(
    stack: devstack.Stack, topics: Topics, service: TestServer, origin: TestServer, origin_dir: Path
) -> None:
    pipeline = client(service)
    sha256 = sha256_of(origin_dir / "token-8.x-1.9.zip")
    published = await asyncio.to_thread(
        pipeline.publish_release, "drupal/token", "8.x-1.9", url(origin, "/token-8.x-1.9.zip")
    )

    yanked = await asyncio.to_thread(pipeline.yank, "drupal/token", "1.9.0", "broken update hook")
    advised = await asyncio.to_thread(
        pipeline.advise,
        "drupal/token",
        advisory_id="SA-CONTRIB-2024-001",
        affected_versions="<1.9.1",
        title="Access bypass",
        link="https://www.drupal.org/sa-contrib-2024-001",
        reported_at="2024-01-02 03:04:05",
        sources=[AdvisorySource("drupal.org", "SA-CONTRIB-2024-001")],
        cve="CVE-2024-12345",
        severity="high",
    )
    expunged = await asyncio.to_thread(
        pipeline.expunge, "drupal/token", "1.9.0", sha256, "leaked credential"
    )

    records = dict(on_topic(stack, topics))
    receipts = [published, yanked, advised, expunged]
    assert sorted(records) == [r.offset for r in receipts]
    events = [verify_event(records[r.offset], ROOT, now=utc_now()) for r in receipts]
    assert [type(e) for e in events] == [
        ReleasePublished,
        ReleaseYanked,
        SecurityAdvisory,
        ReleaseExpunged,
    ]
    sequences = [e.sequence for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4, "nodes apply them in order"
    yank, advisory, expunge = events[1], events[2], events[3]
    assert isinstance(yank, ReleaseYanked) and yank.reason == "broken update hook"
    assert isinstance(advisory, SecurityAdvisory)
    assert advisory.sources == (AdvisorySource("drupal.org", "SA-CONTRIB-2024-001"),)
    assert (advisory.cve, advisory.severity) == ("CVE-2024-12345", "high")
    assert advised.document["advisoryId"] == "SA-CONTRIB-2024-001"
    assert isinstance(expunge, ReleaseExpunged) and expunge.sha256 == sha256
    assert expunged.document["sha256"] == sha256


async def test_concurrent_requests_get_sequences_in_the_order_they_are_produced(
    stack: devstack.Stack, topics: Topics, service: TestServer, origin: TestServer
) -> None:
    # A release (slow: a download) and yanks racing it, all about one package: nodes
    # apply them in log order and refuse a sequence that goes back (rollback).
    requests = [post(service, "/v1/releases", release_body(origin))] + [
        post(
            service,
            "/v1/yanks",
            orjson.dumps({"package": "drupal/token", "version": f"1.{n}.0", "reason": "x"}),
        )
        for n in range(6)
    ]

    answers = await asyncio.gather(*requests)

    assert [a.status for a in answers] == [201] * 7
    records = on_topic(stack, topics)
    sequences = [verify_event(value, ROOT, now=utc_now()).sequence for _, value in records]
    assert len(records) == 7
    assert sequences == sorted(sequences) and len(set(sequences)) == 7


# --- refusals: each leaves the topic untouched ------------------------------------------

Case = Callable[[TestServer, TestServer], Awaitable[Answer]]


def upload_form(zip_bytes: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "test-boundary-7f3a"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="zip"; filename="t.zip"\r\n\r\n'
    ).encode() + zip_bytes
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def upload_too_large(service: TestServer, origin: TestServer) -> Answer:
    body, content_type = upload_form(
        bytes(LIMIT + 1),
        {"package": "drupal/token", "drupal_version": "8.x-1.9", "origin_url": url(origin)},
    )
    return await post(service, "/v1/releases", body, content_type=content_type)


async def forged_upload(service: TestServer, origin: TestServer) -> Answer:
    body, content_type = upload_form(
        bytes(LIMIT),
        {"package": "drupal/token", "drupal_version": "8.x-1.9", "origin_url": url(origin)},
    )
    return await post(service, "/v1/releases", body, content_type=content_type, forge=True)


async def upload_without_zip(service: TestServer, origin: TestServer) -> Answer:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="package"\r\n\r\ndrupal/token\r\n'
        b'--b\r\nContent-Disposition: form-data; name="drupal_version"\r\n\r\n8.x-1.9\r\n'
        b'--b\r\nContent-Disposition: form-data; name="origin_url"\r\n\r\nhttp://o/t.zip\r\n'
        b"--b--\r\n"
    )
    return await post(service, "/v1/releases", body, content_type="multipart/form-data; boundary=b")


def release(**fields: Any) -> Case:
    async def case(service: TestServer, origin: TestServer) -> Answer:
        return await post(service, "/v1/releases", release_body(origin, **fields))

    return case


def raw(path: str, body: bytes, **options: Any) -> Case:
    async def case(service: TestServer, origin: TestServer) -> Answer:
        return await post(service, path, body, **options)

    return case


def release_from(origin_url: str) -> Case:
    async def case(service: TestServer, origin: TestServer) -> Answer:
        body = orjson.dumps(
            {"package": "drupal/token", "drupal_version": "8.x-1.9", "origin_url": origin_url}
        )
        return await post(service, "/v1/releases", body)

    return case


def from_origin(path: str) -> Case:
    async def case(service: TestServer, origin: TestServer) -> Answer:
        return await release_from(url(origin, path))(service, origin)

    return case


YANK = orjson.dumps({"package": "drupal/token", "version": "1.9.0", "reason": "broken"})
ADVISORY = {
    "advisoryId": "SA-CONTRIB-2024-001",
    "packageName": "drupal/token",
    "affectedVersions": "<1.9.1",
    "title": "Access bypass",
    "link": "https://www.drupal.org/sa-contrib-2024-001",
    "reportedAt": "2024-01-02 03:04:05",
    "sources": [{"name": "drupal.org", "remoteId": "SA-CONTRIB-2024-001"}],
}

REFUSALS: dict[str, tuple[Case, int, str]] = {
    "unsigned": (raw("/v1/yanks", YANK, key=None), 401, "unsigned"),
    "body altered after signing": (
        raw("/v1/yanks", YANK, signed_body=YANK.replace(b"broken", b"fine")),
        401,
        "bad-signature",
    ),
    "body altered, digest not announced": (
        raw("/v1/yanks", YANK, signed_body=YANK.replace(b"broken", b"fine"), announce=False),
        401,
        "bad-signature",
    ),
    "forged upload": (forged_upload, 401, "bad-signature"),
    "stale date": (
        raw("/v1/yanks", YANK, at=datetime.now(UTC) - timedelta(minutes=10)),
        401,
        "stale-date",
    ),
    "key unknown to the root": (raw("/v1/yanks", YANK, key=STRANGER), 401, "unknown-key"),
    "key delegated for another namespace": (
        raw("/v1/yanks", YANK, key=ACME),
        403,
        "undelegated-key",
    ),
    "namespace the service does not sign for": (
        raw(
            "/v1/yanks",
            orjson.dumps({"package": "acme/widget", "version": "1.0.0", "reason": "x"}),
            key=ACME,
        ),
        403,
        "namespace-not-served",
    ),
    "malformed JSON": (raw("/v1/yanks", b'{"package": '), 400, "malformed-request"),
    "missing field": (
        raw("/v1/yanks", orjson.dumps({"package": "drupal/token", "version": "1.9.0"})),
        400,
        "malformed-request",
    ),
    "unknown field": (release(orgin_url="typo"), 400, "malformed-request"),
    "wrong field type": (release(size="12"), 400, "malformed-request"),
    "upload without zip": (upload_without_zip, 400, "malformed-request"),
    "not JSON": (raw("/v1/yanks", YANK, content_type="text/plain"), 415, "unsupported-media-type"),
    "origin artifact over the limit": (release(file="big.zip"), 413, "too-large"),
    "uploaded artifact over the limit": (upload_too_large, 413, "too-large"),
    "two top directories": (release(file="two-tops.zip"), 422, "bad-artifact"),
    "not a zip": (release(file="not-a-zip.zip"), 422, "bad-artifact"),
    "another project's zip": (release(file="pathauto-8.x-1.12.zip"), 422, "wrong-package"),
    "unsafe zip entries": (release(file="unsafe.zip"), 422, "unsafe-name"),
    "sha1 mismatch": (release(sha1="0" * 40), 422, "artifact-mismatch"),
    "size mismatch": (release(size=12), 422, "artifact-mismatch"),
    "unsafe version": (release(drupal_version="../8.x-1.9"), 422, "unsafe-name"),
    "invalid version": (release(drupal_version="banana"), 422, "invalid-version"),
    "unsafe package name": (release(package="drupal/../token"), 422, "unsafe-name"),
    "yank of a Drupal version": (
        raw(
            "/v1/yanks",
            orjson.dumps({"package": "drupal/token", "version": "8.x-1.9", "reason": "x"}),
        ),
        422,
        "invalid-version",
    ),
    "advisory with a bad date": (
        raw("/v1/advisories", orjson.dumps({**ADVISORY, "reportedAt": "yesterday"})),
        422,
        "malformed",
    ),
    "expunge with a bad sha256": (
        raw(
            "/v1/expunges",
            orjson.dumps(
                {"package": "drupal/token", "version": "1.9.0", "sha256": "abc", "reason": "x"}
            ),
        ),
        422,
        "malformed",
    ),
    "origin 404": (from_origin("/absent.zip"), 502, "origin-unavailable"),
    "origin unreachable": (
        release_from(f"http://127.0.0.1:{closed_port()}/token.zip"),
        502,
        "origin-unavailable",
    ),
}


@pytest.mark.parametrize(("case", "status", "error"), REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_refused_request_publishes_nothing(
    stack: devstack.Stack,
    topics: Topics,
    service: TestServer,
    origin: TestServer,
    case: Case,
    status: int,
    error: str,
) -> None:
    answer = await case(service, origin)

    assert (answer.status, answer.document.get("error")) == (status, error), answer.document
    assert len(answer.document["reason"]) > 20, "the reason says what is wrong and what to do"
    assert on_topic(stack, topics) == []


async def test_two_top_directories_are_refused_with_a_reason(
    stack: devstack.Stack, topics: Topics, service: TestServer, origin: TestServer
) -> None:
    answer = await post(service, "/v1/releases", release_body(origin, file="two-tops.zip"))

    assert answer.status == 422
    assert answer.document["reason"] == (
        "the zip of drupal/token 8.x-1.9 must hold exactly one top directory (like token/...), "
        "found ['other', 'token']"
    )
    assert on_topic(stack, topics) == []


async def test_a_replayed_request_is_refused_and_published_once(
    stack: devstack.Stack, topics: Topics, service: TestServer
) -> None:
    signed_at = datetime.now(UTC)

    first = await post(service, "/v1/yanks", YANK, at=signed_at)
    replay = await post(service, "/v1/yanks", YANK, at=signed_at)

    assert first.status == 201
    assert (replay.status, replay.document["error"]) == (401, "replayed")
    assert [offset for offset, _ in on_topic(stack, topics)] == [first.document["offset"]]


async def test_the_client_raises_the_services_refusal(service: TestServer) -> None:
    with pytest.raises(PublishRefusedError) as refused:
        await asyncio.to_thread(client(service, ACME).yank, "drupal/token", "1.9.0", "x")

    assert (refused.value.status, refused.value.error) == (403, "undelegated-key")
    assert isinstance(refused.value, ConfigurationError)
    assert "may not publish for drupal/*" in str(refused.value)


async def test_an_unavailable_broker_is_503_with_retry_after(
    tmp_path: Path, origin: TestServer
) -> None:
    down = await start_service(
        PublishingSettings(
            broker_url=f"kafka://127.0.0.1:{closed_port()}",
            topics=Topics.with_prefix("down."),
            max_artifact_size=LIMIT,
            delivery_timeout=2.0,
        )
    )
    try:
        answer = await post(down, "/v1/releases", release_body(origin))
        with pytest.raises(PublishingUnavailableError) as unavailable:
            await asyncio.to_thread(client(down).yank, "drupal/token", "1.9.0", "x")
    finally:
        await down.close()

    assert (answer.status, answer.document["error"]) == (503, "broker-unavailable")
    assert int(answer.headers["Retry-After"]) >= 1
    assert "retry it later" in answer.document["reason"]
    assert unavailable.value.status == 503
    assert unavailable.value.retry_after >= 1


async def test_health_names_the_namespaces_and_the_root(service: TestServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url(service, "/health")) as response,
    ):
        document = await response.json()

    assert response.status == 200
    assert document["status"] == "ok"
    assert document["namespaces"] == ["drupal/*"]
    assert document["trust_root"]["version"] == 1


# --- the CLI -----------------------------------------------------------------------------


@pytest.fixture
def key_files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, key in (("pipeline", PIPELINE), ("service", SERVICE), ("stranger", STRANGER)):
        paths[name] = tmp_path / "keys" / f"{name}.key"
        write_key_pair(key, paths[name])
    return paths


async def test_the_cli_publishes_through_the_service(
    stack: devstack.Stack,
    topics: Topics,
    service: TestServer,
    origin: TestServer,
    key_files: dict[str, Path],
) -> None:
    args = [
        "release",
        "drupal/token",
        "8.x-1.9",
        "--origin-url",
        url(origin, "/token-8.x-1.9.zip"),
        "--require",
        "drupal/core:^10",
        "--url",
        url(service),
        "--key",
        str(key_files["pipeline"]),
    ]

    result = await asyncio.to_thread(CliRunner().invoke, publishing, args)

    assert result.exit_code == 0, result.output
    assert f"{topics.releases}[0]@" in result.output
    event = verify_event(on_topic(stack, topics)[0][1], ROOT, now=utc_now())
    assert isinstance(event, ReleasePublished)
    assert event.composer["require"] == {"drupal/core": "^10"}


async def test_the_cli_refuses_a_public_key_file_in_one_sentence(
    service: TestServer, key_files: dict[str, Path]
) -> None:
    args = ["yank", "drupal/token", "1.9.0", "--reason", "x", "--url", url(service)]
    public = str(key_files["pipeline"].with_suffix(".pub"))

    result = await asyncio.to_thread(CliRunner().invoke, publishing, [*args, "--key", public])

    assert isinstance(result.exception, ConfigurationError)
    assert "private .key file" in str(result.exception)


def test_serve_refuses_keys_the_root_does_not_delegate(
    stack: devstack.Stack, tmp_path: Path, key_files: dict[str, Path]
) -> None:
    root_file = tmp_path / "root.avro"
    root_file.write_bytes(ROOT.sign([ROOT_KEY]))
    serve = ["serve", "--root", str(root_file), "--broker", stack.broker_url]
    serve += ["--listen", f"127.0.0.1:{closed_port()}"]

    result = CliRunner().invoke(publishing, [*serve, "--key", str(key_files["stranger"])])

    assert isinstance(result.exception, ConfigurationError)
    assert "meet the threshold of no namespace" in str(result.exception)

    (tmp_path / "bad.avro").write_bytes(b"not a root")
    serve[2] = str(tmp_path / "bad.avro")
    result = CliRunner().invoke(publishing, [*serve, "--key", str(key_files["service"])])

    assert isinstance(result.exception, ConfigurationError)
    assert "is not a valid signed root" in str(result.exception)


@pytest.mark.parametrize("command", ["serve", "release", "yank", "expunge", "advisory"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(publishing, [command, "--help"])

    assert result.exit_code == 0
    assert "Example: fairstream publishing " + command in result.output.replace("\n  ", " ")
