"""``fairstream bundle``: export the log and zips to a signed file; import it on the other side."""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.kafka_connection import bootstrap_servers
from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics
from connectors.store import open_store
from schemas import layout
from schemas.bundle import Manifest
from schemas.errors import ConfigurationError
from schemas.signing import PublicKey, SigningKey
from services.bundles.export import export_bundle, read_manifest
from services.bundles.load import load_bundle
from services.cli.options import (
    BROKER_OPTION,
    DATA_DIR_OPTION,
    STORE_OPTION,
    TOPIC_PREFIX_OPTION,
    pinned_root_file,
    read_file,
    stack_urls,
)
from services.publishing.trust_admin import read_key
from streams.trust_keeper import TrustKeeper

console = Console(soft_wrap=True)


def register(group: click.Group) -> None:
    """Add ``bundle`` (export, import) to ``group``."""
    group.add_command(bundle)


@click.group()
def bundle() -> None:
    """Signed bundles: the log and its zips carried into a network with no Kafka link
    (docs/sovereignty.md)."""


def _progress(shown: Console, as_json: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=shown,
        disable=not shown.is_terminal or as_json,
    )


@bundle.command("export")
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="The bundle file to write."
)
@click.option(
    "--since",
    "since",
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The previous bundle: this one carries what came after it, and chains to it  "
    "[default: the first bundle, from offset 0]",
)
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The exporting node's private key (its `--node-key`): the importing side pins its "
    "public key.",
)
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The pinned trust root; the manifest records the root in force and its expiry.",
)
@click.option("--region", required=True, help="The region whose store holds the zips.")
@click.option("--bucket", default=None, help="The region's bucket  [default: fairstream-REGION]")
@click.option(
    "--include", multiple=True, metavar="PATTERN", help="Carry only these packages' zips."
)
@click.option(
    "--exclude", multiple=True, metavar="PATTERN", help="Never carry these packages' zips."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as a JSON document.")
@BROKER_OPTION
@STORE_OPTION
@TOPIC_PREFIX_OPTION
@DATA_DIR_OPTION
# Long because click passes each of the command's options as a parameter.
def export_command(
    out: Path,
    since: Path | None,
    key_path: Path,
    root_path: Path,
    region: str,
    bucket: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
    broker: str | None,
    store: str | None,
    topic_prefix: str,
    data_dir: Path,
) -> None:
    """Write the log (trust roots, releases, yanks, expunges, advisories: the original
    signed records with their offsets) and the zips it references into one signed file.

    \b
    Example: fairstream bundle export --region eu --root root.avro --key node.key \\
      --out bundle-0001.tar
    Example: fairstream bundle export --region eu --root root.avro --key node.key \\
      --since bundle-0001.tar --out bundle-0002.tar
    """
    key = read_key(key_path)
    if not isinstance(key, SigningKey):
        raise ConfigurationError(f"{key_path} is a public key; give the node's private key")
    broker_url, store_url = stack_urls(data_dir, broker, store)
    topics = Topics.with_prefix(topic_prefix)
    bootstrap_servers(broker_url)
    objects = open_store(store_url, bucket or layout.region_bucket(region))
    keeper = TrustKeeper(
        pinned_root_file(root_path), store=objects, broker_url=broker_url, topic=topics.trust
    )
    keeper.load()
    keeper.refresh()
    previous = read_manifest(_bundle_file(since, "previous bundle")) if since else None

    def carried(package: str) -> bool:
        wanted = not include or any(fnmatch.fnmatchcase(package, p) for p in include)
        return wanted and not any(fnmatch.fnmatchcase(package, p) for p in exclude)

    with _progress(console, as_json) as progress:
        records = progress.add_task("records", total=None)
        zips = progress.add_task("zips", total=None)
        report = export_bundle(
            broker_url=broker_url,
            topics=topics,
            store=objects,
            key=key,
            out=out,
            root=keeper.root,
            previous=previous,
            carries_zip=carried,
            on_record=lambda: progress.advance(records),
            on_zip=lambda size: progress.advance(zips, size),
        )
    manifest = report.manifest
    summary = {
        "bundle": str(out),
        "sequence": manifest.sequence,
        "records": report.records,
        "zips": len(manifest.zips),
        "zip_bytes": report.zip_bytes,
        "zips_not_held": report.missing,
        **freshness(manifest, datetime.now(UTC)),
        "manifest_sha256": manifest.digest,
    }
    _show(summary, as_json)


@bundle.command("import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--exporter",
    "exporter_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="The public key (.pub) of a node whose bundles this network imports (repeatable).",
)
@click.option("--region", required=True, help="The region whose store receives the zips.")
@click.option("--bucket", default=None, help="The region's bucket  [default: fairstream-REGION]")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as a JSON document.")
@BROKER_OPTION
@STORE_OPTION
@TOPIC_PREFIX_OPTION
@DATA_DIR_OPTION
# Long because click passes each of the command's options as a parameter.
def import_command(
    path: Path,
    exporter_paths: tuple[Path, ...],
    region: str,
    bucket: str | None,
    as_json: bool,
    broker: str | None,
    store: str | None,
    topic_prefix: str,
    data_dir: Path,
) -> None:
    """Check a bundle whole (signature, chain, every member), then put its zips into the
    region's store and its records into the local broker at their original offsets. The
    nodes verify every record against their pinned trust root, as online.

    \b
    Example: fairstream bundle import bundle-0001.tar --region eu --exporter upstream.pub
    """
    _bundle_file(path, "bundle")
    exporters = {}
    for exporter_path in exporter_paths:
        exporter = PublicKey.from_json(
            read_file(exporter_path, "exporter's public key"), source=str(exporter_path)
        )
        exporters[exporter.keyid] = exporter
    broker_url, store_url = stack_urls(data_dir, broker, store)
    bootstrap_servers(broker_url)
    objects = open_store(store_url, bucket or layout.region_bucket(region))
    objects.ensure_bucket()
    producer = EventProducer(broker_url)
    try:
        with _progress(console, as_json) as progress:
            records = progress.add_task("records", total=None)
            zips = progress.add_task("zips", total=None)
            report = load_bundle(
                path,
                broker_url=broker_url,
                topics=Topics.with_prefix(topic_prefix),
                store=objects,
                exporters=exporters,
                producer=producer,
                on_record=lambda: progress.advance(records),
                on_zip=lambda size: progress.advance(zips, size),
            )
    finally:
        producer.close()
    manifest = report.manifest
    _show(
        {
            "bundle": str(path),
            "sequence": manifest.sequence,
            "imported": report.imported,
            "records": report.records,
            "records_already_there": report.records_present,
            "zips": report.zips,
            "zips_already_there": report.zips_present,
            **freshness(manifest, datetime.now(UTC)),
            "manifest_sha256": manifest.digest,
        },
        as_json,
    )


def _bundle_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; a ``ConfigurationError`` naming it otherwise."""
    if not path.is_file():
        raise ConfigurationError(f"the {what} {path} does not exist or is not a file")
    return path


def freshness(manifest: Manifest, now: datetime) -> dict[str, object]:
    """The freshness window a bundle's manifest states, for its summary: ``covers``, the span
    of its records' own times (None for a bundle with no new record), and ``trust_root``, the
    root in force at the exporter, its expiry and whether it has expired by ``now``. A
    disconnected node under an expired root applies nothing new (it freezes, as online) until
    a bundle carries a newer root."""
    expires = manifest.root_expires
    return {
        "covers": {"from": manifest.covers_from, "to": manifest.covers_to},
        "trust_root": {
            "version": manifest.root_version,
            "expires": expires,
            "expired": expires is not None and expires <= now,
        },
    }


def summary_lines(summary: dict[str, object]) -> list[str]:
    """A command's summary as the lines a person reads: ``name: value``, the freshness
    window in words (``--json`` prints the same fields as they are)."""
    lines = []
    for name, value in summary.items():
        if name == "covers" and isinstance(value, dict):
            text = _span_text(value["from"], value["to"])
        elif name == "trust_root" and isinstance(value, dict):
            text = _root_text(value["version"], value["expires"], value["expired"])
        else:
            text = str(value)
        lines.append(f"{name}: {text}")
    return lines


def _moment_text(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _span_text(first: datetime | None, last: datetime | None) -> str:
    if first is None or last is None:
        return "no new records"
    return f"records from {_moment_text(first)} to {_moment_text(last)}"


def _root_text(version: int, expires: datetime | None, expired: bool) -> str:
    if expires is None:
        return f"v{version}, expiry not stated"
    if expired:
        return (
            f"v{version}, expired {_moment_text(expires)}: the nodes apply nothing new (they "
            "freeze, as online) until a bundle carries a newer root"
        )
    return f"v{version}, expires {_moment_text(expires)}"


def _show(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z))
        return
    for line in summary_lines(summary):
        console.print(line, highlight=False, markup=False)
