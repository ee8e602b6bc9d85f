"""A regional node catching up and keeping up: bootstrap, scale-out and freshness.

Run with ``make bench`` (or ``uv run python -m tests.benchmarks.bench_node --projects 3000``
for a quick trial). On the embedded stack (``infra.devstack``) in a temporary directory:

- **Bootstrap**: a stream of signed releases (``PROJECTS`` projects, 0 to 17 versions
  and a dev branch each, ten releases on average, realistic Composer metadata, all
  versions of a project in a row as the importer publishes them) is produced once into a
  topic per run. Ours: a fresh region (``fairstream node run --mode metadata-only``, one
  worker) started on it, timed from process start until its group's committed offsets
  reach the exact log end (from the delivery reports). Baseline: a bare confluent-kafka
  consumer that reads every record of the same topic and decodes it (envelope and event,
  fastavro, no verification). Alternating runs.
- **Scale-out**: the same bootstrap with two workers of one region (two processes in one
  consumer group) against one worker, alternating.
- **Full size**: the issue's 30,000 projects (about 300,000 releases), run as such, twice:
  one worker, the bare consumer and two workers alternating, each on its own region of one
  releases topic; then a new frontend of the last region (the restore at full size). The
  ratio's gap says what the goal leaves per release on this machine's cores once a bare
  Ed25519 verification and decoding of the same records (measured in the same run) are paid.
- **Freshness**: a running region (metadata-only, one worker) under a steady background
  load of 50 and then 500 releases/s; every 100 ms a probe release of a new package is
  produced, and its time from the broker's acknowledgement to its first appearance in
  the worker's docroot (what the shipped nginx front serves; looked for every 5 ms, on
  disk, so that measuring does not load the node) is recorded. At 1,000 releases/s the
  group's backlog is sampled every second: its growth is the figure. Baseline: the same
  probes' time from acknowledgement to delivery to a bare confluent-kafka consumer in the
  same run.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_reading import group_positions, iter_partition
from connectors.kafka_topics import Topics, ensure_topics, topic_partitions
from infra import devstack, localnet
from schemas import layout
from schemas.events import Artifact, ReleasePublished, decode_package_event, utc_now
from schemas.signing import SignedEvent, SigningKey, seal
from schemas.version_entries import version_entry
from schemas.versions import drupal_to_composer
from streams.node_settings import group_id
from tests.benchmarks.figures import figure, peak_rss_mb
from tests.roots import write_drupal_root

#: A tenth of the issue's 30,000 projects: on the embedded store the node bootstraps a few
#: hundred releases a second (every request costs rclone ~3 ms of CPU), so the full size
#: takes some 11 minutes per run, past the suite's 30-minute budget with the runs it
#: needs. ``--projects 30000`` runs it at full size.
PROJECTS = 3_000
RUNS = 2
FULL_SIZE_RELEASES = 300_000
#: The issue's full size, run as such in every ``make bench`` (``--no-full-size`` skips it).
FULL_SIZE_PROJECTS = 30_000
#: Full-size runs of each kind in one ``make bench``, alternating (medians in the table).
FULL_SIZE_RUNS = 2
FULL_SIZE = True
PARTITIONS = 4
SEED = 2026
FRESHNESS_LOADS = (50, 500, 1000)
#: At this load the goal is no backlog growth (issue 15), not the latency.
BACKLOG_LOAD = 1000
FRESHNESS_SECONDS = 15.0
#: Where the benchmarked region keeps its view (``node run --view``): set by ``--view``.
VIEW = "topic"
PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "log.connection.close": False,
}

console = Console()


# ---------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------


def release(
    key: SigningKey, project: str, drupal_version: str, sequence: int, rng: random.Random
) -> tuple[bytes, bytes]:
    """One signed release of a project, with metadata of packages.drupal.org's shape."""
    package = f"drupal/{project}"
    sha1 = rng.randbytes(20).hex()
    entry = version_entry(
        name=package,
        drupal_version=drupal_version,
        sha1=sha1,
        metadata={
            "type": "drupal-module",
            "description": f"The {project} module.",
            "homepage": f"https://www.drupal.org/project/{project}",
            "license": "GPL-2.0-or-later",
            "require": {"drupal/core": "^9.5 || ^10 || ^11"},
            "support": {"source": f"https://git.drupalcode.org/project/{project}"},
        },
    )
    event = ReleasePublished(
        package=package,
        drupal_version=drupal_version,
        version=drupal_to_composer(drupal_version),
        published_at=utc_now(),
        artifact=Artifact(
            sha256=rng.randbytes(32).hex(),
            sha1=sha1,
            size=rng.randint(20_000, 3_000_000),
            origin_url=f"https://ftp.drupal.org/files/projects/{project}-{drupal_version}.zip",
        ),
        composer=entry,
        sequence=sequence,
    )
    return package.encode(), seal(event.to_bytes(), [key])


