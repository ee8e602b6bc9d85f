"""The ``fairstream catalogue`` commands: write a synthetic Drupal catalogue to serve and import."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from infra.devtools.catalogue import MAX_PROJECTS, CatalogueSummary, generate_catalogue
from schemas.errors import ConfigurationError

__all__ = ["catalogue", "register"]

console = Console(soft_wrap=True)
_MAX_DEFAULT_WORKERS = 8


def register(group: click.Group) -> None:
    """Add the ``catalogue`` commands to the ``fairstream`` command group."""
    group.add_command(catalogue)


@click.group()
def catalogue() -> None:
    """Synthetic Drupal-like Composer repositories, deterministic from a seed.

    \b
    Example: fairstream catalogue generate ./catalogue --projects 200 --seed 7 \\
      --base-url http://127.0.0.1:8000 --zips
    """


@catalogue.command("generate")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--projects",
    type=int,
    required=True,
    help=f"How many projects (1 to {MAX_PROJECTS:,}); about 10 releases each.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--base-url",
    required=True,
    help="Where OUT will be served: dist URLs are BASE_URL/files/projects/<project>-<version>.zip.",
)
@click.option(
    "--zips/--no-zips",
    default=False,
    show_default=True,
    help="Write the release zips (about 4 MB per project on average, a few KB to 30 MB "
    "each), or metadata only: then the dist URLs, sha1 and sha256 describe no file.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace a catalogue already in OUT (packages.json, checksums.json, p2/drupal/, "
    "files/projects/).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help=f"Processes writing projects in parallel  [default: the CPUs, at most {_MAX_DEFAULT_WORKERS}]",
)
# Long because click passes each of the command's options as a parameter.
def generate(
    out: Path,
    projects: int,
    seed: int,
    base_url: str,
    zips: bool,
    force: bool,
    workers: int | None,
) -> None:
    """Write a Composer v2 repository of PROJECTS synthetic Drupal projects to OUT.

    OUT gets packages.json, p2/drupal/<name>.json and ~dev.json, checksums.json (sha256, sha1
    and size of every zip, by dist URL path) and, with --zips, files/projects/*.zip. Serve it
    with `fairstream origin serve OUT`.

    \b
    Example: fairstream catalogue generate ./catalogue --projects 30000 --seed 1 \\
      --base-url http://127.0.0.1:8000 --no-zips
    """
    workers = workers or min(_MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
    started = time.monotonic()
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("writing projects", total=projects)

    def show(done: int) -> None:
        # The first call comes once the arguments are checked: no bar above an error.
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=done)

    try:
        summary = generate_catalogue(
            out,
            projects=projects,
            seed=seed,
            base_url=base_url,
            zips=zips,
            replace=force,
            workers=workers,
            progress=show,
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the catalogue to {out}: {exc.strerror} ({exc.filename}); choose an "
            "OUT directory you may write to, on a disk with room for it"
        ) from exc
    finally:
        if progress.live.is_started:
            progress.stop()
    console.print(summary_table(out, summary, seconds=time.monotonic() - started, zips=zips))
    if not zips:
        console.print("Metadata only: the dist URLs point at no file.", highlight=False)
    parts = urlsplit(base_url)
    if parts.hostname and parts.port and parts.path.strip("/") == "":
        console.print(
            f"Serve it with: fairstream origin serve {out} --listen {parts.hostname}:{parts.port}",
            markup=False,
            highlight=False,
        )


def summary_table(out: Path, summary: CatalogueSummary, *, seconds: float, zips: bool) -> Table:
    """What a generation wrote, as a two-column table."""
    table = Table("", "", title=Text(f"catalogue in {out}"), show_header=False)
    table.add_row("projects", f"{summary.projects:,}")
    table.add_row(
        "releases",
        f"{summary.releases:,} ({summary.releases - summary.dev_releases:,} tagged, "
        f"{summary.dev_releases:,} dev)",
    )
    table.add_row("zips written" if zips else "zips", _size(summary.zip_bytes) if zips else "none")
    table.add_row("catalogued zip bytes", _size(summary.catalogued_bytes))
    table.add_row("files written", f"{summary.files_written:,}")
    table.add_row("time", f"{seconds:.1f} s")
    return table


def _size(count: int) -> str:
    if count < 1000:
        return f"{count:,} bytes"
    value, unit = count / 1000, "KB"
    for bigger in ("MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{value:,.1f} {unit}"
