"""The fault harness: a federation on its own real stack, a steady publish load, a poller.

The fault tests share one broker and S3 server of their own (so a test may pause the
broker or restart the store without touching other tests), an origin, a trust
root and three regions with different policies: ``eu`` (two workers, every
package), ``us`` (every package) and ``ap`` (only ``drupal/a*``). ``Load``
publishes signed releases at a steady rate and records what the broker
acknowledged; ``Poller`` reads every region's p2 documents all along, so a
version that ever disappears is caught; ``FaultFederation.history`` collects it
all for ``checker.check`` once the federation has quiesced.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors.kafka_connection import bootstrap_servers, client_config
from connectors.kafka_producers import Delivered, EventProducer
from connectors.kafka_reading import published_releases
from connectors.kafka_topics import Topics, ensure_topics
from infra import devstack, localnet
from infra.devtools.sample_projects import sample_zip
from infra.stack_process import StackProcess
from schemas.composer import expand
from schemas.errors import FairstreamError
from schemas.events import Artifact, ReleasePublished, utc_now
from schemas.signing import SigningKey, seal
from schemas.version_entries import version_entry
from schemas.versions import drupal_to_composer
from services.publishing.publisher import build_release, publish_release
from streams.node_settings import group_id
from tests.faults.checker import (
    Acknowledged,
    Observation,
    Release,
    Served,
    Verdict,
    check,
    included,
)
from tests.roots import write_drupal_root

log = logging.getLogger(__name__)

PROJECTS = ("alpha", "apple", "azure", "beta", "bravo", "cedar", "delta", "ember")
#: region -> (include, exclude): the checker expects each region to serve exactly these.
POLICIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "eu": (("drupal/*",), ("drupal/load-*",)),
    "us": (("drupal/*",), ("drupal/load-*",)),
    "ap": (("drupal/a*",), ()),
}
WORKERS = {"eu": ("eu-1", "eu-2"), "us": ("us",), "ap": ("ap",)}
#: The soak's loaded region (``running_federation(..., loaded=True)``): two metadata-only
#: workers serving the packages ``BulkLoad`` publishes, hundreds a second.
LOADED_REGION = "meta"
LOADED_POLICY = (("drupal/load-*",), ())
LOADED_WORKERS = ("meta-1", "meta-2")
#: What the checker reads at the end: every region, and the directory (its own verified
#: p2, and each download 302'd to a node it chose) as a client configured with it sees it.
CHECKED = {**POLICIES, "directory": (("drupal/*",), ())}


def region_of(source: str) -> str:
    """The region a serving copy belongs to: ``eu/eu-1`` -> ``eu``; ``directory``."""
    return source.split("/", 1)[0]


@dataclass
class P2Entry:
    version: str
    sha1: str
    url: str


def read_p2(node_url: str, package: str, timeout: float = 5.0) -> list[P2Entry]:
    """Every entry a node's p2 documents list for ``package``, duplicates kept.

    Raises ``OSError`` (urllib's errors) when the node does not answer.
    """
    entries: list[P2Entry] = []
    for suffix in ("", "~dev"):
        url = f"{node_url.rstrip('/')}/p2/{package}{suffix}.json"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                document = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            raise
        raw = document.get("packages", {}).get(package, [])
        if document.get("minified") == "composer/2.0":
            raw = expand(raw)
        for entry in raw:
            dist = entry.get("dist") or {}
            entries.append(
                P2Entry(
                    str(entry["version"]), str(dist.get("shasum", "")), str(dist.get("url", ""))
                )
            )
    return entries


def sha256_of_url(url: str, timeout: float = 15.0) -> str | None:
    """The sha256 of what ``url`` answers (redirects followed), or None if it does not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return hashlib.sha256(response.read()).hexdigest()
    except (urllib.error.URLError, OSError):
        return None


class FaultyOrigin:
    """The origin of the zips (stands in for ftp.drupal.org), in this process, with a
    ``mode``: ``ok``, ``5xx`` (503 to every request), ``trickle`` (one byte a second) or
    ``down`` (nothing listens: connections are refused)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mode = "ok"
        self.port = localnet.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self.start()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.requests += 1
                if origin.mode == "5xx":
                    self.send_error(503, "origin overloaded (fault injected)")
                    return
                path = (origin.root / self.path.lstrip("/")).resolve()
                if not path.is_relative_to(origin.root.resolve()) or not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/zip")
                self.end_headers()
                if origin.mode == "trickle":
                    for index in range(len(body)):
                        if origin.mode != "trickle":
                            self.wfile.write(body[index:])
                            return
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                        time.sleep(1.0)
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="origin", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def go_down(self) -> None:
        self.mode = "down"
        self.stop()

    def come_back(self) -> None:
        if self._server is None:
            self.start()
        self.mode = "ok"


@dataclass
class FaultFederation:
    stack: devstack.Stack
    topics: Topics
    key: SigningKey
    root_key: SigningKey
    root_file: Path
    origin: FaultyOrigin
    origin_root: Path
    work_dir: Path
    workers: dict[str, localnet.LocalProcess] = field(default_factory=dict)
    acknowledged: list[Acknowledged] = field(default_factory=list)
    restarted: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: The keys ``publish_one`` signs with (a trust rotation may change them).
    keys: list[SigningKey] = field(default_factory=list)
    directory: localnet.LocalProcess | None = None
    #: The directory's name: it verifies every event too, and records rejections as it.
    directory_name: str = ""
    observations: list[Observation] = field(default_factory=list)
    #: region -> its workers' names; region -> (include, exclude); regions without zips.
    regions: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(WORKERS))
    policies: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=lambda: dict(POLICIES)
    )
    metadata_only: set[str] = field(default_factory=set)
    #: Every package ``BulkLoad`` published to (none outside the soak).
    bulk_packages: list[str] = field(default_factory=list)
    #: (start, end) of every broker pause, on ``time.monotonic``'s clock.
    outages: list[tuple[float, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _versions: dict[str, int] = field(default_factory=dict)
    #: sha256 of the bytes each dist URL gave, once it gave the signed ones: zips are
    #: immutable and content addressed, so a later check need not download them again.
    _fetched: dict[str, str] = field(default_factory=dict)

    def bucket(self, region: str) -> str:
        return f"{self.topics.releases.removesuffix('fair.releases').strip('.')}-{region}"

    def start_worker(
        self, name: str, options: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> localnet.LocalProcess:
        """Start (or restart) worker ``name`` (``eu-1``, ``us``, ...) of its region.

        Workers are started without ``--public-url``, as an operator would: the region's
        first worker records its address as the region's public URL and the others render
        with it (a document written by a worker scaled away must not point at it).
        """
        region = name.split("-")[0]
        include, exclude = self.policies[region]
        policy = [*(f"--include={p}" for p in include), *(f"--exclude={p}" for p in exclude)]
        if region in self.metadata_only:
            policy += ["--mode", "metadata-only"]
        old = self.workers.get(name)
        port = None
        if old is not None:
            old.stop()  # the same port and data directory: one worker of that name at a time
            port = int(old.url.rsplit(":", 1)[1])
        worker = localnet.start_node(
            region,
            broker_url=self.stack.broker_url,
            store_url=self.stack.store_url,
            root=self.root_file,
            data_dir=self.work_dir / f"node-{name}",
            topic_prefix=self.topics.releases.removesuffix("fair.releases"),
            bucket=self.bucket(region),
            options=[*policy, "--status-every", "2", "--retry-parked-every", "1", *options],
            port=port,
            env=env,
        )
        self.workers[name] = worker
        return worker

    def start_directory(self, *options: str) -> localnet.LocalProcess:
        """A directory over this federation (admission rounds every half second)."""
        port = localnet.free_port()
        directory = localnet.start_fairstream(
            "directory",
            [
                "directory", "serve", "--root", str(self.root_file),
                "--broker", self.stack.broker_url, "--store", self.stack.store_url,
                "--listen", f"127.0.0.1:{port}", "--data-dir", str(self.work_dir / "directory"),
                "--topic-prefix", self.topics.releases.removesuffix("fair.releases"),
                "--name", f"{self.bucket('dir')}-{port}", "--session-timeout", "6",
                "--stale-after", "6", "--check-every", "0.5", *options,
            ],
            url=f"http://127.0.0.1:{port}",
            log=self.work_dir / "logs" / f"directory-{port}.log",
        )  # fmt: skip
        self.workers[f"directory-{port}"] = directory
        directory.wait_until_answering("/health")
        return directory

    def directory_name_of(self, directory: localnet.LocalProcess) -> str:
        return f"{self.bucket('dir')}-{directory.url.rsplit(':', 1)[1]}"

    def verifiers(self) -> set[str]:
        """Everyone that verifies every event and records what it refuses: the regions
        and the directory."""
        return {*self.regions, self.directory_name}

    def server(self, name: str) -> StackProcess:
        (process,) = [p for p in self.stack.processes if p.name == name]
        return process

    def pause_broker(self, seconds: float) -> None:
        """SIGSTOP the broker for ``seconds`` (past the consumers' session timeout), then SIGCONT."""
        pid = self.server("broker").pid
        started = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
            with self._lock:
                self.outages.append((started, time.monotonic()))

    def restart_store(self, downtime: float) -> None:
        """Stop the S3 server, leave it down ``downtime`` s, start it again on the same
        port and directory (its objects are files: nothing is lost by the restart)."""
        store = self.server("store")
        running = [p for p in self.restarted if p.poll() is None]
        if running:
            running[-1].terminate()
            running[-1].wait(15)
        else:
            os.kill(store.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while Path(f"/proc/{store.pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        time.sleep(downtime)
        with store.log.open("ab") as out:
            process = subprocess.Popen(
                store.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.restarted.append(process)
        deadline = time.monotonic() + 30
        host, port = store.address.rsplit(":", 1)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
                return
            time.sleep(0.1)
        raise AssertionError(f"the restarted store did not listen on {store.address}")

    def kill_at(self, name: str, point: str, nth: int = 2, timeout: float = 90.0) -> bool:
        """Restart worker ``name`` armed to SIGKILL itself at ``point`` (its ``nth`` visit),
        wait for it to die there, and start it again unarmed. False when it never reached
        the point within ``timeout`` (nothing to do there: e.g. no zip to store)."""
        armed = self.start_worker(name, ["--fault-point", f"{point}@{nth}"])
        deadline = time.monotonic() + timeout
        while armed.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        reached = not armed.alive()
        if reached:
            assert armed.process.returncode == -signal.SIGKILL, armed.log_tail(30)
            assert f"fault point {point} reached" in armed.log.read_text(errors="replace")
        self.start_worker(name)
        return reached

    def kill_9(self, name: str) -> None:
        """kill -9 worker ``name`` wherever it is, then start it again."""
        self.workers[name].kill()
        self.start_worker(name)

    def origin_fault(self, mode: str, seconds: float) -> None:
        """The origin ``down``, answering ``5xx`` or ``trickle``-ing for ``seconds``."""
        if mode == "down":
            self.origin.go_down()
        else:
            self.origin.mode = mode
        try:
            time.sleep(seconds)
        finally:
            self.origin.come_back()

    def rebalance_storm(self, hold: float = 5.0, region: str = "eu") -> None:
        """A region of two workers (eu, or the soak's meta) to one, to three, back to two."""
        self.workers[f"{region}-2"].stop()
        time.sleep(hold)
        self.start_worker(f"{region}-2")
        self.start_worker(f"{region}-3")
        time.sleep(hold)
        self.workers[f"{region}-3"].stop()

    def replay(self, region: str) -> None:
        """Stop the region's workers, set its group back to offset 0, start them again:
        every event is delivered to the region a second time."""
        for name in self.regions[region]:
            self.workers[name].stop()
        try:
            reset_group(self, region)
            assert set(committed_offsets(self, region).values()) == {0}
        finally:
            # Whatever happened, the region runs again: a failure here must not take the
            # region away from the tests after this one.
            for name in self.regions[region]:
                self.start_worker(name)

    def copies(self) -> dict[str, str]:
        """Every live serving copy (``eu/eu-1``, ``directory``) -> its URL: each worker
        serves its own copy of its region's view (ADR 5), the directory its own."""
        found = {}
        for region, names in self.regions.items():
            for name in names:
                worker = self.workers.get(name)
                if worker is not None and worker.alive():
                    found[f"{region}/{name}"] = worker.url
        if self.directory is not None and self.directory.alive():
            found["directory"] = self.directory.url
        return found

    def region_url(self, region: str) -> str | None:
        """The URL of a live worker of ``region`` (or of the directory)."""
        if region == "directory":
            return self.directory.url if self.directory and self.directory.alive() else None
        for name in self.regions[region]:
            worker = self.workers.get(name)
            if worker is not None and worker.alive():
                return worker.url
        return None

    def release_of(
        self,
        project: str,
        drupal_version: str,
        *,
        zip_dir: Path | None = None,
        blob_bytes: int = 0,
    ) -> ReleasePublished:
        """A release of ``drupal/project`` whose zip the origin serves (from ``zip_dir``
        instead: a zip the origin does not have); with ``blob_bytes`` random bytes
        (incompressible) stored uncompressed in ``<project>/assets/blob.bin`` too, a zip
        at least that large."""
        zip_path = sample_zip(zip_dir or self.origin_root / "files", project, drupal_version, {})
        if blob_bytes:
            with zipfile.ZipFile(zip_path, "a") as archive:
                info = zipfile.ZipInfo(
                    f"{project}/assets/blob.bin", date_time=(2024, 1, 1, 0, 0, 0)
                )
                info.compress_type = zipfile.ZIP_STORED
                archive.writestr(info, os.urandom(blob_bytes))
        return build_release(
            package=f"drupal/{project}",
            drupal_version=drupal_version,
            zip_path=zip_path,
            origin_url=f"{self.origin.url}/files/{zip_path.name}",
        )

    def produce(self, event: ReleasePublished, keys: Sequence[SigningKey]) -> Delivered:
        """Sign ``event`` with ``keys`` and produce it with a fresh producer."""
        producer = EventProducer(self.stack.broker_url)
        try:
            return publish_release(event, keys, producer, self.topics.releases)
        finally:
            producer.close()

    def publish_one(self, project: str) -> Acknowledged | None:
        """Build, sign and produce the next release of ``project``; the acknowledged
        release, or None when the broker did not acknowledge it (then it is not expected)."""
        with self._lock:
            number = self._versions.get(project, 0)
            self._versions[project] = number + 1
        # Every fourth release a dev snapshot of a new branch, as the real catalogue has
        # them: served from p2/<name>~dev.json, which the checker and spot checks read too.
        drupal_version = f"8.x-{number}.x-dev" if number % 4 == 3 else f"8.x-1.{number}"
        event = self.release_of(project, drupal_version)
        try:
            self.produce(event, self.keys or [self.key])
        except FairstreamError as exc:
            log.info("%s %s not acknowledged: %s", event.package, event.version, exc)
            return None
        ack = Acknowledged(event.package, event.version, event.artifact.sha256, event.artifact.sha1)
        with self._lock:
            self.acknowledged.append(ack)
        return ack

    def publish_large(self, project: str, blob_bytes: int) -> ReleasePublished:
        """Build, sign and produce the next release of ``project`` with a zip of more than
        ``blob_bytes`` (``release_of``'s ``blob_bytes``), recorded as acknowledged as
        ``publish_one``'s are; raises when the broker did not acknowledge it."""
        with self._lock:
            number = self._versions.get(project, 0)
            self._versions[project] = number + 1
        # 8.x-1.<number>, never a dev snapshot: publish_one uses the number for no other one.
        event = self.release_of(project, f"8.x-1.{number}", blob_bytes=blob_bytes)
        self.produce(event, self.keys or [self.key])
        ack = Acknowledged(event.package, event.version, event.artifact.sha256, event.artifact.sha1)
        with self._lock:
            self.acknowledged.append(ack)
        return event

    def checked(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """What the checker reads at the end: every region, and the directory."""
        return {**self.policies, "directory": CHECKED["directory"]}

    def expected(self, region: str) -> set[Release]:
        include, exclude = self.checked()[region]
        with self._lock:
            return {
                (a.package, a.version)
                for a in self.acknowledged
                if included(a.package, include, exclude)
            }

    def wait_until_quiet(self, timeout: float = 120.0) -> None:
        """Until every region serves every acknowledged release of its policy."""
        deadline = time.monotonic() + timeout
        missing: dict[str, set[Release]] = {}
        #: What each copy was seen serving: only packages still missing are read again (the
        #: poller and the final check catch a copy taking back what it served).
        seen: dict[str, set[Release]] = {}
        while time.monotonic() < deadline:
            missing = {}
            copies = self.copies()
            for region in self.checked():
                if not any(region_of(source) == region for source in copies):
                    missing[region] = self.expected(region)
            for source, url in copies.items():
                expected = self.expected(region_of(source))
                served = seen.setdefault(source, set())
                for package in {p for p, _ in expected - served}:
                    with contextlib.suppress(OSError):
                        served |= {(package, e.version) for e in read_p2(url, package)}
                if expected - served:
                    missing[source] = expected - served
            if not missing:
                return
            time.sleep(1.0)
        tails = {n: w.log_tail(20) for n, w in self.workers.items()}
        pytest.fail(f"not quiet after {timeout:.0f} s; missing {missing}\n{tails}")

    def history(self) -> Verdict:
        """Read the final state of every region and the log back, and check the run."""
        final: dict[str, dict[Release, list[Served]]] = {}
        copies = self.copies()
        for region in self.checked():
            assert any(region_of(c) == region for c in copies), f"no live copy of {region}"
        for source, url in copies.items():
            served: dict[Release, list[Served]] = {}
            for project in PROJECTS:
                package = f"drupal/{project}"
                for entry in read_p2(url, package):
                    digest = self._fetched.get(entry.url) or sha256_of_url(entry.url)
                    if digest is not None and entry.url.endswith(f"/{digest}.zip"):
                        self._fetched[entry.url] = digest
                    served.setdefault((package, entry.version), []).append(
                        Served(entry.sha1, digest)
                    )
            include, exclude = self.checked()[region_of(source)]
            for package in self.bulk_packages:
                if not included(package, include, exclude):
                    continue
                # BulkLoad's releases have no zip anywhere: p2 and its signed sha1 only.
                for entry in read_p2(url, package):
                    served.setdefault((package, entry.version), []).append(Served(entry.sha1, None))
            final[source] = served
        in_log = published_releases(self.stack.broker_url, self.topics.releases)
        with self._lock:
            acknowledged = list(self.acknowledged)
            observations = list(self.observations)
            outages = list(self.outages)
        sources = {o.source for o in observations} | set(final)
        return check(
            acknowledged,
            in_log,
            {source: self.checked()[region_of(source)] for source in final},
            final,
            observations,
            copies={source: region_of(source) for source in sources},
            outages=outages,
        )


def committed_offsets(federation: FaultFederation, region: str) -> dict[int, int]:
    """The region's group's committed offset of every partition of the releases topic."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers(federation.stack.broker_url),
         "group.id": group_id(region, federation.topics)}
    )  # fmt: skip
    try:
        parts = [TopicPartition(federation.topics.releases, p) for p in range(4)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=15)}
    finally:
        consumer.close()


def reset_group(federation: FaultFederation, region: str, timeout: float = 120.0) -> None:
    """Commit offset 0 on every partition for the region's stopped group, as an operator
    would with kafka-consumer-groups --reset-offsets --to-earliest.

    It joins the group and commits as its member, with the workers' own client
    (librdkafka, the same group protocol). A commit from outside the group (generation -1)
    is refused while the group lists members, and Tansu keeps stopped workers listed
    until the group rebalances (outside commits were refused for 150 s in two of three
    full runs); a join is what makes it rebalance, and the stopped workers drop out of it.
    """
    group, topic, partitions = group_id(region, federation.topics), federation.topics.releases, 4
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers(federation.stack.broker_url),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(consumer.assignment()) < partitions:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"could not join group {group} alone within {timeout:.0f} s "
                    f"(assigned {sorted(tp.partition for tp in consumer.assignment())})"
                )
            consumer.poll(0.5)  # joins, and serves the assignment; records are not kept
        committed = consumer.commit(
            offsets=[TopicPartition(topic, p, 0) for p in range(partitions)], asynchronous=False
        )
        failed = [tp for tp in committed or [] if tp.error is not None]
        assert not failed, f"offsets of {group} not reset: {failed}"
    finally:
        consumer.close()


class Load:
    """Publishes releases round-robin over ``PROJECTS`` every ``interval`` s, in a thread."""

    def __init__(self, federation: FaultFederation, interval: float = 0.25) -> None:
        self.federation = federation
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)
        self.sent = 0

    def _run(self) -> None:
        index = 0
        while not self.stopped.is_set():
            self.federation.publish_one(PROJECTS[index % len(PROJECTS)])
            self.sent += 1
            index += 1
            self.stopped.wait(self.interval)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(60)


#: How many of ``BulkLoad``'s packages the poller reads each round (the first ones).
BULK_POLLED = 12


class BulkLoad:
    """The soak's real load: releases of ``packages`` distinct packages (``drupal/load-00000``
    ...) round robin (20,000 by default: a few versions each in a soak of minutes, as the
    real catalogue has about ten), ``rate`` a second, each a new version, signed and produced with one
    idempotent producer in a thread; what the broker acknowledged is recorded as
    ``Load``'s is. Their zips exist nowhere: only the metadata-only region ``meta`` and
    the directory serve them, and the checker compares their p2 and signed sha1 only.
    While the broker is paused records wait in the producer (``message.timeout.ms`` is
    longer than any pause the soak makes) and go out when it is back."""

    def __init__(
        self, federation: FaultFederation, rate: float = 200.0, packages: int = 20_000
    ) -> None:
        self.federation = federation
        self.rate = rate
        self.packages = [f"drupal/load-{n:05d}" for n in range(packages)]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bulk-load", daemon=True)
        self.sent = 0
        self.failed = 0

    def _record(self, ack: Acknowledged) -> Callable[[KafkaError | None, Message], None]:
        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                self.failed += 1
                log.warning("%s %s not acknowledged: %s", ack.package, ack.version, err)
                return
            with self.federation._lock:
                self.federation.acknowledged.append(ack)

        return delivered

    def _run(self) -> None:
        federation = self.federation
        producer = Producer(
            {
                **client_config(federation.stack.broker_url),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 120_000,
                "log.connection.close": False,
            }
        )
        tick = 0.05
        started = time.monotonic()
        try:
            while not self.stopped.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    package = self.packages[self.sent % len(self.packages)]
                    number = self.sent // len(self.packages)
                    key, value, ack = bulk_release(federation.key, package, number)
                    producer.produce(
                        federation.topics.releases,
                        key=key,
                        value=value,
                        on_delivery=self._record(ack),
                    )
                    self.sent += 1
                producer.poll(0)
                self.stopped.wait(tick)
        finally:
            left = producer.flush(180)
            if left:
                log.error("bulk load: %d releases never acknowledged", left)

    def __enter__(self) -> BulkLoad:
        with self.federation._lock:
            self.federation.bulk_packages = list(self.packages)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(240)


def bulk_release(key: SigningKey, package: str, number: int) -> tuple[bytes, bytes, Acknowledged]:
    """Release ``8.x-1.<number>`` of ``package``, signed, with a zip that exists nowhere."""
    drupal_version = f"8.x-1.{number}"
    digest = hashlib.sha256(f"{package} {drupal_version}".encode()).hexdigest()
    sha1 = hashlib.sha1(digest.encode()).hexdigest()
    project = package.split("/", 1)[1]
    event = ReleasePublished(
        package=package,
        drupal_version=drupal_version,
        version=drupal_to_composer(drupal_version),
        published_at=utc_now(),
        artifact=Artifact(
            sha256=digest,
            sha1=sha1,
            size=100_000 + number,
            origin_url=f"https://ftp.drupal.org/files/projects/{project}-{drupal_version}.zip",
        ),
        composer=version_entry(
            name=package,
            drupal_version=drupal_version,
            sha1=sha1,
            metadata={
                "type": "drupal-module",
                "description": f"The {project} module.",
                "license": "GPL-2.0-or-later",
                "require": {"drupal/core": "^10 || ^11"},
            },
        ),
        sequence=number + 1,
    )
    ack = Acknowledged(package, event.version, digest, sha1, zip_checked=False)
    return package.encode(), seal(event.to_bytes(), [key]), ack


class Poller:
    """Reads every region's p2 of every project all along and records what it saw."""

    def __init__(self, federation: FaultFederation, interval: float = 0.3) -> None:
        self.federation = federation
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def _run(self) -> None:
        federation = self.federation
        while not self.stopped.is_set():
            sources = [
                (f"{region}/{name}", federation.workers.get(name))
                for region, names in federation.regions.items()
                for name in names
            ]
            sources.append(("directory", federation.directory))
            for source, process in sources:
                if process is None or not process.alive():
                    continue
                include, exclude = federation.checked()[region_of(source)]
                sample = [
                    p
                    for p in federation.bulk_packages[:BULK_POLLED]
                    if included(p, include, exclude)
                ]
                for package in [*(f"drupal/{p}" for p in PROJECTS), *sample]:
                    try:
                        listed = tuple(e.version for e in read_p2(process.url, package, 2.0))
                    except OSError:
                        continue
                    observation = Observation(source, package, time.monotonic(), listed)
                    with federation._lock:
                        federation.observations.append(observation)
            self.stopped.wait(self.interval)

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(60)


@contextlib.contextmanager
def running_federation(work_dir: Path, *, loaded: bool = False) -> Iterator[FaultFederation]:
    """A federation on a stack of its own under ``work_dir`` (faults may pause or restart
    its servers), stopped on exit: for the fault tests and ``make soak`` (``loaded``: with
    the metadata-only region ``meta`` that ``BulkLoad``'s packages go to)."""
    stack = devstack.up(work_dir / "stack")
    topics = Topics.with_prefix(f"faults-{uuid4().hex[:8]}.")
    key = SigningKey.generate()
    root_key = SigningKey.generate()
    root_file = work_dir / "root.avro"
    write_drupal_root(root_file, key, root_key)
    origin_root = work_dir / "origin"
    (origin_root / "files").mkdir(parents=True)
    origin: FaultyOrigin | None = None
    federation: FaultFederation | None = None
    try:
        ensure_topics(stack.broker_url, topics.partitions(4), compacted=topics.compacted)
        origin = FaultyOrigin(origin_root)
        federation = FaultFederation(
            stack, topics, key, root_key, root_file, origin, origin_root, work_dir
        )
        if loaded:
            federation.regions[LOADED_REGION] = LOADED_WORKERS
            federation.policies[LOADED_REGION] = LOADED_POLICY
            federation.metadata_only.add(LOADED_REGION)
        for names in federation.regions.values():
            for name in names:
                federation.start_worker(name)
        federation.directory = federation.start_directory(
            "--region-map", "127.0.0.0/8=eu", "--spot-check-every", "5"
        )
        federation.directory_name = federation.directory_name_of(federation.directory)
        yield federation
    finally:
        if federation is not None:
            for worker in federation.workers.values():
                worker.stop()
        if origin is not None:
            origin.stop()
        if federation is not None:
            for process in federation.restarted:
                process.terminate()
                process.wait(15)
        devstack.down(work_dir / "stack")


@pytest.fixture(scope="session")
def fault_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFederation]:
    """One federation on a stack of its own for every fault test: each test checks the whole
    history so far, so a fault's damage found later still fails (and setting up four
    workers and a directory once saves minutes)."""
    with running_federation(tmp_path_factory.mktemp("faults")) as federation:
        yield federation
