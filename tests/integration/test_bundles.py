"""services.bundles on the real broker and store: a connected network's log and zips carried
into another network by file, at the same offsets; a second bundle chains to the first;
importing twice, or again after a crash, changes nothing it should not; a tampered,
skipped or foreign bundle is refused whole and changes nothing; a node of the disconnected
network whose trust root expires freezes as online, and the bundle carrying a newer root
thaws it."""

from __future__ import annotations

import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import orjson
import pytest
from click.testing import CliRunner

from connectors.kafka_producers import EventProducer
from connectors.kafka_reading import iter_partition_records, read_partition
from connectors.kafka_topics import Topics, ensure_topics
from connectors.object_store import ObjectStore
from connectors.store import S3Store, StoreLocation
from infra import devstack, localnet
from infra.devtools.sample_projects import sample_zip
from schemas import layout
from schemas.bundle import BundleChainError, BundleContentError, BundleSignatureError
from schemas.events import ReleaseYanked, utc_now
from schemas.federation import NodeStatus
from schemas.signing import SigningKey, seal
from schemas.trust import TrustRoot
from services.bundles.export import export_bundle, read_manifest
from services.bundles.load import IMPORTED_KEY, last_imported, load_bundle
from services.cli.main import cli
from services.cli.status import read_node_book
from services.publishing.publisher import build_release, next_sequence
from services.publishing.trust_admin import DelegationSpec, build_root, write_key_pair
from tests.roots import write_drupal_root

pytestmark = pytest.mark.integration

EXPORTER = SigningKey(seed=b"\x51" * 32)
PINNED = {EXPORTER.public_key.keyid: EXPORTER.public_key}
#: A topic's records by partition: (offset, key, value).
Log = dict[int, list[tuple[int, bytes | None, bytes]]]
T = TypeVar("T")


class Network:
    """A network's topics and its region's bucket on the session's stack."""

    def __init__(self, stack: devstack.Stack, location: StoreLocation) -> None:
        self.broker_url = stack.broker_url
        self.topics = Topics.with_prefix(f"bundles-{uuid4().hex[:8]}.")
        ensure_topics(stack.broker_url, {self.topics.releases: 2, self.topics.trust: 1})
        self.store: ObjectStore = S3Store(location, f"b-{uuid4().hex[:12]}")
        self.store.ensure_bucket()
        self.root: TrustRoot | None = None

    def log(self, topic: str, partitions: int) -> Log:
        return {
            p: [
                (offset, key, value)
                for offset, _, key, value in iter_partition_records(self.broker_url, topic, p)
            ]
            for p in range(partitions)
        }

    def whole_log(self) -> tuple[Log, Log]:
        return self.log(self.topics.releases, 2), self.log(self.topics.trust, 1)


@pytest.fixture
def connected(stack: devstack.Stack, location: StoreLocation, tmp_path: Path) -> Network:
    """A network with a trust root on its trust topic, three releases (zips in its bucket)
    and a yank."""
    network = Network(stack, location)
    producer = EventProducer(stack.broker_url)
    root_file = tmp_path / "root.avro"
    network.root = write_drupal_root(
        root_file, SigningKey(seed=b"\x52" * 32), SigningKey(seed=b"\x53" * 32)
    )
    producer.produce(network.topics.trust, b"root", root_file.read_bytes())
    publish(
        network,
        producer,
        tmp_path,
        [("token", "8.x-1.9"), ("token", "8.x-1.10"), ("pathauto", "8.x-1.12")],
    )
    yank = ReleaseYanked("drupal/token", "1.9.0", next_sequence(), "broken", utc_now())
    producer.produce(network.topics.releases, b"drupal/token", seal(yank.to_bytes(), [EXPORTER]))
    producer.close()
    return network


