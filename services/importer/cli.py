"""The ``fairstream import`` command: a Composer repository into the releases topic, signed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console

from connectors.composer_repo import SourceLimits, packages_json_url
from connectors.kafka_topics import Topics
from schemas.errors import ConfigurationError
from services.cli.options import (
    BROKER_OPTION,
    DATA_DIR_OPTION,
    PARTITIONS_OPTION,
    SIGNERS_ROOT_OPTION,
    SIGNING_KEY_OPTION,
    TOPIC_PREFIX_OPTION,
    check_signers,
    read_file,
    signers_root,
)
from services.cli.options import broker_url as resolve_broker
from services.importer.checksums import load_checksums
from services.importer.display import RichImportProgress, summary_table
from services.importer.importer import import_repository
from services.importer.report import ImportReport
from services.importer.settings import ImportSettings
from services.publishing.trust_admin import signing_keys


def register(group: click.Group) -> None:
    """Add ``import`` to the ``fairstream`` command group."""
    group.add_command(import_command)


@click.command("import")
@click.argument("url")
@SIGNING_KEY_OPTION
@click.option(
    "--checksums",
    "checksums_path",
    type=click.Path(path_type=Path),
    help="JSON {dist URL path: {sha256, sha1, size}}: no zip listed there is downloaded.",
)
@click.option(
    "--packages",
    "packages_path",
    type=click.Path(path_type=Path),
    help="Package names to import, one per line  [default: the repository's available-packages]",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Requests per second to the source, zips included.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Requests to the source in flight at once.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the summary as a JSON document instead of a table (its fields: "
    "docs/operator-guide.md); the progress bar only on a terminal's stderr.",
)
@SIGNERS_ROOT_OPTION
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@DATA_DIR_OPTION
# Long because click passes each of the command's options as a parameter.
def import_command(
    url: str,
    key_paths: tuple[Path, ...],
    checksums_path: Path | None,
    packages_path: Path | None,
    rate: float,
    concurrency: int,
    as_json: bool,
    root_path: Path | None,
    broker: str | None,
    topic_prefix: str,
    partitions: int,
    data_dir: Path,
) -> None:
    """Publish one signed release per version of a Composer v2 repository; run again to resume.

    Reads packages.json, every p2/<name>.json and ~dev.json (minified or not), and signs each
    version with its Composer metadata and the original dist URL and sha1 as its origin. sha256
    and size come from --checksums, else from downloading the zip (its sha1 must be the p2
    shasum). Releases already on the topic are skipped, so an interrupted import resumes.

    \b
    Example: fairstream import https://packages.drupal.org/8 \\
      --packages drupal-projects.txt --key keys/drupal.key --rate 10
    """
    packages_json_url(url)  # a malformed URL is the user's mistake: say so before anything runs
    keys = signing_keys(key_paths)
    root = signers_root(root_path)
    checksums = (
        load_checksums(read_file(checksums_path, "checksums file"), source=str(checksums_path))
        if checksums_path is not None
        else None
    )
    packages = _package_names(packages_path) if packages_path is not None else None
    broker = resolve_broker(data_dir, broker)
    settings = ImportSettings(
        repository_url=url,
        broker_url=broker,
        keys=tuple(keys),
        topics=Topics.with_prefix(topic_prefix),
        partitions=partitions,
        packages=packages,
        checksums=checksums,
        limits=SourceLimits(rate=rate, concurrency=concurrency),
        check_signers=(
            None if root is None else lambda package: check_signers(keys, key_paths, root, package)
        ),
    )
    console = Console(soft_wrap=True, stderr=True)
    if as_json and not console.is_terminal:
        report = asyncio.run(import_repository(settings))
    else:
        with RichImportProgress(console) as progress:
            report = asyncio.run(import_repository(settings, observer=progress))
    if as_json:
        click.echo(orjson.dumps(summary_document(report), option=orjson.OPT_INDENT_2).decode())
    else:
        Console(soft_wrap=True).print(summary_table(report))


def summary_document(report: ImportReport) -> dict[str, Any]:
    """The ``--json`` summary (field names are stable): the table's figures, and each reason
    for skipping with its count, whether it counts releases or whole packages, and one
    example."""
    skipped = sorted(report.skipped.items(), key=lambda item: (-item[1], item[0]))
    return {
        "repository": report.repository,
        "packages": report.packages,
        "published": report.published,
        "skipped": [
            {
                "reason": reason.value,
                "counts": "packages" if reason.per_package else "releases",
                "count": count,
                "example": report.examples.get(reason, ""),
            }
            for reason, count in skipped
        ],
        "requests": report.requests,
        "retries": report.retries,
        "downloads": report.downloads,
        "elapsed_seconds": round(report.elapsed, 3),
    }


def _package_names(path: Path) -> tuple[str, ...]:
    """Names from a file, one per line; blank lines and ``#`` comments are passed over."""
    try:
        text = read_file(path, "package list").decode()
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"package list {path} is not UTF-8 text: {exc}") from exc
    names = tuple(
        line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()
    )
    if not names:
        raise ConfigurationError(
            f"package list {path} names no package; write one name per line, e.g. drupal/token"
        )
    return names