def make_stream(key: SigningKey, projects: int) -> list[tuple[bytes, bytes]]:
    """Every release of ``projects`` projects, project after project."""
    rng = random.Random(SEED)
    records: list[tuple[bytes, bytes]] = []
    with Progress(
        TextColumn("generating releases"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("", total=projects)
        for n in range(projects):
            project = f"bench_{n:06d}"
            versions = [f"8.x-1.{minor}" for minor in range(rng.randint(0, 18))]
            for sequence, drupal_version in enumerate([*versions, "8.x-1.x-dev"], start=1):
                records.append(release(key, project, drupal_version, sequence, rng))
            progress.advance(task)
    return records


def produce(broker_url: str, topic: str, records: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce records; returns the exact log end per partition (from delivery reports)."""
    producer = Producer({"bootstrap.servers": bootstrap_servers(broker_url), **PRODUCER_CONFIG})
    ends: dict[int, int] = {}

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            raise RuntimeError(f"produce failed: {error}")
        partition, offset = message.partition(), message.offset()
        ends[partition] = max(ends.get(partition, 0), offset + 1)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush()
    return ends


# ---------------------------------------------------------------------------
# A federation of one region
# ---------------------------------------------------------------------------


class Region:
    """Topics, a trust root and a place for a region's nodes, on the embedded stack."""

    def __init__(
        self, stack: devstack.Stack, work: Path, key: SigningKey, *, topics_of: Region | None = None
    ) -> None:
        """``topics_of``: a region whose topics this one reads too (a releases topic produced
        once for several runs), with a name, group, view topic and bucket of its own."""
        self.stack = stack
        self.work = work
        self.prefix = topics_of.prefix if topics_of else f"bench-{uuid.uuid4().hex[:8]}."
        self.topics = Topics.with_prefix(self.prefix)
        ensure_topics(stack.broker_url, self.topics.partitions(PARTITIONS))
        self.region = f"r{uuid.uuid4().hex[:6]}"
        root_key = SigningKey.generate()
        self.root_file = self.path("root.avro")
        write_drupal_root(self.root_file, key, root_key)

    def path(self, name: str) -> Path:
        """A file or directory of the region's own under the benchmark's work directory
        (regions sharing their topics share the prefix, not these)."""
        return self.work / f"{self.prefix}{self.region}.{name}"

    def start_worker(self, name: str) -> localnet.LocalProcess:
        return localnet.start_node(
            self.region,
            broker_url=self.stack.broker_url,
            store_url=self.stack.store_url,
            root=self.root_file,
            data_dir=self.path(name),
            topic_prefix=self.prefix,
            partitions=PARTITIONS,
            bucket=f"{self.prefix.strip('.')}-{self.region}",
            options=["--mode", "metadata-only", "--view", VIEW],
        )

    def committed(self) -> dict[int, int | None]:
        positions = group_positions(
            self.stack.broker_url, group_id(self.region, self.topics), self.topics.releases
        )
        return {p.partition: p.committed for p in positions}


def written_documents(log_text: str) -> tuple[int, int]:
    """States and p2 documents written, from the node's last batch summary."""
    found = re.findall(r"written since start: (\d+) states, (\d+) p2 documents", log_text)
    return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)


def start_intake_alone(region: Region) -> localnet.LocalProcess:
    """The intake's ceiling (``tests.benchmarks.intake_alone``) in the region's group."""
    log = region.path("intake-alone.log")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.intake_alone",
                region.stack.broker_url,
                region.topics.releases,
                group_id(region.region, region.topics),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return localnet.LocalProcess(name="intake-alone", url="", log=log, process=process)


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of process ``pid``, all its threads; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a worker's docroot writer), from ``/proc``: each
    thread's children are listed under its own task."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def machine_jiffies() -> tuple[int, int]:
    """The machine's idle (with I/O wait) and total jiffies so far, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)


class CpuMeter:
    """CPU seconds of the workers and the broker, and the machine's idle cores, between two
    moments of a run (the steady phase: its first commit to its last)."""

    def __init__(self, stack: devstack.Stack, nodes: list[localnet.LocalProcess]) -> None:
        self._nodes = nodes
        self._broker = next(p.pid for p in stack.processes if p.name == "broker")
        #: Each worker's last reading: a stopped worker's CPU is read before it stops.
        self._last: dict[int, float] = {}
        self._start: tuple[float, float, tuple[int, int]] | None = None
        self._end: tuple[float, float, tuple[int, int]] | None = None

    def _read(self) -> tuple[float, float, tuple[int, int]]:
        for node in self._nodes:
            # The worker and its children (the docroot's writer process): all its CPU.
            for pid in [node.process.pid, *children(node.process.pid)]:
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    self._last[pid] = seconds
        return sum(self._last.values()), cpu_seconds(self._broker) or 0.0, machine_jiffies()

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        self._end = self._read()

    def per_release(self, releases: int) -> dict[str, float]:
        """CPU µs per release of the workers and of the broker over the measured phase, the
        machine's idle cores meanwhile, and the rate its cores allow at that cost."""
        if self._start is None or self._end is None or releases <= 0:
            return {}
        (w0, b0, (i0, t0)), (w1, b1, (i1, t1)) = self._start, self._end
        workers, broker = (w1 - w0) / releases * 1e6, (b1 - b0) / releases * 1e6
        cores = os.cpu_count() or 1
        return {
            "cpu_us_per_release_workers": workers,
            "cpu_us_per_release_broker": broker,
            "idle_cores": (i1 - i0) / (t1 - t0) * cores if t1 > t0 else 0.0,
            "cores": cores,
            "ceiling_releases_per_second": cores * 1e6 / (workers + broker)
            if workers + broker
            else 0.0,
        }


def bootstrap(
    stack: devstack.Stack,
    work: Path,
    key: SigningKey,
    records: list[tuple[bytes, bytes]],
    workers: int,
    *,
    intake_alone: bool = False,
    region: Region | None = None,
    ends: dict[int, int] | None = None,
) -> dict[str, Any]:
    """A fresh region with ``workers`` workers catching up with ``records`` (with
    ``intake_alone``: the intake's ceiling, one process taking the records and doing nothing).
    ``region``: a fresh region of the caller's, which it goes on using afterwards (a restore);
    ``ends``: its releases topic already holds ``records``, ending at these offsets."""
    region = region or Region(stack, work, key)
    if ends is None:
        ends = produce(stack.broker_url, region.topics.releases, records)
    started = time.monotonic()
    if intake_alone:
        nodes = [start_intake_alone(region)]
    else:
        nodes = [region.start_worker(f"w{n}") for n in range(workers)]
    total = sum(ends.values())
    # The first commit seen: from there to the end is the steady rate (start-up, the group
    # join and the view's read barrier excluded).
    first: tuple[float, int] | None = None
    meter = CpuMeter(stack, nodes)
    try:
        deadline = started + 1800
        while True:
            committed = region.committed()
            done = sum(committed.get(p) or 0 for p in ends)
            meter.stop()  # each worker's latest reading, kept should it stop
            if first is None and done > 0:
                first = (time.monotonic(), done)
                meter.start()
            if all((committed.get(p) or 0) >= end for p, end in ends.items()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bootstrap did not finish: {committed} of {ends}")
            for node in nodes:
                if not node.alive():
                    raise RuntimeError(f"node died:\n{node.log_tail(30)}")
            time.sleep(0.2)
        finished = time.monotonic()
        elapsed = finished - started
        peak = max(peak_rss_mb(node.process.pid) for node in nodes)
        time.sleep(1.5)  # the last batch summary
        states = documents = 0
        for node in nodes:
            s, d = written_documents(node.log.read_text(errors="replace"))
            states, documents = states + s, documents + d
    finally:
        for node in nodes:
            node.stop()
    packages = len({k for k, _ in records})
    at, done = first or (started, 0)
    steady = (total - done) / (finished - at) if finished > at and total > done else 0.0
    return {
        "seconds": elapsed,
        "releases_per_second": len(records) / elapsed,
        "steady_releases_per_second": steady,
        "seconds_to_first_commit": at - started,
        "peak_rss_mb": peak,
        "states_written": states,
        "p2_written": documents,
        "p2_writes_per_package": documents / packages,
        # The steady phase's CPU: what bounds the rate on this machine's cores.
        **meter.per_release(total - done),
    }


def bare_consume(
    stack: devstack.Stack,
    records: list[tuple[bytes, bytes]],
    produced: tuple[str, dict[int, int]] | None = None,
) -> float:
    """Records/s of a bare consumer reading and decoding the same stream from its own topic
    (``produced``: from this topic, which holds ``records`` up to these end offsets)."""
    if produced is None:
        topic = f"bench-bare-{uuid.uuid4().hex[:8]}"
        ensure_topics(stack.broker_url, {topic: PARTITIONS})
        ends = produce(stack.broker_url, topic, records)
    else:
        topic, ends = produced
    total = sum(ends.values())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers(stack.broker_url),
            "group.id": f"bare-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log.connection.close": False,
        }
    )
    started = time.monotonic()
    seen = 0
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    while seen < total:
        for message in consumer.consume(num_messages=1000, timeout=1.0):
            if message.error() is not None:
                continue
            decode_package_event(SignedEvent.from_bytes(message.value() or b"").payload)
            seen += 1
    elapsed = time.monotonic() - started
    consumer.close()
    return total / elapsed


def restore(
    stack: devstack.Stack, work: Path, key: SigningKey, records: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """A region bootstrapped by one worker, then a new frontend of it (``restore_frontend``)."""
    region = Region(stack, work, key)
    bootstrap(stack, work, key, records, workers=1, region=region)
    return restore_frontend(stack, region, records)


def restore_frontend(
    stack: devstack.Stack, region: Region, records: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """A new frontend (``node serve``, an empty data directory) of ``region``, bootstrapped
    with ``records`` and its workers stopped: the seconds from its start to serving everything
    (``/ready``: its view topic read to a marker), against a bare consumer reading the same
    view topic to its end."""
    view_topic = region.topics.view(region.region)
    started = time.monotonic()
    view_records = sum(
        1
        for partition in topic_partitions(stack.broker_url, view_topic)
        for _ in iter_partition(stack.broker_url, view_topic, partition)
    )
    bare_seconds = time.monotonic() - started
    port = localnet.free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    frontend = localnet.start_fairstream(
        "frontend",
        [
            "node", "serve", "--region", region.region, "--root", str(region.root_file),
            "--broker", stack.broker_url, "--store", stack.store_url,
            "--listen", f"127.0.0.1:{port}",
            "--bucket", f"{region.prefix.strip('.')}-{region.region}",
            "--data-dir", str(region.path("frontend")),
            "--topic-prefix", region.prefix,
        ],
        url=url,
        log=region.path("frontend.log"),
    )  # fmt: skip
    try:
        wait_ready(url, timeout=600)
        seconds = time.monotonic() - started
        last = records[-1][0].decode()
        if not served(url, last):
            raise RuntimeError(f"the restored frontend does not serve {last}")
        peak = peak_rss_mb(frontend.process.pid)
    finally:
        frontend.stop()
    return {
        "seconds": seconds,
        "bare_seconds": bare_seconds,
        "view_records": view_records,
        "packages": len({k for k, _ in records}),
        "releases": len(records),
        "peak_rss_mb": peak,
    }


# ---------------------------------------------------------------------------
# Freshness
# ---------------------------------------------------------------------------


def served(node_url: str, package: str) -> bool:
    try:
        with urllib.request.urlopen(f"{node_url}/p2/{package}.json", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(node_url: str, timeout: float = 120.0) -> None:
    """Until the node's ``/ready`` answers 200: its partitions assigned and its view caught up.

    A probe published before that would time the group join, not the path to p2."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{node_url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node_url} was not ready after {timeout:.0f} s")
        time.sleep(0.1)


def freshness(
    stack: devstack.Stack, work: Path, key: SigningKey, load: int, seconds: float
) -> dict[str, Any]:
    """Probe latencies (publish ack → served in p2; publish ack → bare consumer) under load."""
    region = Region(stack, work, key)
    node = region.start_worker("fresh")
    rng = random.Random(load)
    background = [
        release(key, f"load_{n % 2000:04d}", f"8.x-{1 + n // 2000}.{n % 7}", n + 1, rng)
        for n in range(int(load * (seconds + 5)))
    ]
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers(stack.broker_url), **PRODUCER_CONFIG}
    )
    bare = Consumer(
        {
            "bootstrap.servers": bootstrap_servers(stack.broker_url),
            "group.id": f"fresh-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 10,
            "log.connection.close": False,
        }
    )
    acked: dict[bytes, float] = {}
    bare_seen: dict[bytes, float] = {}
    node_seen: dict[bytes, float] = {}
    stop = threading.Event()

    def consume_bare() -> None:
        bare.assign([TopicPartition(region.topics.releases, p, -1) for p in range(PARTITIONS)])
        while not stop.is_set():
            for message in bare.consume(num_messages=500, timeout=0.05):
                key_bytes = message.key() or b""
                if key_bytes.startswith(b"drupal/probe_") and key_bytes not in bare_seen:
                    bare_seen[key_bytes] = time.monotonic()

    def on_ack(error: Any, message: Any) -> None:
        key_bytes = message.key() or b""
        if error is None and key_bytes.startswith(b"drupal/probe_"):
            acked[key_bytes] = time.monotonic()

    outstanding: list[bytes] = []
    lock = threading.Lock()

    # What the shipped nginx front serves: the worker's docroot. Watched on disk, so that
    # measuring does not load the node: polling its HTTP for every probe outstanding (a
    # hundred once it falls behind) took the worker's main thread from its records.
    listen = node.url.removeprefix("http://").replace(":", "-")
    docroot = region.path("fresh") / "nodes" / region.region / f"view-{listen}" / "docroot"

    def watch() -> None:
        while not stop.is_set() or outstanding:
            with lock:
                waiting = list(outstanding)
            for package in waiting:
                if (docroot / layout.p2_key(package.decode())).exists():
                    node_seen[package] = time.monotonic()
                    with lock:
                        outstanding.remove(package)
            if stop.is_set() and time.monotonic() > give_up:
                return
            time.sleep(0.005)

    # The group's backlog (log end - committed, every partition), once a second.
    backlog: list[tuple[float, int]] = []

    def sample_backlog() -> None:
        while not stop.is_set():
            try:
                positions = group_positions(
                    stack.broker_url, group_id(region.region, region.topics), region.topics.releases
                )
            except Exception:  # a slow answer: the next sample
                positions = []
            if positions:
                backlog.append((time.monotonic(), sum(p.behind for p in positions)))
            stop.wait(1.0)

    give_up = float("inf")
    reader = threading.Thread(target=consume_bare, daemon=True)
    reader.start()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_ready(node.url)
    time.sleep(1)  # the bare consumer is assigned
    sampler = threading.Thread(target=sample_backlog, daemon=True)
    try:
        started = time.monotonic()
        sampler.start()
        sent = probes = 0
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * load)
            while sent < min(due, len(background)):
                k, v = background[sent]
                producer.produce(region.topics.releases, v, k, on_delivery=on_ack)
                sent += 1
            if (now - started) * 10 >= probes:
                probe_key, probe_value = release(key, f"probe_{probes:05d}", "8.x-1.0", 1, rng)
                producer.produce(region.topics.releases, probe_value, probe_key, on_delivery=on_ack)
                producer.flush(5)
                with lock:
                    outstanding.append(probe_key)
                probes += 1
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(10)
    finally:
        give_up = time.monotonic() + 30
        stop.set()
        watcher.join(35)
        reader.join(5)
        sampler.join(15)
        bare.close()
        node.stop()
    ours = sorted(node_seen[k] - acked[k] for k in node_seen if k in acked)
    base = sorted(bare_seen[k] - acked[k] for k in bare_seen if k in acked)
    missing = len(acked) - len(ours)
    # Backlog growth: the slope of the backlog over the window (the first 2 s, while the
    # load starts, left out), in releases per second.
    steady = [(t - started, b) for t, b in backlog if t - started >= 2.0]
    growth = (
        statistics.linear_regression([t for t, _ in steady], [b for _, b in steady]).slope
        if len(steady) >= 3
        else float("nan")
    )
    return {
        "load": load,
        "probes": len(acked),
        "never_served": missing,
        "backlog_growth_per_second": growth,
        "backlog": [b for _, b in steady],
        "ours_p50": _quantile(ours, 0.5),
        "ours_p99": _quantile(ours, 0.99),
        "bare_p50": _quantile(base, 0.5),
        "bare_p99": _quantile(base, 0.99),
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def results(projects: int = PROJECTS, runs: int = RUNS) -> list[dict[str, Any]]:
    key = SigningKey.generate()
    records = make_stream(key, projects)
    with tempfile.TemporaryDirectory(prefix="fairstream-bench-node-") as tmp:
        work = Path(tmp)
        stack = devstack.up(work / "stack")
        try:
            figures = _figures(stack, work, key, records, projects, runs)
            if FULL_SIZE:
                del records  # the full size's own stream takes their place
                figures += full_size(stack, work)
            return figures
        finally:
            devstack.down(work / "stack")


def _figures(
    stack: devstack.Stack,
    work: Path,
    key: SigningKey,
    records: list[tuple[bytes, bytes]],
    projects: int,
    runs: int,
) -> list[dict[str, Any]]:
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    bare: list[float] = []

    def step(what: str) -> None:
        console.print(f"[bold]bench node[/]: {what}")

    ceiling: list[dict[str, Any]] = []
    for run in range(runs):
        step(f"bootstrap run {run + 1}/{runs}: one worker")
        one.append(bootstrap(stack, work, key, records, workers=1))
        step(f"bootstrap run {run + 1}/{runs}: the intake alone (the worker's consumer, no work)")
        ceiling.append(bootstrap(stack, work, key, records, workers=1, intake_alone=True))
        step(f"bootstrap run {run + 1}/{runs}: bare consumer")
        bare.append(bare_consume(stack, records))
        step(f"bootstrap run {run + 1}/{runs}: two workers")
        two.append(bootstrap(stack, work, key, records, workers=2))
    step("restore: a new frontend of a bootstrapped region")
    restored = restore(stack, work, key, records)
    fresh = []
    for load in FRESHNESS_LOADS:
        step(f"freshness at {load} releases/s")
        fresh.append(freshness(stack, work, key, load, FRESHNESS_SECONDS))

    rates = [run["releases_per_second"] for run in one]
    seconds = statistics.median(run["seconds"] for run in one)
    ratio = statistics.median(r / b for r, b in zip(rates, bare, strict=True))
    rate = statistics.median(rates)
    steady = statistics.median(run["steady_releases_per_second"] for run in one)
    fixed = statistics.median(run["seconds_to_first_commit"] for run in one)
    # The goal is for 300,000 releases: the start-up, then that many at the steady rate.
    projected = fixed + FULL_SIZE_RELEASES / steady if steady else FULL_SIZE_RELEASES / rate
    met = projected < 60 and rate >= 5000 and ratio >= 0.3
    figures = [
        figure(
            f"bootstrap, {projects:,} projects / {len(records):,} releases, metadata-only, "
            "one worker",
            unit="releases/s",
            ours=rates,
            baseline=bare,
            baseline_name=BARE_CONSUMER,
            goal="300,000 releases in < 60 s, >= 5,000 releases/s, >= 0.3x",
            met=met,
            gap="" if met else cpu_gap(median_run(one)),
            details={
                "seconds": [run["seconds"] for run in one],
                "projected_seconds_for_300000_releases": projected,
                "steady_releases_per_second": [run["steady_releases_per_second"] for run in one],
                "seconds_to_first_commit": [run["seconds_to_first_commit"] for run in one],
                "median_seconds": seconds,
                "peak_rss_mb": [run["peak_rss_mb"] for run in one],
                "p2_written": [run["p2_written"] for run in one],
                "p2_writes_per_package": [run["p2_writes_per_package"] for run in one],
                "states_written": [run["states_written"] for run in one],
                "releases": len(records),
                "packages": projects,
            },
        ),
        figure(
            "bootstrap, steady rate: from the first commit to the last (start-up excluded)",
            unit="releases/s",
            ours=[run["steady_releases_per_second"] for run in one],
            baseline=bare,
            baseline_name=BARE_CONSUMER,
            goal=">= 5,000 releases/s",
            met=steady >= 5000,
            gap="" if steady >= 5000 else cpu_gap(median_run(one)),
            details={
                "seconds_to_first_commit": [run["seconds_to_first_commit"] for run in one],
            },
        ),
        figure(
            "bootstrap's ceiling: the intake alone (the worker's consumer and commits, no work), "
            "whole run",
            unit="releases/s",
            # Whole runs: the records take well under a second after the group join,
            # below the 0.2 s at which committed offsets are sampled (no steady rate).
            ours=[run["releases_per_second"] for run in ceiling],
            baseline=bare,
            baseline_name=BARE_CONSUMER,
            goal="report: a worker cannot bootstrap faster than this",
            met=True,
            gap="",
            details={
                "seconds": [run["seconds"] for run in ceiling],
                "steady_releases_per_second": [
                    run["steady_releases_per_second"] for run in ceiling
                ],
                "seconds_to_first_commit": [run["seconds_to_first_commit"] for run in ceiling],
                "peak_rss_mb": [run["peak_rss_mb"] for run in ceiling],
            },
        ),
        figure(
            "scale-out: bootstrap with two workers vs one (2 cores)",
            unit="releases/s",
            ours=[run["releases_per_second"] for run in two],
            baseline=rates,
            baseline_name="the same bootstrap with one worker",
            goal="> 1.3x (issue 15; where the second core goes in the notes)",
            met=statistics.median(
                t["releases_per_second"] / o["releases_per_second"]
                for t, o in zip(two, one, strict=True)
            )
            > 1.3,
            gap=SCALE_GAP,
            details={
                "seconds": [run["seconds"] for run in two],
                "peak_rss_mb": [run["peak_rss_mb"] for run in two],
            },
        ),
    ]
    figures.append(
        restore_figure(
            f"restore: a new frontend of the region ({restored['packages']:,} packages) "
            "serving everything",
            restored,
            goal="report; < 60 s for a 300,000-release region",
        )
    )
    for result in fresh:
        if result["load"] >= BACKLOG_LOAD:
            # The backlog may grow by up to 1 % of the load a second (batches come and go).
            goal = "no backlog growth (< 1 % of the load a second); p99 reported"
            met = (
                result["backlog_growth_per_second"] < result["load"] / 100
                and result["never_served"] == 0
            )
        else:
            goal = "p99 < 0.5 s"
            met = result["ours_p99"] < 0.5 and result["never_served"] == 0
        figures.append(
            figure(
                f"freshness at {result['load']:,} releases/s: publish -> served in p2, p99",
                unit="s",
                ours=[result["ours_p99"]],
                baseline=[result["bare_p99"]],
                baseline_name="publish -> delivered to a bare consumer, p99",
                goal=goal,
                met=met,
                higher_is_better=False,
                gap="" if met else "see notes",
                details=result,
            )
        )
    return figures


def full_size(stack: devstack.Stack, work: Path) -> list[dict[str, Any]]:
    """The bootstrap at the issue's full size, run as such (not projected): one worker, a
    bare consumer and two workers, alternating, ``FULL_SIZE_RUNS`` times (a run takes a
    minute or two), each on its own region of one releases topic produced once (a topic of
    the full size is about 1 GB in the embedded broker's memory), with the CPU that each
    release cost in the steady phase, which bounds the rate this machine can reach; then a
    new frontend of the last two-worker region (the restore at full size)."""
    key = SigningKey.generate()
    records = make_stream(key, FULL_SIZE_PROJECTS)
    produced = Region(stack, work, key)
    ends = produce(stack.broker_url, produced.topics.releases, records)
    ones: list[dict[str, Any]] = []
    twos: list[dict[str, Any]] = []
    bares: list[float] = []
    for run in range(FULL_SIZE_RUNS):
        step = f"[bold]bench node[/]: full size, run {run + 1}/{FULL_SIZE_RUNS}"
        console.print(f"{step}: one worker")
        region = Region(stack, work, key, topics_of=produced)
        ones.append(bootstrap(stack, work, key, records, 1, region=region, ends=ends))
        console.print(f"{step}: bare consumer")
        bares.append(bare_consume(stack, records, (produced.topics.releases, ends)))
        console.print(f"{step}: two workers")
        region = Region(stack, work, key, topics_of=produced)
        twos.append(bootstrap(stack, work, key, records, 2, region=region, ends=ends))
    console.print("[bold]bench node[/]: full size, restore: a new frontend of the last region")
    restored = restore_frontend(stack, region, records)
    costs = bare_costs(key, records)
    bare = statistics.median(bares)
    figures = []
    for runs, workers in ((ones, "one worker"), (twos, "two workers")):
        rates = [run["releases_per_second"] for run in runs]
        run = median_run(runs)
        ratio = statistics.median(r / b for r, b in zip(rates, bares, strict=True))
        seconds = statistics.median(r["seconds"] for r in runs)
        met = seconds < 60 and statistics.median(rates) >= 5000 and ratio >= 0.3
        gap = "" if met else cpu_gap(run)
        if ratio < 0.3 and "cpu_us_per_release_broker" in run:
            gap = f"{gap.removesuffix('; see notes')}; {ratio_bound(bare, run, costs)}; see notes"
        figures.append(
            figure(
                f"bootstrap at full size, {FULL_SIZE_PROJECTS:,} projects / {len(records):,} "
                f"releases, metadata-only, {workers}, whole run",
                unit="releases/s",
                ours=rates,
                baseline=bares,
                baseline_name=BARE_CONSUMER,
                goal="< 60 s, >= 5,000 releases/s, >= 0.3x",
                met=met,
                gap=gap,
                details={
                    **run,
                    **costs,
                    "seconds": [r["seconds"] for r in runs],
                    "steady_releases_per_second": [r["steady_releases_per_second"] for r in runs],
                    "cpu_us_per_release_workers": [
                        r.get("cpu_us_per_release_workers") for r in runs
                    ],
                    "releases": len(records),
                    "packages": FULL_SIZE_PROJECTS,
                },
            )
        )
    scale = statistics.median(
        t["releases_per_second"] / o["releases_per_second"] for t, o in zip(twos, ones, strict=True)
    )
    figures.append(
        figure(
            "scale-out at full size: two workers vs one, whole runs",
            unit="releases/s",
            ours=[run["releases_per_second"] for run in twos],
            baseline=[run["releases_per_second"] for run in ones],
            baseline_name="the same full-size bootstrap with one worker",
            goal="> 1.3x (issue 15)",
            met=scale > 1.3,
            gap="" if scale > 1.3 else cpu_gap(median_run(twos)),
            details={
                "steady_ratio": [
                    t["steady_releases_per_second"] / o["steady_releases_per_second"]
                    for t, o in zip(twos, ones, strict=True)
                ],
            },
        )
    )
    figures.append(
        restore_figure(
            f"restore at full size: a new frontend of a {len(records):,}-release region "
            f"({FULL_SIZE_PROJECTS:,} packages) serving everything",
            restored,
            goal="< 60 s (issue 15)",
        )
    )
    return figures


def restore_figure(name: str, restored: dict[str, Any], *, goal: str) -> dict[str, Any]:
    """The row of a restore (``restore_frontend``): met when it served everything in < 60 s."""
    return figure(
        name,
        unit="s",
        ours=[restored["seconds"]],
        baseline=[restored["bare_seconds"]],
        baseline_name="a bare consumer reading the region's view topic to its end",
        goal=goal,
        met=restored["seconds"] < 60,
        higher_is_better=False,
        gap="",
        details=restored,
    )


#: Records of the stream measured by ``bare_costs``: enough for a steady figure, a second's work.
COST_SAMPLE = 3_000


def bare_costs(key: SigningKey, records: list[tuple[bytes, bytes]]) -> dict[str, float]:
    """What a release costs at the least, in this process, on a sample of ``records``: one
    bare Ed25519 verification of its signature (PyNaCl, through ``PublicKey.verifies``, as
    the worker calls it) and the bare decoding of its envelope and event (what the bare
    consumer does), in µs of this thread's CPU each (not wall time: the broker may still be
    busy meanwhile)."""
    sample = records[:: max(1, len(records) // COST_SAMPLE)]
    envelopes = [SignedEvent.from_bytes(value) for _, value in sample]
    public = key.public_key
    started = time.thread_time()
    for envelope in envelopes:
        if not public.verifies(envelope.payload, envelope.signatures[0].sig):
            raise RuntimeError("a benchmark release does not verify")
    verify = (time.thread_time() - started) / len(envelopes) * 1e6
    started = time.thread_time()
    for _, value in sample:
        decode_package_event(SignedEvent.from_bytes(value).payload)
    decode = (time.thread_time() - started) / len(sample) * 1e6
    return {"bare_verify_us": verify, "bare_decode_us": decode}


def ratio_bound(bare: float, run: dict[str, Any], costs: dict[str, float]) -> str:
    """What the ratio goal asks of this machine's cores, against the cost a release cannot
    shed: its signature's verification (the bare consumer verifies none) and its decoding."""
    cores = run["cores"]
    budget = cores * 1e6 / (0.3 * bare)
    floor = costs["bare_verify_us"] + costs["bare_decode_us"] + run["cpu_us_per_release_broker"]
    return (
        f"0.3x of the bare consumer is {0.3 * bare:,.0f} releases/s, at most {budget:.0f} us "
        f"of CPU a release on {cores} cores for everything; one bare Ed25519 verification "
        f"({costs['bare_verify_us']:.0f} us, which the bare consumer does not do), its "
        f"decoding ({costs['bare_decode_us']:.0f} us) and the broker's share alone take "
        f"{floor:.0f} us, leaving {budget - floor:.0f} us for applying, rendering, the "
        f"local view and the view record (ours: {run['cpu_us_per_release_workers']:.0f} us "
        "in all)"
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda run: run["releases_per_second"])
    return ordered[(len(ordered) - 1) // 2]


def cpu_gap(run: dict[str, Any]) -> str:
    """Why a bootstrap's rate is what it is, from its steady phase's CPU."""
    if "ceiling_releases_per_second" not in run:
        return "see notes"
    return (
        f"{run['seconds']:.0f} s; in the steady phase each release cost "
        f"{run['cpu_us_per_release_workers']:.0f} us of the workers' CPU and "
        f"{run['cpu_us_per_release_broker']:.0f} us of the broker's, so this machine's "
        f"{run['cores']} cores allow at most {run['ceiling_releases_per_second']:,.0f} "
        f"releases/s whatever the parallelism ({run['idle_cores']:.1f} cores idle meanwhile, "
        f"steady rate {run['steady_releases_per_second']:,.0f}/s); see notes"
    )


BARE_CONSUMER = "bare confluent-kafka consumer reading and decoding the same topic"
SCALE_GAP = (
    "two cores are shared by the broker, the benchmark and the workers: a second worker "
    "has no core of its own; see notes"
)


def set_view(view: str) -> None:
    """Benchmark regions keeping their view in ``view`` (``bucket`` or ``topic``)."""
    global VIEW
    VIEW = view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=PROJECTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--view", choices=["bucket", "topic"], default=VIEW)
    parser.add_argument(
        "--no-full-size", action="store_true", help="skip the bootstrap at full size"
    )
    args = parser.parse_args()
    global FULL_SIZE
    FULL_SIZE = not args.no_full_size
    set_view(args.view)
    for result in results(args.projects, args.runs):
        console.print(result)


if __name__ == "__main__":
    main()