def publish(
    network: Network,
    producer: EventProducer,
    tmp_path: Path,
    releases: list[tuple[str, str]],
    signer: SigningKey = EXPORTER,
) -> list[str]:
    """Releases on the network's topic, signed by ``signer``, and their zips in its bucket;
    their sha256s."""
    shas = []
    for project, version in releases:
        zip_path = sample_zip(tmp_path / "zips", project, version, {})
        event = build_release(
            package=f"drupal/{project}",
            drupal_version=version,
            zip_path=zip_path,
            origin_url=f"https://ftp.drupal.org/files/projects/{zip_path.name}",
        )
        network.store.put_file(
            layout.artifact_key(event.artifact.sha256), zip_path, content_type="application/zip"
        )
        producer.produce(
            network.topics.releases, event.package.encode(), seal(event.to_bytes(), [signer])
        )
        shas.append(event.artifact.sha256)
    return shas


def export(network: Network, out: Path, since: Path | None = None) -> Path:
    assert network.root is not None
    export_bundle(
        broker_url=network.broker_url,
        topics=network.topics,
        store=network.store,
        key=EXPORTER,
        out=out,
        root=network.root,
        previous=read_manifest(since) if since else None,
    )
    return out


def load(bundle: Path, network: Network, pinned: dict = PINNED):  # type: ignore[no-untyped-def, type-arg]
    producer = EventProducer(network.broker_url)
    try:
        return load_bundle(
            bundle,
            broker_url=network.broker_url,
            topics=network.topics,
            store=network.store,
            exporters=pinned,
            producer=producer,
        )
    finally:
        producer.close()


def zips_of(store: ObjectStore) -> set[str]:
    return {
        sha
        for key in store.list_keys(layout.ARTIFACT_PREFIX)
        if (sha := layout.artifact_sha256(key))
    }


def test_a_bundle_carries_the_log_at_its_offsets_and_the_zips_and_the_next_one_chains(
    stack: devstack.Stack, location: StoreLocation, connected: Network, tmp_path: Path
) -> None:
    first = export(connected, tmp_path / "bundle-1.tar")
    disconnected = Network(stack, location)

    report = load(first, disconnected)

    assert report.imported and report.records == 5 and report.zips == 3
    assert disconnected.whole_log() == connected.whole_log()
    assert zips_of(disconnected.store) == zips_of(connected.store)
    assert report.manifest.covers_from is not None and report.manifest.root_version == 1

    # Importing it again changes nothing.
    again = load(first, disconnected)
    assert not again.imported and again.records == 0
    assert disconnected.whole_log() == connected.whole_log()

    # Later records travel in the next bundle, which chains to the first.
    producer = EventProducer(stack.broker_url)
    publish(connected, producer, tmp_path, [("token", "8.x-1.11")])
    producer.close()
    second = export(connected, tmp_path / "bundle-2.tar", since=first)
    report = load(second, disconnected)
    assert report.manifest.sequence == 2 and report.records == 1 and report.zips == 1
    assert disconnected.whole_log() == connected.whole_log()
    imported = last_imported(disconnected.store)
    assert imported is not None and imported.sequence == 2


def flip_a_byte(bundle: Path, member: str, out: Path) -> Path:
    """A copy of ``bundle`` with one byte of ``member`` changed; in the manifest, one hex
    digit of a digest (still JSON, still canonical: only its signature can tell)."""
    shutil.copy(bundle, out)
    with tarfile.open(out) as archive:
        info = archive.getmember(member)
        data = archive.extractfile(info).read()  # type: ignore[union-attr]
    at = data.index(b'"sha256":"') + len(b'"sha256":"') if member == "manifest.json" else 3
    changed = b"0" if data[at : at + 1] != b"0" else b"1"
    with out.open("r+b") as file:
        file.seek(info.offset_data + at)
        file.write(changed if member == "manifest.json" else bytes([data[at] ^ 1]))
    return out


