"""The main job on the embedded stack: a whole federation on one machine, from publish to composer.

Stack up, a publisher key, a handful of Drupal-shaped releases served by a
local origin, two regions (``eu``, ``us``) as two consumer groups, a wait until
both serve every release, a real ``composer require`` against one of them when
composer is installed, and a printed status of both regions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.progress import Progress

from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics, ensure_topics
from connectors.store import redact_url
from infra import devstack, localnet
from infra.devtools.sample_projects import sample_zip
from schemas.errors import FairstreamError
from schemas.signing import SigningKey
from services.cli.status import region_status, status_table
from services.publishing.publisher import build_release, publish_release
from services.publishing.trust_admin import DelegationSpec, build_root, write_key_pair


@dataclass(frozen=True)
class DemoRelease:
    project: str
    drupal_version: str
    require: dict[str, str]


DEMO_RELEASES = (
    DemoRelease("token", "8.x-1.8", {}),
    DemoRelease("token", "8.x-1.9", {}),
    DemoRelease("ctools", "8.x-3.14", {}),
    DemoRelease("pathauto", "8.x-1.12", {"drupal/token": "*", "drupal/ctools": "*"}),
    DemoRelease("redirect", "8.x-1.9", {}),
)
REGIONS = ("eu", "us")
PARTITIONS = 4
#: In the data directory while a demo owns the stack (it started it and will stop it).
DEMO_STACK_FILE = "demo-stack.json"
#: Signals that stop the demo as Ctrl-C (SIGINT) does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class DemoError(FairstreamError):
    """The demo could not complete a step; the message says which and where the logs are."""


def ensure_key(path: Path) -> SigningKey:
    """The demo publisher's key at ``path`` (``.key`` and ``.pub``), created on first use."""
    if path.exists():
        return SigningKey.from_json(path.read_bytes(), source=str(path))
    key = SigningKey.generate()
    write_key_pair(key, path)
    return key


def run_demo(data_dir: Path, console: Console, *, keep_running: bool = False) -> None:
    """Run the whole federation and print its status; stops what it started unless asked not to.

    Every run has its own topics, buckets and run directory, so a run never sees an
    earlier run's metadata (whose URLs name ports that are gone). SIGTERM, SIGHUP and
    SIGQUIT stop it as Ctrl-C does: the nodes, the origin and the stack it started are
    stopped before it exits; after SIGKILL the nodes and the origin stop with it and the
    next run stops the stack it left.

    Raises:
        DemoError: composer could not install from the region.
        StackError, LocalProcessError: the stack or a process did not start.
        KeyboardInterrupt: Ctrl-C (SystemExit(128 + signal) for the other signals), once
            everything is stopped.
    """
    started = time.monotonic()
    data_dir = data_dir.resolve()
    with _stopping_on_signals():
        # A stack someone else started (`fairstream dev up`, another demo still running) is
        # left running; one a killed demo could not stop is this run's to stop.
        leave_stack = _stack_runs(data_dir) and not _left_by_a_dead_demo(data_dir)
        processes: list[localnet.LocalProcess] = []
        try:
            if not leave_stack:
                _claim_stack(data_dir)
            _run(
                data_dir,
                console,
                processes,
                started=started,
                keep_running=keep_running,
                leave_stack=leave_stack,
            )
        finally:
            # A second Ctrl-C (or a signal from a supervisor) must not cut the clean-up short.
            with _signals_ignored():
                for process in reversed(processes):
                    process.stop()
                if not leave_stack:
                    devstack.down(data_dir)
                    (data_dir / DEMO_STACK_FILE).unlink(missing_ok=True)


