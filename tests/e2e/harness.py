"""The e2e harness: a federation on the real stack (origin, trust root, two regional nodes)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import pytest

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics, ensure_topics
from connectors.object_store import ObjectStore
from connectors.store import S3Store, StoreLocation
from infra import devstack, localnet
from infra.devtools.sample_projects import sample_zip
from schemas.events import PackageEvent, ReleasePublished, ReleaseRejected
from schemas.signing import SigningKey, seal
from services.publishing.publisher import build_release, publish_release
from tests.roots import write_drupal_root

REGIONS = ("eu", "us")
RECORD_DELIMITER = "\n--fairstream-test-record--\n"


@dataclass
class Federation:
    stack: devstack.Stack
    topics: Topics
    key: SigningKey
    root_key: SigningKey
    root_file: Path
    origin: localnet.LocalProcess
    origin_root: Path
    nodes: dict[str, localnet.LocalProcess]
    producer: EventProducer
    work_dir: Path
    processes: list[localnet.LocalProcess] = field(default_factory=list)
    node_options: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def release(
        self, project: str, drupal_version: str, require: dict[str, str] | None = None
    ) -> tuple[ReleasePublished, Path]:
        zip_path = sample_zip(self.origin_root / "files", project, drupal_version, require or {})
        event = build_release(
            package=f"drupal/{project}",
            drupal_version=drupal_version,
            zip_path=zip_path,
            origin_url=f"{self.origin.url}/files/{zip_path.name}",
        )
        return event, zip_path

    def publish(self, event: ReleasePublished, keys: list[SigningKey] | None = None) -> None:
        publish_release(event, keys or [self.key], self.producer, self.topics.releases)

    def publish_event(self, event: PackageEvent) -> None:
        """Sign and produce a yank, expunge or advisory (or a release), keyed by package."""
        value = seal(event.to_bytes(), [self.key])
        self.producer.produce(self.topics.releases, event.package.encode(), value)

    def bucket(self, region: str) -> str:
        return f"{self.topics.releases.removesuffix('fair.releases').strip('.')}-{region}"

    def store(self, region: str) -> ObjectStore:
        """The object store bucket of a region, for looking at what its nodes wrote."""
        return S3Store(StoreLocation.from_url(self.stack.store_url), self.bucket(region))

    def start_node(
        self,
        region: str,
        *,
        name: str | None = None,
        options: Sequence[str] = (),
        port: int | None = None,
    ) -> localnet.LocalProcess:
        """Start (or restart) a node of ``region`` on the region's bucket.

        ``name`` tells apart several workers of one region (default: the region);
        ``options`` are more ``fairstream node run`` options. Without options, the
        region's options from the test module's ``NODE_OPTIONS`` apply.
        """
        name = name or region
        prefix = self.topics.releases.removesuffix("fair.releases")
        node = localnet.start_node(
            region,
            broker_url=self.stack.broker_url,
            store_url=self.stack.store_url,
            root=self.root_file,
            data_dir=self.work_dir / f"node-{name}",
            topic_prefix=prefix,
            bucket=self.bucket(region),
            options=options or self.node_options.get(region, ()),
            port=port,
        )
        self.nodes[name] = node
        self.processes.append(node)
        return node

    def kcat(self, *args: str) -> bytes:
        """Run Debian's kcat against the federation's broker."""
        broker = bootstrap_servers(self.stack.broker_url)
        result = subprocess.run(
            ["kcat", "-b", broker, *args],
            capture_output=True,
            timeout=60,
            check=False,
            env=localnet.kcat_environment(self.stack.data_dir),
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout


@pytest.fixture(scope="module")
def federation(
    stack: devstack.Stack,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Federation]:
    """A federation of its own for each test module: its topics, root, buckets and nodes.

    A module may set ``NODE_OPTIONS = {region: [options of fairstream node run]}``.
    """
    work_dir = tmp_path_factory.mktemp("federation")
    topics = Topics.with_prefix(f"e2e-{uuid4().hex[:8]}.")
    ensure_topics(stack.broker_url, topics.partitions(4))
    key = SigningKey.generate()
    root_key = SigningKey.generate()
    root_file = work_dir / "root.avro"
    write_drupal_root(root_file, key, root_key)
    origin_root = work_dir / "origin"
    (origin_root / "files").mkdir(parents=True)
    processes: list[localnet.LocalProcess] = []
    try:
        origin = localnet.start_origin(origin_root, log=work_dir / "logs" / "origin.log")
        processes.append(origin)
        producer = EventProducer(stack.broker_url)
        federation = Federation(
            stack,
            topics,
            key,
            root_key,
            root_file,
            origin,
            origin_root,
            {},
            producer,
            work_dir,
            processes,
            getattr(request.module, "NODE_OPTIONS", {}),
        )
        for region in REGIONS:
            federation.start_node(region)
        yield federation
        producer.close()
    finally:
        for process in processes:
            process.stop()


def wait_until_served(
    federation: Federation,
    package: str,
    version: str,
    timeout: float = 60.0,
    nodes: Iterable[str] | None = None,
) -> None:
    """Until every node (or those named) serves ``version`` of ``package`` (its p2, as
    Composer reads it)."""
    deadline = time.monotonic() + timeout
    missing = set(federation.nodes if nodes is None else nodes)
    while missing and time.monotonic() < deadline:
        for region in sorted(missing):
            if version in localnet.fetch_p2_versions(federation.nodes[region].url, package):
                missing.discard(region)
        time.sleep(0.2)
    if missing:
        logs = {r: federation.nodes[r].log_tail(30) for r in missing}
        pytest.fail(f"{package} {version} not served by {sorted(missing)} in {timeout} s:\n{logs}")


def rejections_of(
    federation: Federation, key: str, count: int, timeout: float = 30.0
) -> list[ReleaseRejected]:
    """The rejected topic's records for ``key``, read with kcat until ``count`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        raw = federation.kcat(
            "-C",
            "-t",
            federation.topics.rejected,
            "-o",
            "beginning",
            "-e",
            "-f",
            f"%s{RECORD_DELIMITER}",
        )
        parts = raw.split(RECORD_DELIMITER.encode())
        assert parts[-1] == b""
        found = [r for r in map(ReleaseRejected.from_bytes, parts[:-1]) if r.key == key]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
