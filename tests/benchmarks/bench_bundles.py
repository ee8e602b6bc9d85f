"""Bundle export and import (issue 19) against copying the same bytes with ``tar``.

A network of metadata records (releases signed as the importer would, on 4 partitions) and
zips in its bucket on the embedded stack. Ours: ``fairstream bundle export`` of it, and
``fairstream bundle import`` of that bundle into a fresh network on the same stack, each a
process of its own (peak RSS from its rusage). Baseline, in the same run, alternating:
``tar -cf`` of the bucket's zip files as the store holds them on disk, and ``tar -xf`` of
that archive into a fresh folder. The ratio is the baseline's time over ours (above 1:
ours is faster). Ours moves the zips through the S3 API and the records through the broker,
and checks every digest; the baseline copies files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any
from uuid import uuid4

from rich.console import Console

from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics, ensure_topics
from connectors.store import S3Store, StoreLocation
from infra import devstack
from infra.devtools.sample_projects import sample_zip
from schemas import layout
from schemas.signing import SigningKey, seal
from services.publishing.publisher import build_release
from services.publishing.trust_admin import write_key_pair
from tests.benchmarks.figures import figure, peak_rss_mb
from tests.roots import write_drupal_root

MB = 1024 * 1024
ZIPS = 40
ZIP_SIZE = 10 * MB
RECORDS = 4_000
RUNS = 3


def _timed(command: list[str]) -> tuple[float, float]:
    """Run ``command``; its wall time in seconds and its peak RSS in MiB.

    The peak is the program's own memory's high-water mark (``VmHWM``), read while it runs:
    the rusage of a child counts the RSS of the process that forked it (Linux carries
    ``maxrss`` over the fork), and this process may be large after the other suites."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while True:
        pid, status = os.waitpid(process.pid, os.WNOHANG)
        if pid:
            break
        with contextlib.suppress(OSError, ValueError):
            peak = max(peak, peak_rss_mb(process.pid))
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(
            f"{command[:4]} failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    return seconds, peak


def _network(work: Path, stack: devstack.Stack, console: Console) -> tuple[Topics, str, Path]:
    """The connected network: records on its topics, zips in its bucket; its root file."""
    topics = Topics.with_prefix(f"bench-{uuid4().hex[:8]}.")
    ensure_topics(stack.broker_url, topics.partitions(4))
    bucket = f"bundle-bench-{uuid4().hex[:8]}"
    store = S3Store(StoreLocation.from_url(stack.store_url), bucket)
    store.ensure_bucket()
    publisher, root_key = SigningKey.generate(), SigningKey.generate()
    root_file = work / "root.avro"
    write_drupal_root(root_file, publisher, root_key)
    producer = EventProducer(stack.broker_url)
    zips = work / "zips"
    zips.mkdir()
    records = []
    for n in range(RECORDS):
        project = f"bench{n % 500}"
        path = sample_zip(zips, project, f"8.x-1.{n}", {})
        if n < ZIPS:  # a zip of the size a module's release has, incompressible
            with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(f"{project}/assets.bin", os.urandom(ZIP_SIZE))
        event = build_release(
            package=f"drupal/{project}",
            drupal_version=f"8.x-1.{n}",
            zip_path=path,
            origin_url=f"https://ftp.drupal.org/files/projects/{path.name}",
        )
        if n < ZIPS:
            store.put_file(
                layout.artifact_key(event.artifact.sha256), path, content_type="application/zip"
            )
        path.unlink()
        records.append((event.package.encode(), seal(event.to_bytes(), [publisher])))
    producer.produce_many(topics.releases, records)
    producer.close()
    console.print(f"bundle set: {RECORDS} records, {ZIPS} zips of {ZIP_SIZE // MB} MB")
    return topics, bucket, root_file


def results() -> list[dict[str, Any]]:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="fairstream-bench-bundles-") as tmp:
        work = Path(tmp)
        stack = devstack.up(work / "stack")
        try:
            topics, bucket, root_file = _network(work, stack, console)
            key_file = work / "exporter.key"
            write_key_pair(SigningKey.generate(), key_file)
            cli = [sys.executable, "-m", "services.cli"]
            prefix = topics.releases.removesuffix("fair.releases")
            bucket_dir = stack.data_dir / "s3" / bucket / "artifacts"
            export_s, import_s, tar_s, untar_s = [], [], [], []
            export_rss, import_rss = [], []
            size = 0
            for run in range(RUNS):
                bundle = work / f"bundle-{run}.tar"
                seconds, rss = _timed(
                    [*cli, "bundle", "export", "--region", "up", "--bucket", bucket,
                     "--root", str(root_file), "--key", str(key_file), "--out", str(bundle),
                     "--broker", stack.broker_url, "--store", stack.store_url,
                     "--topic-prefix", prefix, "--json"]
                )  # fmt: skip
                export_s.append(seconds)
                export_rss.append(rss)
                size = bundle.stat().st_size
                archive = work / f"plain-{run}.tar"
                tar_s.append(_timed(["tar", "-cf", str(archive), "-C", str(bucket_dir), "."])[0])
                seconds, rss = _timed(
                    [*cli, "bundle", "import", str(bundle), "--region", "down",
                     "--bucket", f"bundle-import-{run}-{uuid4().hex[:6]}",
                     "--exporter", str(key_file.with_suffix(".pub")),
                     "--broker", stack.broker_url, "--store", stack.store_url,
                     "--topic-prefix", f"bench-import-{run}-{uuid4().hex[:6]}.", "--json"]
                )  # fmt: skip
                import_s.append(seconds)
                import_rss.append(rss)
                target = work / f"untar-{run}"
                target.mkdir()
                untar_s.append(_timed(["tar", "-xf", str(archive), "-C", str(target)])[0])
                console.print(
                    f"run {run + 1}: export {export_s[-1]:.1f} s (tar {tar_s[-1]:.1f} s), import "
                    f"{import_s[-1]:.1f} s (untar {untar_s[-1]:.1f} s), peak RSS "
                    f"{export_rss[-1]:.0f} / {import_rss[-1]:.0f} MB"
                )
                for path in (bundle, archive):
                    path.unlink()
                shutil.rmtree(target)
        finally:
            devstack.down(work / "stack")
    details = {"bundle_mb": size / MB, "records": RECORDS, "zips": ZIPS, "zip_mb": ZIP_SIZE / MB}
    worst_rss = max(export_rss + import_rss)
    return [
        figure(
            f"bundle export, {RECORDS:,} records and {ZIPS * ZIP_SIZE // MB} MB of zips",
            unit="s",
            ours=export_s,
            baseline=tar_s,
            baseline_name="tar -cf of the same zip files as the store holds them on disk",
            goal="report (issue 19); peak RSS < 256 MB",
            met=max(export_rss) < 256,
            higher_is_better=False,
            gap="" if max(export_rss) < 256 else f"peak RSS {max(export_rss):.0f} MB",
            details={**details, "peak_rss_mb": export_rss},
        ),
        figure(
            f"bundle import, {RECORDS:,} records and {ZIPS * ZIP_SIZE // MB} MB of zips",
            unit="s",
            ours=import_s,
            baseline=untar_s,
            baseline_name="tar -xf of the same zips into a folder",
            goal="report (issue 19); peak RSS < 256 MB",
            met=max(import_rss) < 256,
            higher_is_better=False,
            gap="" if max(import_rss) < 256 else f"peak RSS {max(import_rss):.0f} MB",
            details={**details, "peak_rss_mb": import_rss, "worst_peak_rss_mb": worst_rss},
        ),
    ]