# Long because the demo is one script: each step prints what it shows.
def _run(
    data_dir: Path,
    console: Console,
    processes: list[localnet.LocalProcess],
    *,
    started: float,
    keep_running: bool,
    leave_stack: bool,
) -> None:
    """The demo's steps; each process it starts is appended to ``processes`` at once."""
    stack = devstack.up(data_dir)
    if not leave_stack:
        _claim_stack(data_dir, stack)
    console.print(f"[bold]stack[/]: broker {stack.broker_url}, store {redact_url(stack.store_url)}")
    key_path = data_dir / "keys" / "drupal.key"
    key = ensure_key(key_path)
    root_key = ensure_key(data_dir / "keys" / "root.key")
    console.print(f"[bold]publisher key[/]: {key.public_key.keyid[:16]}… ({key_path})")
    run_dir = _new_run_dir(data_dir / "runs")
    root_path = run_dir / "root.avro"
    root = build_root(
        version=1,
        root_keys=[root_key.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (key.public_key,), 1)],
    )
    root_path.write_bytes(root.sign([root_key]))
    console.print(
        f"[bold]trust root[/]: v1 delegates drupal/* to drupal.org's key, expires "
        f"{root.expires:%Y-%m-%d} ({root_path})"
    )
    run_name = f"demo-{run_dir.name}"
    topics = Topics.with_prefix(f"{run_name}.")
    ensure_topics(stack.broker_url, topics.partitions(PARTITIONS))
    console.print(f"[bold]this run[/]: topics {run_name}.*, buckets {run_name}-REGION")

    origin_root = run_dir / "origin"
    zips = [
        sample_zip(origin_root / "files" / "projects", r.project, r.drupal_version, r.require)
        for r in DEMO_RELEASES
    ]
    origin = localnet.start_origin(
        origin_root, log=run_dir / "logs" / "origin.log", wait=False, die_with_parent=True
    )
    processes.append(origin)
    origin.wait_until_answering("/health")
    console.print(f"[bold]origin[/]: {origin.url} (stands in for ftp.drupal.org)")

    producer = EventProducer(stack.broker_url)
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("publishing releases", total=len(DEMO_RELEASES))
        for release, zip_path in zip(DEMO_RELEASES, zips, strict=True):
            event = build_release(
                package=f"drupal/{release.project}",
                drupal_version=release.drupal_version,
                zip_path=zip_path,
                origin_url=f"{origin.url}/files/projects/{zip_path.name}",
            )
            delivered = publish_release(event, [key], producer, topics.releases)
            progress.console.print(
                f"  published {event.package} {release.drupal_version} → {event.version} "
                f"at {delivered.topic}[{delivered.partition}]@{delivered.offset}"
            )
            progress.advance(task)
    producer.close()

    nodes = {}
    for region in REGIONS:
        node = localnet.start_node(
            region,
            broker_url=stack.broker_url,
            store_url=stack.store_url,
            root=root_path,
            data_dir=run_dir / f"node-{region}",
            topic_prefix=f"{run_name}.",
            partitions=PARTITIONS,
            # Not the region's own bucket (fairstream-eu): a region started later in this
            # data directory must not serve the demo's metadata, nor the demo an earlier one's.
            bucket=f"{run_name}-{region}",
            wait=False,
            die_with_parent=True,
        )
        processes.append(node)
        node.wait_until_answering("/health")
        nodes[region] = node
        console.print(f"[bold]node {region}[/]: {node.url}")

    wait_until_served(nodes, console, timeout=120.0)
    if shutil.which("composer"):
        site = run_dir / "site"
        result = localnet.composer_require(site, nodes["eu"].url, ["drupal/pathauto"])
        if result.returncode != 0:
            raise DemoError(
                f"composer require drupal/pathauto against region eu ({nodes['eu'].url}) "
                f"failed with exit code {result.returncode}; the node logs are in {run_dir}; "
                f"composer said:\n{result.stderr[-3000:]}"
            )
        installed = sorted(p.name for p in (site / "vendor" / "drupal").iterdir())
        console.print(
            f"[bold]composer require drupal/pathauto[/] against eu installed: "
            f"{', '.join(installed)} (in {site})"
        )
    else:
        console.print("composer is not installed: skipping the composer require step")

    console.print(
        status_table([region_status(stack.broker_url, topics, r, nodes[r].url) for r in REGIONS])
    )
    for region in REGIONS:
        url = nodes[region].url
        console.print(f"region {region}: status page {url}/status, metrics {url}/metrics")
    console.print(f"demo finished in {time.monotonic() - started:.1f} s")
    if keep_running:
        console.print("running; press Ctrl-C to stop the nodes and the stack")
        while all(p.alive() for p in processes):
            time.sleep(1)
        stopped = ", ".join(p.name for p in processes if not p.alive())
        raise DemoError(f"{stopped} stopped on its own; see the logs in {run_dir}")


