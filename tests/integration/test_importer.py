"""The importer against a real HTTP source and the real broker: drupal.org's fixtures into the stream."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import click
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from connectors.composer_repo import ArtifactDigest, SourceLimits
from connectors.kafka_producers import Delivered, EventProducer
from connectors.kafka_reading import published_releases, read_partition
from connectors.kafka_topics import Topics
from infra import devstack, localnet
from infra.devtools.sample_projects import sample_zip
from schemas.composer import expand, minify
from schemas.errors import BrokerUnavailableError, MalformedEventError, OriginUnavailableError
from schemas.event_verification import verify_event
from schemas.events import ReleasePublished, utc_now
from schemas.package_state import PackageState, apply_event
from schemas.signing import SigningKey
from schemas.trust import TrustRoot
from services.importer.cli import register
from services.importer.importer import import_repository
from services.importer.plan import SkipReason
from services.importer.settings import ImportSettings
from services.publishing.trust_admin import DelegationSpec, build_root, write_key_pair
from tests.drupal_fixtures import DRUPAL_P2
from tests.roots import write_drupal_root

pytestmark = pytest.mark.integration

FIXTURES = DRUPAL_P2.parent
PARTITIONS = 2
FAST = SourceLimits(rate=1000.0, concurrency=8, backoff=0.05)
TOKEN_DEV = "8.x-1.x-dev"


def build_repository(
    base_url: str, work_dir: Path, *, list_packages: bool = True
) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """packages.drupal.org's token and pathauto, with zips of our own on ``base_url``.

    Returns the files by path and the checksums file's content. The p2 documents
    stay minified as the real ones; dist URLs point at ``base_url`` and shasums are
    the sha1 of our zips. token also gets a ``~dev`` document with ``8.x-1.x-dev``.
    """
    files: dict[str, bytes] = {}
    checksums: dict[str, dict[str, Any]] = {}

    def with_our_zip(project: str, entry: dict[str, Any]) -> dict[str, Any]:
        drupal_version = entry["extra"]["drupal"]["version"]
        zip_path = sample_zip(work_dir / "zips", project, drupal_version)
        data = zip_path.read_bytes()
        path = f"/files/projects/{zip_path.name}"
        files[path] = data
        sha1 = hashlib.sha1(data).hexdigest()
        checksums[path] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha1": sha1,
            "size": len(data),
        }
        return {**entry, "dist": {**entry["dist"], "url": base_url + path, "shasum": sha1}}

    for project in ("token", "pathauto"):
        package = f"drupal/{project}"
        document = orjson.loads((FIXTURES / "drupal" / f"{project}.json").read_bytes())
        entries = [with_our_zip(project, e) for e in expand(document["packages"][package])]
        document["packages"][package] = minify(entries)
        files[f"/p2/{package}.json"] = orjson.dumps(document)
    dev = copy.deepcopy(
        expand(orjson.loads(files["/p2/drupal/token.json"])["packages"]["drupal/token"])[0]
    )
    dev.update(version="1.x-dev", version_normalized="1.9999999.9999999.9999999-dev")
    dev["extra"] = {**dev["extra"], "drupal": {"version": TOKEN_DEV, "datestamp": "1700000000"}}
    dev["source"] = {**dev["source"], "reference": "8.x-1.x"}
    dev["dist"] = {**dev["dist"], "reference": "8.x-1.x"}
    files["/p2/drupal/token~dev.json"] = orjson.dumps(
        {"packages": {"drupal/token": [with_our_zip("token", dev)]}, "minified": "composer/2.0"}
    )

    root: dict[str, Any] = {"packages": [], "metadata-url": "/p2/%package%.json"}
    if list_packages:
        root["available-packages"] = ["drupal/token", "drupal/pathauto"]
    else:  # as packages.drupal.org: patterns only
        root["available-package-patterns"] = ["drupal/*"]
    files["/packages.json"] = orjson.dumps(root)
    return files, checksums


@dataclass
class Source:
    """A Composer repository over HTTP that counts what it is asked and can misbehave."""

    server: TestServer
    files: dict[str, bytes] = field(default_factory=dict)
    checksums: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: list[tuple[float, str]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def requests_for(self, prefix: str) -> int:
        return sum(1 for _, path in self.hits if path.startswith(prefix))


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Source]:
    app = web.Application()
    served = Source(TestServer(app))

    async def handle(request: web.Request) -> web.Response:
        served.hits.append((time.monotonic(), request.path))
        if served.failures.get(request.path, 0) > 0:
            served.failures[request.path] -= 1
            return web.Response(status=503, text="busy")
        body = served.files.get(request.path)
        if body is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=body)

    app.router.add_get("/{tail:.*}", handle)
    await served.server.start_server()
    try:
        served.files, served.checksums = build_repository(served.url, tmp_path)
        yield served
    finally:
        await served.server.close()


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def trust_root(key: SigningKey) -> TrustRoot:
    return build_root(
        version=1,
        root_keys=[SigningKey.generate().public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (key.public_key,), 1)],
    )


@pytest.fixture
def topics() -> Topics:
    return Topics.with_prefix(f"import-{uuid4().hex[:10]}.")


def settings_for(
    source: Source, stack: devstack.Stack, topics: Topics, key: SigningKey, **changes: Any
) -> ImportSettings:
    options: dict[str, Any] = {"limits": FAST, "repository_url": source.url} | changes
    return ImportSettings(
        broker_url=stack.broker_url,
        keys=(key,),
        topics=topics,
        partitions=PARTITIONS,
        **options,
    )


def topic_events(stack: devstack.Stack, topics: Topics, root: TrustRoot) -> list[ReleasePublished]:
    """Every record of the releases topic, verified as a node does, in log order per partition."""
    events = []
    for partition in range(PARTITIONS):
        for _, value in read_partition(stack.broker_url, topics.releases, partition):
            event = verify_event(value, root, now=utc_now())
            assert isinstance(event, ReleasePublished)
            events.append(event)
    return events


def versions(events: Iterable[ReleasePublished]) -> set[tuple[str, str]]:
    return {(event.package, event.version) for event in events}


ALL_VERSIONS = 15 + 1 + 1  # token, its dev branch, pathauto


async def test_import_publishes_every_version_signed_and_then_nothing_twice(
    source: Source, stack: devstack.Stack, topics: Topics, key: SigningKey, trust_root: TrustRoot
) -> None:
    report = await import_repository(settings_for(source, stack, topics, key))

    assert report.published == ALL_VERSIONS, report
    assert sum(report.skipped.values()) == 0, report.examples
    events = topic_events(stack, topics, trust_root)
    assert len(events) == ALL_VERSIONS
    assert ("drupal/token", "1.x-dev") in versions(events)
    by_version = {(e.package, e.version): e for e in events}
    newest = by_version["drupal/token", "1.9.0"]
    assert newest.artifact.origin_url == f"{source.url}/files/projects/token-8.x-1.9.zip"
    assert newest.artifact.sha1 == source.checksums["/files/projects/token-8.x-1.9.zip"]["sha1"]
    assert newest.artifact.sha256 == source.checksums["/files/projects/token-8.x-1.9.zip"]["sha256"]
    assert newest.composer["extra"]["drupal"]["security-coverage"]["status"] == "covered"
    assert newest.composer["uid"] == "token-3189015"
    assert "url" not in newest.composer["dist"]
    assert by_version["drupal/pathauto", "1.12.0"].composer["require"] == {"drupal/token": "*"}
    for package in ("drupal/token", "drupal/pathauto"):
        # One package, one partition: the log order is the order nodes apply them in.
        sequences = [e.sequence for e in events if e.package == package]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    token_order = [e.version for e in events if e.package == "drupal/token"]
    assert token_order[:2] == ["1.0.0-alpha1", "1.0.0-alpha2"]
    assert token_order[-2:] == ["1.9.0", "1.x-dev"]

    again = await import_repository(settings_for(source, stack, topics, key))

    assert again.published == 0
    assert dict(again.skipped) == {SkipReason.ALREADY_PUBLISHED: ALL_VERSIONS}
    assert len(topic_events(stack, topics, trust_root)) == ALL_VERSIONS


async def test_an_upstream_rebuild_of_a_dev_zip_is_published_as_its_next_build(
    source: Source,
    stack: devstack.Stack,
    topics: Topics,
    key: SigningKey,
    trust_root: TrustRoot,
    tmp_path: Path,
) -> None:
    await import_repository(settings_for(source, stack, topics, key))
    [first] = [e for e in topic_events(stack, topics, trust_root) if e.version == "1.x-dev"]
    # The next commit on the branch: packages.drupal.org serves another zip and shasum.
    rebuilt = sample_zip(tmp_path / "rebuilt", "token", TOKEN_DEV, build="2").read_bytes()
    path = f"/files/projects/token-{TOKEN_DEV}.zip"
    source.files[path] = rebuilt
    dev = orjson.loads(source.files["/p2/drupal/token~dev.json"])
    [entry] = expand(dev["packages"]["drupal/token"])
    entry["dist"]["shasum"] = hashlib.sha1(rebuilt).hexdigest()
    dev["packages"]["drupal/token"] = minify([entry])
    source.files["/p2/drupal/token~dev.json"] = orjson.dumps(dev)

    again = await import_repository(settings_for(source, stack, topics, key))

    assert again.published == 1, again.examples
    assert dict(again.skipped) == {SkipReason.ALREADY_PUBLISHED: ALL_VERSIONS - 1}
    events = [e for e in topic_events(stack, topics, trust_root) if e.version == "1.x-dev"]
    assert [e.rebuild_of for e in events] == [None, first.artifact.sha256]
    second = events[1]
    assert second.artifact.sha256 == hashlib.sha256(rebuilt).hexdigest()
    assert second.sequence > first.sequence
    # Its reference names the build: `composer update` installs it.
    assert second.composer["dist"]["reference"] == second.artifact.sha1
    assert first.composer["dist"]["reference"] == "8.x-1.x"
    # A node applies it on top of the first build.
    state = PackageState("drupal/token")
    for offset, event in enumerate(events):
        transition = apply_event(
            state, event, digest=hashlib.sha256(event.to_bytes()).hexdigest(), position=str(offset)
        )
        assert transition is not None
        state = transition.state
    assert state.versions["1.x-dev"].sha256 == second.artifact.sha256

    third = await import_repository(settings_for(source, stack, topics, key))
    assert third.published == 0, "the same build is not published twice"


async def test_a_zip_that_is_not_the_p2_shasum_is_skipped_and_the_rest_published(
    source: Source,
    stack: devstack.Stack,
    topics: Topics,
    key: SigningKey,
    trust_root: TrustRoot,
    tmp_path: Path,
) -> None:
    # The origin now serves other bytes for 8.x-1.5 than the ones packages.drupal.org lists.
    other = sample_zip(tmp_path / "other", "token", "8.x-1.5", {"drupal/core": "^10"})
    source.files["/files/projects/token-8.x-1.5.zip"] = other.read_bytes()

    report = await import_repository(settings_for(source, stack, topics, key))

    assert report.published == ALL_VERSIONS - 1
    assert dict(report.skipped) == {SkipReason.SHA1_MISMATCH: 1}
    assert report.examples[SkipReason.SHA1_MISMATCH].startswith("drupal/token 1.5.0:")
    published = versions(topic_events(stack, topics, trust_root))
    assert ("drupal/token", "1.5.0") not in published
    assert len(published) == ALL_VERSIONS - 1


async def test_with_a_checksums_file_no_zip_is_downloaded(
    source: Source, stack: devstack.Stack, topics: Topics, key: SigningKey, trust_root: TrustRoot
) -> None:
    checksums = {
        path: ArtifactDigest(sums["sha256"], sums["sha1"], sums["size"])
        for path, sums in source.checksums.items()
    }

    report = await import_repository(settings_for(source, stack, topics, key, checksums=checksums))

    assert report.published == ALL_VERSIONS
    assert source.requests_for("/files/") == 0
    assert report.downloads == 0
    assert report.requests == 1 + 2 + 2  # packages.json, two p2 and two ~dev (one a 404)
    for event in topic_events(stack, topics, trust_root):
        path = event.artifact.origin_url.removeprefix(source.url)
        assert event.artifact.sha256 == source.checksums[path]["sha256"]
        assert event.artifact.size == source.checksums[path]["size"]


async def test_the_rate_limit_towards_the_source_holds(
    source: Source, stack: devstack.Stack, topics: Topics, key: SigningKey
) -> None:
    limits = SourceLimits(rate=10.0, concurrency=8)

    started = time.monotonic()
    report = await import_repository(settings_for(source, stack, topics, key, limits=limits))
    elapsed = time.monotonic() - started

    requests = len(source.hits)
    assert requests == report.requests == 1 + 4 + ALL_VERSIONS  # 22: zips downloaded
    # 10 per second, one at a time: 22 requests need 2.1 s at least. Generous bounds.
    assert elapsed >= 1.8
    times = [moment for moment, _ in source.hits]
    assert min(later - earlier for earlier, later in zip(times, times[10:], strict=False)) >= 0.8


async def test_a_misbehaving_source_is_retried_or_skipped_not_fatal(
    source: Source, stack: devstack.Stack, topics: Topics, key: SigningKey
) -> None:
    source.failures["/p2/drupal/pathauto.json"] = 2  # two 503s, then fine
    del source.files["/files/projects/token-8.x-1.0.zip"]  # a 404 at the origin
    source.files["/packages.json"] = orjson.dumps(
        {
            "metadata-url": "/p2/%package%.json",
            "available-packages": ["drupal/token", "drupal/pathauto", "drupal/gone", "drupal/../x"],
        }
    )

    report = await import_repository(settings_for(source, stack, topics, key))

    assert report.published == ALL_VERSIONS - 1
    assert report.retries == 2
    assert dict(report.skipped) == {
        SkipReason.ORIGIN_UNREACHABLE: 1,
        SkipReason.PACKAGE_NOT_FOUND: 1,
        SkipReason.UNSAFE_NAME: 1,
    }
    assert "token-8.x-1.0.zip answered 404" in report.examples[SkipReason.ORIGIN_UNREACHABLE]
    assert not any("/../" in path for _, path in source.hits)


async def test_a_source_that_is_no_composer_repository_is_a_clear_error(
    source: Source, stack: devstack.Stack, topics: Topics, key: SigningKey
) -> None:
    limits = SourceLimits(rate=1000.0, retries=1, backoff=0.01)
    closed = f"http://127.0.0.1:{localnet.free_port()}"
    wrong_path = source.url + "/not-a-repository"

    with pytest.raises(OriginUnavailableError, match="did not deliver after 2 attempts"):
        await import_repository(
            settings_for(source, stack, topics, key, limits=limits, repository_url=closed)
        )
    with pytest.raises(OriginUnavailableError, match=r"not there \(404\)"):
        await import_repository(settings_for(source, stack, topics, key, repository_url=wrong_path))
    source.files["/packages.json"] = b'{"packages": {"drupal/token": {}}}'  # Composer v1
    with pytest.raises(MalformedEventError, match="not a Composer v2 repository"):
        await import_repository(settings_for(source, stack, topics, key))


class CrashingProducer:
    """Delivers the first ``survive`` records, then the broker 'fails' in the middle of (or
    at the start of) a batch.

    Counted over batches: a loaded machine makes small batches (the importer sends what
    its outbox holds), and a producer that failed in its first batch whatever its size
    delivered 1 record instead of 5 in three of twelve runs under CPU load."""

    def __init__(self, real: EventProducer, survive: int) -> None:
        self.real = real
        self.survive = survive
        self.delivered = 0

    def produce_many(self, topic: str, records: Iterable[tuple[bytes, bytes]]) -> list[Delivered]:
        batch = list(records)
        room = self.survive - self.delivered
        if len(batch) < room:
            self.delivered += len(batch)
            return self.real.produce_many(topic, batch)
        self.real.produce_many(topic, batch[:room])
        self.delivered += room
        raise BrokerUnavailableError("broker went away mid-batch (simulated)")


async def test_an_import_that_crashed_resumes_from_the_log(
    source: Source, stack: devstack.Stack, topics: Topics, key: SigningKey, trust_root: TrustRoot
) -> None:
    producer = EventProducer(stack.broker_url)
    try:
        with pytest.raises(BrokerUnavailableError):
            await import_repository(
                settings_for(source, stack, topics, key),
                producer=CrashingProducer(producer, survive=5),
            )
    finally:
        producer.close()
    assert len(published_releases(stack.broker_url, topics.releases)) == 5

    report = await import_repository(settings_for(source, stack, topics, key))

    assert report.published == ALL_VERSIONS - 5
    assert dict(report.skipped) == {SkipReason.ALREADY_PUBLISHED: 5}
    events = topic_events(stack, topics, trust_root)
    assert len(events) == len(versions(events)) == ALL_VERSIONS
    for package in ("drupal/token", "drupal/pathauto"):
        sequences = [e.sequence for e in events if e.package == package]
        assert sequences == sorted(sequences), "a resumed import must not go back in sequence"


def test_cli_imports_a_repository_that_only_has_patterns(
    stack: devstack.Stack, topics: Topics, key: SigningKey, trust_root: TrustRoot, tmp_path: Path
) -> None:
    port = localnet.free_port()
    base_url = f"http://127.0.0.1:{port}"
    files, checksums = build_repository(base_url, tmp_path, list_packages=False)
    served = tmp_path / "served"
    for path, data in files.items():
        (served / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (served / path.lstrip("/")).write_bytes(data)
    key_file = tmp_path / "drupal.key"
    write_key_pair(key, key_file)
    (tmp_path / "packages.txt").write_text(
        "# the projects to seed\ndrupal/token\ndrupal/pathauto\n"
    )
    (tmp_path / "checksums.json").write_bytes(orjson.dumps(checksums))
    origin = localnet.start_origin(served, log=tmp_path / "origin.log", port=port)

    @click.group()
    def fairstream() -> None:
        pass

    register(fairstream)
    args = [
        "import",
        base_url,
        "--key",
        str(key_file),
        "--broker",
        stack.broker_url,
        "--topic-prefix",
        topics.releases.removesuffix("fair.releases"),
        "--partitions",
        str(PARTITIONS),
        "--rate",
        "200",
    ]
    write_drupal_root(tmp_path / "root.avro", key, SigningKey.generate())
    write_key_pair(SigningKey.generate(), tmp_path / "other.key")
    listed = ["--packages", str(tmp_path / "packages.txt")]
    listed += ["--checksums", str(tmp_path / "checksums.json")]
    try:
        without_list = CliRunner().invoke(fairstream, args)
        # A key the root does not delegate drupal/* to: refused before anything is produced.
        other = [*args, *listed, "--key", str(tmp_path / "other.key")]
        other.remove(str(key_file))
        other.remove("--key")
        undelegated = CliRunner().invoke(
            fairstream, [*other, "--root", str(tmp_path / "root.avro")]
        )
        result = CliRunner().invoke(
            fairstream, [*args, *listed, "--root", str(tmp_path / "root.avro")]
        )
    finally:
        origin.stop()

    assert "does not list its packages" in str(without_list.exception)
    assert undelegated.exit_code != 0
    message = str(undelegated.exception)
    assert "other.key" in message and "delegates drupal/* to drupal.org" in message, message
    assert "nothing was produced" in message
    assert result.exit_code == 0, result.output
    assert "published" in result.output and str(ALL_VERSIONS) in result.output
    assert len(topic_events(stack, topics, trust_root)) == ALL_VERSIONS