@pytest.mark.parametrize("member", ["records/fair.releases/0.log", "zips", "manifest.json"])
def test_a_tampered_bundle_is_refused_whole_and_changes_nothing(
    stack: devstack.Stack, location: StoreLocation, connected: Network, tmp_path: Path, member: str
) -> None:
    bundle = export(connected, tmp_path / "bundle-1.tar")
    if member == "zips":
        with tarfile.open(bundle) as archive:
            member = next(n for n in archive.getnames() if n.startswith("zips/"))
    tampered = flip_a_byte(bundle, member, tmp_path / "tampered.tar")
    disconnected = Network(stack, location)
    expected = BundleSignatureError if member == "manifest.json" else BundleContentError

    with pytest.raises(expected):
        load(tampered, disconnected)

    releases, trust = disconnected.whole_log()
    assert releases == {0: [], 1: []} and trust == {0: []}
    assert disconnected.store.list_keys("") == []


def test_a_skipped_bundle_or_a_foreign_exporter_is_refused(
    stack: devstack.Stack, location: StoreLocation, connected: Network, tmp_path: Path
) -> None:
    first = export(connected, tmp_path / "bundle-1.tar")
    second = export(connected, tmp_path / "bundle-2.tar", since=first)
    disconnected = Network(stack, location)

    with pytest.raises(BundleChainError, match="bundle 2 follows bundle 1, not imported here"):
        load(second, disconnected)
    other = SigningKey(seed=b"\x54" * 32)
    with pytest.raises(BundleSignatureError, match="not among the exporters"):
        load(first, disconnected, {other.public_key.keyid: other.public_key})
    assert disconnected.store.stat(IMPORTED_KEY) is None
    releases, _ = disconnected.whole_log()
    assert releases == {0: [], 1: []}


def test_an_import_cut_short_resumes_where_it_stopped(
    stack: devstack.Stack, location: StoreLocation, connected: Network, tmp_path: Path
) -> None:
    bundle = export(connected, tmp_path / "bundle-1.tar")
    disconnected = Network(stack, location)
    # As a crash would leave it: the trust root and the first record of partition 0 in.
    original_releases, original_trust = connected.whole_log()
    producer = EventProducer(stack.broker_url)
    for _, key, value in original_trust[0]:
        producer.produce(disconnected.topics.trust, key or b"", value, partition=0)
    _, key, value = original_releases[0][0]
    producer.produce(disconnected.topics.releases, key or b"", value, partition=0)
    producer.close()

    report = load(bundle, disconnected)

    assert report.records_present == 2 and report.records == 3
    assert disconnected.whole_log() == connected.whole_log()


