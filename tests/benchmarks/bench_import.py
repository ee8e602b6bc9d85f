"""Import path: a metadata-only Composer catalogue into the releases topic vs bare confluent-kafka.

Run with ``make bench`` (or ``uv run python -m tests.benchmarks.bench_import --projects 1000``
for a quick trial). One run: the embedded stack (``infra.devstack``) in a temporary
directory, one generated catalogue (``generate_catalogue``, no zips, with ``checksums.json``
so nothing is downloaded) served by a real origin process (``infra.localnet.start_origin``),
then ``RUNS`` alternating pairs of:

- ours: ``import_repository`` of the whole catalogue into fresh topics (so the resumable
  import publishes everything again), timed from the call to its return;
- bare: the signed records that import just wrote, read back from the topic, produced to
  another fresh topic with a plain ``confluent_kafka.Producer`` in a tight loop and a flush.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.composer_repo import SourceLimits
from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_reading import _read_to_end
from connectors.kafka_topics import Topics, ensure_topics
from infra import devstack, localnet
from infra.devtools.catalogue import generate_catalogue
from schemas.events import decode_package_event
from schemas.signing import SignedEvent, SigningKey
from services.importer.checksums import load_checksums
from services.importer.display import RichImportProgress
from services.importer.importer import import_repository
from services.importer.settings import ImportSettings

#: The issue's size: about 295,000 releases. Override with ``--projects N`` for a quick trial.
PROJECTS = 30_000
RUNS = 2
SEED = 2026
PARTITIONS = 4
#: Towards a local origin the importer may press as hard as it can: the rate limit is not
#: what is measured. Concurrency is the importer's default.
LIMITS = SourceLimits(rate=1_000_000.0, concurrency=8)
#: The same delivery guarantees as ``connectors.kafka_producers.EventProducer``: the baseline differs
#: only in what our path does around the produce calls.
PRODUCER_CONFIG = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "log.connection.close": False,
}


def _peak_rss_mib() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read_back(broker_url: str, topic: str, total: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) of every record the import wrote; the key is the package, as it produces."""
    found = _read_to_end(
        broker_url, topic, dict.fromkeys(range(PARTITIONS), 0), limit=1 << 62, timeout=60.0
    )
    records = []
    for partition in sorted(found):
        for _, value in found[partition]:
            event = decode_package_event(SignedEvent.from_bytes(value).payload)
            records.append((event.package.encode(), value))
    if len(records) != total:
        raise RuntimeError(f"read back {len(records)} records from {topic}, expected {total}")
    return records


