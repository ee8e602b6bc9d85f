"""Showing an import: a progress bar while it runs, a summary table when it is done."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from services.importer.report import ImportReport

__all__ = ["RichImportProgress", "summary_table"]


class RichImportProgress:
    """A rich progress bar over packages, with the releases published and skipped so far."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "packages · {task.fields[published]} published · {task.fields[queued]} queued · "
                "{task.fields[skipped]} skipped"
            ),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._progress.add_task("import", total=None, published=0, queued=0, skipped=0)
        self._published = self._queued = self._skipped = 0

    def __enter__(self) -> RichImportProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def packages_found(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def package_done(self, package: str, *, releases: int, skipped: int) -> None:
        self._queued += releases
        self._skipped += skipped
        self._progress.update(self._task, advance=1, queued=self._queued, skipped=self._skipped)

    def published(self, count: int) -> None:
        self._published += count
        self._queued -= count
        self._progress.update(self._task, published=self._published, queued=self._queued)


def summary_table(report: ImportReport) -> Table:
    """The end-of-import summary: what was published and, per reason, what was skipped."""
    rate = report.published / report.elapsed if report.elapsed else 0.0
    table = Table(
        "outcome",
        "count",
        "example",
        title=Text(
            f"import of {report.repository}: {report.packages} packages in "
            f"{report.elapsed:.1f} s ({rate:.0f} releases/s; {report.requests} requests, "
            f"{report.retries} retried, {report.downloads} zips downloaded)"
        ),
    )
    table.columns[2].overflow = "fold"
    table.add_row("published", str(report.published), "")
    for reason, count in sorted(report.skipped.items(), key=lambda item: (-item[1], item[0])):
        unit = "packages" if reason.per_package else "releases"
        table.add_row(
            f"skipped: {reason.value}", f"{count} {unit}", Text(report.examples.get(reason, ""))
        )
    return table
