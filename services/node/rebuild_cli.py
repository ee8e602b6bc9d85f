"""``fairstream node rebuild``: a region's package states and p2 documents re-derived from
the log and the store, and what was rebuilt shown as text or a JSON document.

``rebuild_node`` does the rebuild (with a progress bar) and ``show_rebuild`` prints its
outcome; the click command (``services.node.cli``) only turns its options into
``NodeRebuildOptions``. The work itself is ``streams.rebuild``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics
from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.store import open_store
from schemas import layout
from schemas.package_state import render_documents
from services.cli.options import pinned_root_file, stack_urls
from services.node.build import PolicyOptions, policy_from_options
from streams.node_settings import region_public_url
from streams.rebuild import (
    BucketTarget,
    RebuildReport,
    RebuildTarget,
    ViewTarget,
    log_partitions,
    read_region_view,
    rebuild_region,
)
from streams.trust_keeper import TrustKeeper


@dataclass(frozen=True)
class NodeRebuildOptions(PolicyOptions):
    """The options of ``fairstream node rebuild``, as click parses them: one field per
    parameter of the command (the policy's from ``PolicyOptions``), with its name and type.
    Their meaning is the command's ``--help``."""

    view: str
    region: str
    root_path: Path
    public_url: str
    bucket: str | None
    max_artifact_size: int
    as_json: bool
    broker: str | None
    store: str | None
    topic_prefix: str
    data_dir: Path


@dataclass(frozen=True)
class RebuiltRegion:
    """What ``rebuild_node`` did: the URL the region's p2 is rendered with from now on, and
    what it read and wrote."""

    public_url: str
    report: RebuildReport


def rebuild_node(options: NodeRebuildOptions, console: Console) -> RebuiltRegion:
    """Re-derive every package state and p2 document of the region from the releases topic
    (from offset 0) and its store, writing only what differs.

    The progress bar goes to ``console``; with ``--json`` to stderr instead, and only if
    that is a terminal, so that stdout is the document's alone. Raises
    ``ConfigurationError`` for a mistake in the options.
    """
    region = options.region
    broker_url, store_url = stack_urls(options.data_dir, options.broker, options.store)
    topics = Topics.with_prefix(options.topic_prefix)
    policy = policy_from_options(options)
    pinned = pinned_root_file(options.root_path)
    bootstrap_servers(broker_url)
    objects = open_store(store_url, options.bucket or layout.region_bucket(region))
    objects.ensure_bucket()
    keeper = TrustKeeper(pinned, store=objects, broker_url=broker_url, topic=topics.trust)
    keeper.load()
    keeper.refresh()
    # The region's workers render with the URL the rebuild renders with from now on.
    public_url = region_public_url(objects, options.public_url, options.public_url)
    producer = EventProducer(broker_url)
    # With --json, stdout is the document's alone: progress on a terminal's stderr, or none.
    shown = Console(stderr=True, soft_wrap=True) if options.as_json else console
    states = _target(options, objects, producer, public_url, broker_url, topics, shown)
    with Progress(
        TextColumn("[bold]rebuild {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=shown,
        disable=not shown.is_terminal and options.as_json,
    ) as progress:
        task = progress.add_task(region, total=None)
        report = rebuild_region(
            topics.releases,
            log_partitions(broker_url, topics.releases),
            store=objects,
            states=states,
            root=keeper.root,
            policy=policy,
            max_artifact_size=options.max_artifact_size,
            on_record=lambda: progress.advance(task),
        )
    producer.close()
    return RebuiltRegion(public_url=public_url, report=report)


def _target(
    options: NodeRebuildOptions,
    objects: ObjectStore,
    producer: EventProducer,
    public_url: str,
    broker_url: str,
    topics: Topics,
    shown: Console,
) -> RebuildTarget:
    """Where the rebuilt states go: the region's view topic (read first, with a spinner on
    ``shown``) or its bucket, as ``--view`` says."""
    if options.view == "topic":
        view_topic = topics.view(options.region)
        with shown.status(f"reading the view of region {options.region}"):
            current = read_region_view(broker_url, view_topic, producer)
        return ViewTarget(
            current,
            producer=producer,
            topic=view_topic,
            render=lambda state: render_documents(state, public_url),
        )
    return BucketTarget(
        objects,
        PackageStates(objects, render=lambda state: render_documents(state, public_url)),
    )


def show_rebuild(options: NodeRebuildOptions, rebuilt: RebuiltRegion, console: Console) -> None:
    """Print what was rebuilt: a JSON document on stdout with ``--json`` (its fields:
    docs/operator-guide.md), else a summary and its details on ``console``."""
    region = options.region
    report = rebuilt.report
    if options.as_json:
        document = {
            "region": region,
            "view": options.view,
            "public_url": rebuilt.public_url,
            "records": report.records,
            "packages": report.packages,
            "states_written": report.states_written,
            "documents_written": report.documents_written,
            "fetches_parked": report.fetches_parked,
            "removed": sorted(report.removed),
            "kept_from_earlier_roots": report.kept_from_earlier_roots,
            "refused": dict(sorted(report.refused.items())),
        }
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    console.print(
        f"rebuilt region {region}: {report.records} records, {report.packages} packages; "
        f"{report.states_written} states and {report.documents_written} p2 documents written, "
        f"{report.fetches_parked} zips parked for fetching, {len(report.removed)} packages removed"
    )
    if report.kept_from_earlier_roots:
        console.print(
            f"  {report.kept_from_earlier_roots} records kept as applied under an earlier root"
        )
    for reason, count in sorted(report.refused.items()):
        console.print(f"  {count} records refused: {reason}")