def _new_run_dir(runs: Path) -> Path:
    """A new directory for one run, named by its start time (a suffix if one already is)."""
    runs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 100):
        run_dir = runs / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise DemoError(f"{runs} already holds 99 runs started at {stamp}; remove some")


def _stack_runs(data_dir: Path) -> bool:
    processes = devstack.status(data_dir)
    return bool(processes) and all(running for _, running in processes)


def _claim_stack(data_dir: Path, stack: devstack.Stack | None = None) -> None:
    """Record that this demo starts (and will stop) the stack: before it starts it, then
    with the stack's processes, so that a stack started later by someone else is not taken
    for the one a killed demo left."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pids = [process.pid for process in stack.processes] if stack is not None else []
    claim = {"pid": os.getpid(), "stack": pids}
    (data_dir / DEMO_STACK_FILE).write_text(json.dumps(claim) + "\n")


def _left_by_a_dead_demo(data_dir: Path) -> bool:
    """True if the running stack is the one a demo that no longer runs (killed) started."""
    try:
        claim = json.loads((data_dir / DEMO_STACK_FILE).read_text())
        pid, pids = int(claim["pid"]), [int(p) for p in claim["stack"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    running = [process.pid for process, _ in devstack.status(data_dir)]
    return pid != os.getpid() and not Path(f"/proc/{pid}").exists() and pids == running


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGQUIT end the demo as Ctrl-C does: clean-up runs, then it
    exits with 128 + the signal's number (Python's default would exit at once and leave
    every process it started running). A signal whose exception was swallowed is raised
    again once the block ends."""

    received: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    handled = (signal.SIGINT, *STOP_SIGNALS)
    previous = {signum: signal.signal(signum, stop) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    # Python runs a signal handler in whatever the main thread is running: inside a weakref
    # callback or a __del__ (logging's handler clean-up, measured once in CI), what it raises
    # is printed and swallowed, and the demo went on to exit 0. Raised again here.
    if received:
        if received[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + received[0])


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    handled = (signal.SIGINT, *STOP_SIGNALS)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait_until_served(
    nodes: dict[str, localnet.LocalProcess], console: Console, *, timeout: float
) -> None:
    """Poll every node's p2 documents until each serves every demo release."""
    wanted = {(f"drupal/{r.project}", r.drupal_version) for r in DEMO_RELEASES}
    deadline = time.monotonic() + timeout
    with Progress(console=console) as progress:
        tasks = {
            region: progress.add_task(f"region {region} in sync", total=len(wanted))
            for region in nodes
        }
        pending = {region: set(wanted) for region in nodes}
        while any(pending.values()):
            if time.monotonic() > deadline:
                raise localnet.LocalProcessError(
                    f"regions did not serve every release within {timeout:.0f} s: missing "
                    f"{ {r: sorted(p) for r, p in pending.items() if p} }; see the node logs"
                )
            for region, node in nodes.items():
                for package in {p for p, _ in pending[region]}:
                    served = localnet.fetch_p2_versions(node.url, package)
                    drupal_versions = {
                        str(e.get("dist", {}).get("reference")) for e in served.values()
                    }
                    done = {
                        (p, v) for p, v in pending[region] if p == package and v in drupal_versions
                    }
                    pending[region] -= done
                    progress.advance(tasks[region], len(done))
            time.sleep(0.3)