def _bare_produce(broker_url: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Seconds to produce ``records`` with a plain Producer, tight loop, then flush."""
    producer = Producer({"bootstrap.servers": bootstrap_servers(broker_url), **PRODUCER_CONFIG})
    try:
        began = time.perf_counter()
        for key, value in records:
            while True:
                try:
                    producer.produce(topic, key=key, value=value)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    producer.poll(0.05)
            producer.poll(0)
        remaining = producer.flush(120)
        elapsed = time.perf_counter() - began
    finally:
        producer.close()
    if remaining:
        raise RuntimeError(f"{remaining} bare records to {topic} not delivered")
    return elapsed


def results(projects: int = PROJECTS, runs: int = RUNS) -> list[dict[str, Any]]:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="fairstream-bench-import-") as tmp:
        work = Path(tmp)
        stack = devstack.up(work / "stack")
        origin = None
        try:
            port = localnet.free_port()
            source = f"http://127.0.0.1:{port}"
            catalogue = work / "catalogue"
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("generating catalogue (projects)", total=projects)
                began = time.perf_counter()
                summary = generate_catalogue(
                    catalogue,
                    projects=projects,
                    seed=SEED,
                    base_url=source,
                    zips=False,
                    workers=os.cpu_count() or 1,
                    progress=lambda done: progress.update(task, completed=done),
                )
                generation_seconds = time.perf_counter() - began
            console.print(
                f"catalogue: {summary.projects:,} projects, {summary.releases:,} releases "
                f"in {generation_seconds:.1f} s"
            )
            origin = localnet.start_origin(catalogue, log=work / "origin.log", port=port)
            checksums = load_checksums((catalogue / "checksums.json").read_bytes())
            key = SigningKey.generate()

            ours_rates: list[float] = []
            bare_rates: list[float] = []
            details: list[dict[str, Any]] = []
            for run in range(runs):
                label = f"bench-{uuid.uuid4().hex[:8]}-"
                topics = Topics.with_prefix(label)
                settings = ImportSettings(
                    repository_url=source,
                    broker_url=stack.broker_url,
                    keys=(key,),
                    topics=topics,
                    partitions=PARTITIONS,
                    checksums=checksums,
                    limits=LIMITS,
                )
                console.print(f"run {run + 1}/{runs}: import into {topics.releases}")
                with RichImportProgress(console) as observer:
                    began = time.perf_counter()
                    report = asyncio.run(import_repository(settings, observer=observer))
                    import_seconds = time.perf_counter() - began
                rss_after_import = _peak_rss_mib()
                if report.published != summary.releases or report.downloads:
                    raise RuntimeError(
                        f"import published {report.published} of {summary.releases} releases "
                        f"with {report.downloads} downloads; skipped: {dict(report.skipped)}"
                    )
                ours_rates.append(report.published / import_seconds)

                console.print(f"run {run + 1}/{runs}: reading back {report.published:,} records")
                records = _read_back(stack.broker_url, topics.releases, report.published)
                bare_topic = f"{label}bare"
                ensure_topics(stack.broker_url, {bare_topic: PARTITIONS})
                console.print(f"run {run + 1}/{runs}: bare produce into {bare_topic}")
                bare_seconds = _bare_produce(stack.broker_url, bare_topic, records)
                bare_rates.append(len(records) / bare_seconds)
                sizes = [len(value) for _, value in records]
                details.append(
                    {
                        "import_seconds": import_seconds,
                        "import_elapsed_reported": report.elapsed,
                        "source_requests": report.requests,
                        "bare_seconds": bare_seconds,
                        "records": len(records),
                        "record_bytes_total": sum(sizes),
                        "record_bytes_median": statistics.median(sizes),
                        "record_bytes_max": max(sizes),
                        "peak_rss_mib_after_import": rss_after_import,
                    }
                )
                console.print(
                    f"run {run + 1}/{runs}: ours {ours_rates[-1]:,.0f} releases/s "
                    f"({import_seconds:.1f} s), bare {bare_rates[-1]:,.0f} records/s "
                    f"({bare_seconds:.1f} s), ratio {ours_rates[-1] / bare_rates[-1]:.3f}"
                )
                del records
        finally:
            if origin is not None:
                origin.stop()
            devstack.down(work / "stack")
    ratios = [o / b for o, b in zip(ours_rates, bare_rates, strict=True)]
    return [
        {
            "figure": f"import, {projects:,}-project catalogue, metadata only",
            "ours": "import_repository from a local origin process: index, p2 + ~dev per "
            "package, plan, checksums, sign, produce with delivery reports",
            "baseline": "bare confluent-kafka produce of the same signed records",
            "unit": "releases/s",
            "projects": projects,
            "releases": summary.releases,
            "dev_releases": summary.dev_releases,
            "catalogue_generation_seconds": generation_seconds,
            "signatures_per_event": 1,
            "partitions": PARTITIONS,
            "source_concurrency": LIMITS.concurrency,
            "runs": runs,
            "ours_per_second": ours_rates,
            "bare_per_second": bare_rates,
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "peak_rss_mib_first_import": details[0]["peak_rss_mib_after_import"],
            "run_details": details,
            "goal": ">= 0.5",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=PROJECTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    began = time.perf_counter()
    for result in results(args.projects, args.runs):
        print(
            f"{result['figure']}: {result['releases']:,} releases; ours "
            f"{statistics.median(result['ours_per_second']):,.0f} releases/s, bare "
            f"{statistics.median(result['bare_per_second']):,.0f} records/s, median ratio "
            f"{result['median_ratio']:.3f} (goal {result['goal']}); catalogue generated in "
            f"{result['catalogue_generation_seconds']:.1f} s; peak RSS "
            f"{result['peak_rss_mib_first_import']:.0f} MiB; whole benchmark "
            f"{time.perf_counter() - began:.0f} s"
        )


if __name__ == "__main__":
    main()