def test_the_commands_export_and_import_a_bundle(
    stack: devstack.Stack, location: StoreLocation, connected: Network, tmp_path: Path
) -> None:
    """``fairstream bundle export`` and ``import`` as an operator types them, with --json."""
    key_file = tmp_path / "upstream.key"
    write_key_pair(EXPORTER, key_file)
    root_file = tmp_path / "root.avro"  # the connected fixture's root
    disconnected = Network(stack, location)
    common = ["--broker", stack.broker_url, "--store", stack.store_url]
    bundle = tmp_path / "bundle-1.tar"

    exported = CliRunner().invoke(
        cli,
        [
            "bundle", "export", "--region", "up", "--bucket", connected.store.bucket,
            "--root", str(root_file), "--key", str(key_file), "--out", str(bundle), "--json",
            "--topic-prefix", connected.topics.releases.removesuffix("fair.releases"), *common,
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    summary = orjson.loads(exported.stdout)
    assert (summary["sequence"], summary["records"], summary["zips"]) == (1, 5, 3)
    assert summary["trust_root"]["version"] == 1

    imported = CliRunner().invoke(
        cli,
        [
            "bundle", "import", str(bundle), "--region", "down",
            "--bucket", disconnected.store.bucket, "--exporter", str(key_file.with_suffix(".pub")),
            "--json", "--topic-prefix", disconnected.topics.releases.removesuffix("fair.releases"),
            *common,
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    result = orjson.loads(imported.stdout)
    assert (result["imported"], result["records"], result["zips"]) == (True, 5, 3)
    assert disconnected.whole_log() == connected.whole_log()
    # The freshness window the manifest states: the span its records cover, the root in force.
    assert result["covers"] == summary["covers"] and None not in result["covers"].values()
    assert result["covers"]["from"] <= result["covers"]["to"]
    assert connected.root is not None
    root = result["trust_root"]
    assert (root["version"], root["expired"]) == (1, False)
    assert datetime.fromisoformat(root["expires"]) == connected.root.expires


# --- rotation and freshness across the gap -------------------------------------------------

PUBLISHER = SigningKey(seed=b"\x55" * 32)
ROOT_KEY = SigningKey(seed=b"\x56" * 32)


def signed_root(version: int, expires: datetime | None = None) -> tuple[TrustRoot, bytes]:
    """Root ``version`` delegating drupal/* to PUBLISHER, signed by ROOT_KEY (a rotation from
    the one before it: same root key), expiring at ``expires`` (a year from now if None)."""
    root = build_root(
        version=version,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (PUBLISHER.public_key,), 1)],
        expires=expires,
    )
    return root, root.sign([ROOT_KEY])


class Carrier:
    """``fairstream bundle export`` on the connected network and ``import`` on the
    disconnected one, as an operator runs them, each bundle after the previous."""

    def __init__(
        self, stack: devstack.Stack, connected: Network, island: Network, tmp_path: Path
    ) -> None:
        self.connected, self.island, self.tmp_path = connected, island, tmp_path
        self.common = ["--broker", stack.broker_url, "--store", stack.store_url]
        self.key_file = tmp_path / "upstream.key"
        write_key_pair(EXPORTER, self.key_file)
        self.root_file = tmp_path / "root.avro"
        self.bundles: list[Path] = []

    def carry(self, *, as_json: bool = True) -> str:
        """Export the next bundle and import it; the import's summary as printed."""
        out = self.tmp_path / f"bundle-{len(self.bundles) + 1:04d}.tar"
        since = ["--since", str(self.bundles[-1])] if self.bundles else []
        self._run(
            "bundle", "export", "--region", "up", "--bucket", self.connected.store.bucket,
            "--root", str(self.root_file), "--key", str(self.key_file), "--out", str(out),
            *since, "--topic-prefix", prefix_of(self.connected), *self.common,
        )  # fmt: skip
        self.bundles.append(out)
        return self._run(
            "bundle", "import", str(out), "--region", "down",
            "--bucket", self.island.store.bucket,
            "--exporter", str(self.key_file.with_suffix(".pub")),
            "--topic-prefix", prefix_of(self.island), *self.common,
            *(["--json"] if as_json else []),
        )  # fmt: skip

    def _run(self, *args: str) -> str:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout


def prefix_of(network: Network) -> str:
    return network.topics.releases.removesuffix("fair.releases")


def health_of(url: str) -> tuple[int, dict[str, Any]]:
    """A node's ``/health``: 200, or 503 with the reasons."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, orjson.loads(exc.read())


def eventually(check: Callable[[], T | None], what: str, node: localnet.LocalProcess) -> T:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    pytest.fail(f"{what} within 90 s; the node's log ends:\n{node.log_tail(30)}")


def test_a_disconnected_node_whose_root_expires_freezes_as_online_and_thaws_on_a_newer_root(
    stack: devstack.Stack, location: StoreLocation, tmp_path: Path
) -> None:
    """Issue 19, rotation and freshness across the gap: the island's node freezes when the
    root in force expires (it applies nothing new, keeps serving what it has, and its
    heartbeat and /health say why), the import of the bundle that brings the next release
    says the root in force expired, and the bundle carrying a newer root thaws the node."""
    connected, island = Network(stack, location), Network(stack, location)
    carrier = Carrier(stack, connected, island, tmp_path)
    _, pinned = signed_root(1)
    carrier.root_file.write_bytes(pinned)
    producer = EventProducer(stack.broker_url)
    producer.produce(connected.topics.trust, b"trust-root", pinned)
    publish(connected, producer, tmp_path, [("token", "8.x-1.9")], signer=PUBLISHER)
    carrier.carry()
    node = localnet.start_node(
        f"i{uuid4().hex[:8]}",  # a region (consumer group) of this test's own
        broker_url=stack.broker_url,
        store_url=stack.store_url,
        root=carrier.root_file,
        data_dir=tmp_path / "island-node",
        topic_prefix=prefix_of(island),
        partitions=2,
        bucket=island.store.bucket,
        options=["--status-every", "1"],
    )
    try:
        eventually(
            lambda: "1.9.0" in localnet.fetch_p2_versions(node.url, "drupal/token"),
            "the island serves token 1.9.0",
            node,
        )

        def heartbeat(state: str) -> NodeStatus | None:
            """The node's last heartbeat, if it is in ``state``."""
            book = read_node_book(stack.broker_url, island.topics.status)
            found = [s for s in book.statuses.values() if s.base_url == node.url]
            last = max(found, key=lambda s: s.sequence) if found else None
            return last if last is not None and last.state == state else None

        # The next bundle rotates to a root that lives seconds (as the online test's), and
        # it expires while nothing more comes across the gap. The island follows it whether
        # it reads it before or after it expired: an expired root still rotates forward.
        now = datetime.now(UTC)
        expires = now.replace(microsecond=now.microsecond // 1000 * 1000) + timedelta(seconds=4)
        _, rotation = signed_root(2, expires)
        producer.produce(connected.topics.trust, b"trust-root", rotation)
        assert orjson.loads(carrier.carry())["trust_root"]["version"] == 2
        eventually(lambda: health_of(node.url)[1]["trust_root"]["version"] == 2, "v2", node)
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1)

        # A release comes across under the expired root. The import says how fresh the
        # bundle is and that the root in force expired.
        publish(connected, producer, tmp_path, [("token", "8.x-1.10")], signer=PUBLISHER)
        printed = carrier.carry(as_json=False)
        assert "covers: records from " in printed, printed
        assert (
            f"trust_root: v2, expired {expires:%Y-%m-%d %H:%M:%S} UTC: the nodes apply nothing "
            "new (they freeze, as online) until a bundle carries a newer root"
        ) in printed, printed

        # Frozen, as online: it waits on the release (does not refuse it), serves what it
        # had and not the new version, and its heartbeat and /health say why.
        eventually(
            lambda: "waits for root v3" in node.log.read_text(errors="replace"),
            "the node waits on the release for a newer root",
            node,
        )
        frozen = eventually(
            lambda: heartbeat("degraded"),
            "the heartbeat says the node is frozen",
            node,
        )
        assert frozen.trust_root_version == 2
        assert "trust root v2 expired" in frozen.detail, frozen.detail
        assert "nothing new is applied" in frozen.detail, frozen.detail
        status, health = health_of(node.url)
        assert status == 503, health
        assert (
            f"frozen: the trust root expired at {expires.isoformat()}; nothing is applied "
            "until a newer root is on the trust topic"
        ) in health["reasons"], health
        assert localnet.fetch_p2_versions(node.url, "drupal/token").keys() == {"1.9.0"}

        # The bundle after it carries a rotated, unexpired root: the node thaws and applies
        # the release it held back.
        producer.produce(connected.topics.trust, b"trust-root", signed_root(3)[1])
        thawing = orjson.loads(carrier.carry())
        assert thawing["trust_root"]["version"] == 3 and not thawing["trust_root"]["expired"]
        eventually(
            lambda: (
                localnet.fetch_p2_versions(node.url, "drupal/token").keys() == {"1.9.0", "1.10.0"}
            ),
            "the thawed node serves 1.10.0",
            node,
        )
        eventually(
            lambda: heartbeat("in-sync"),
            "the heartbeat says the node is in sync again",
            node,
        )
        status, health = health_of(node.url)
        assert (status, health["trust_root"]["version"]) == (200, 3), health
    finally:
        producer.close()
        node.stop()
    # Waiting is not refusing: nothing of the island reached its rejected topic.
    assert read_partition(stack.broker_url, island.topics.rejected) == []
