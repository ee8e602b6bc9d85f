"""The main job on the embedded stack: a whole federation on one machine, from publish to composer.

Stack up, a publisher key, a handful of Drupal-shaped releases served by a
local origin, two regions (``eu``, ``us``) as two consumer groups, a wait until
both serve every release, a real ``composer require`` against one of them when
composer is installed, and a printed status of both regions.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from connectors.kafka import EventProducer, Topics, ensure_topics
from connectors.store import redact_url
from infra import devstack, localnet
from schemas.signing import SigningKey
from services.publisher import build_release, publish_release
from services.sample_projects import sample_zip
from services.status import region_status, status_table
from services.trust_admin import DelegationSpec, build_root


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


def ensure_key(path: Path) -> SigningKey:
    """The demo publisher's key at ``path`` (``.key`` and ``.pub``), created on first use."""
    if path.exists():
        return SigningKey.from_json(path.read_bytes(), source=str(path))
    key = SigningKey.generate()
    write_key_pair(key, path)
    return key


def write_key_pair(key: SigningKey, private_path: Path) -> Path:
    """Write ``NAME.key`` (mode 600) and ``NAME.pub`` beside it; returns the public key's path."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(key.to_json())
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(key.public_key.to_json())
    return public_path


def run_demo(data_dir: Path, console: Console, *, keep_running: bool = False) -> None:
    """Run the whole federation and print its status; stops what it started unless asked not to."""
    started = time.monotonic()
    data_dir = data_dir.resolve()
    already_running = bool(devstack.status(data_dir)) and all(
        running for _, running in devstack.status(data_dir)
    )
    stack = devstack.up(data_dir)
    console.print(f"[bold]stack[/]: broker {stack.broker_url}, store {redact_url(stack.store_url)}")
    key_path = data_dir / "keys" / "drupal.key"
    key = ensure_key(key_path)
    root_key = ensure_key(data_dir / "keys" / "root.key")
    console.print(f"[bold]publisher key[/]: {key.public_key.keyid[:16]}… ({key_path})")
    run_dir = data_dir / "runs" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
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
    topics = Topics.with_prefix(f"demo-{run_dir.name}.")
    ensure_topics(stack.broker_url, topics.partitions(PARTITIONS))

    processes: list[localnet.LocalProcess] = []
    try:
        origin_root = run_dir / "origin"
        zips = [
            sample_zip(origin_root / "files" / "projects", r.project, r.drupal_version, r.require)
            for r in DEMO_RELEASES
        ]
        origin = localnet.start_origin(origin_root, log=run_dir / "logs" / "origin.log")
        processes.append(origin)
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
                topic_prefix=f"demo-{run_dir.name}.",
                partitions=PARTITIONS,
            )
            processes.append(node)
            nodes[region] = node
            console.print(f"[bold]node {region}[/]: {node.url}")

        wait_until_served(nodes, console, timeout=120.0)
        if shutil.which("composer"):
            site = run_dir / "site"
            result = localnet.composer_require(site, nodes["eu"].url, ["drupal/pathauto"])
            if result.returncode != 0:
                console.print(f"[red]composer require failed[/]:\n{result.stderr[-3000:]}")
            else:
                installed = sorted(p.name for p in (site / "vendor" / "drupal").iterdir())
                console.print(
                    f"[bold]composer require drupal/pathauto[/] against eu installed: "
                    f"{', '.join(installed)} (in {site})"
                )
        else:
            console.print("composer is not installed: skipping the composer require step")

        console.print(
            status_table(
                [region_status(stack.broker_url, topics, r, nodes[r].url) for r in REGIONS]
            )
        )
        for region in REGIONS:
            url = nodes[region].url
            console.print(f"region {region}: status page {url}/status, metrics {url}/metrics")
        console.print(f"demo finished in {time.monotonic() - started:.1f} s")
        if keep_running:
            console.print("running; press Ctrl-C to stop the nodes and the stack")
            while all(p.alive() for p in processes):
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(processes):
            process.stop()
        if not already_running:
            devstack.down(data_dir)


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
