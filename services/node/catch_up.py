"""A node's catch-up as its operator sees it: a progress bar on a terminal, else a log line now and then.

The node already measures how far behind it is for its heartbeats
(``streams.sync.StatusReporter``); ``CatchUpProgress`` listens to those
measurements. ``CatchUp`` is the pure part: the backlog found after the start
and how much of it is applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from schemas.federation import NodeStatus

log = logging.getLogger(__name__)

#: Without a terminal, at most one "catching up" log line per this many seconds.
LOG_EVERY_SECONDS = 30.0


@dataclass
class CatchUp:
    """The backlog a node works through after it starts, from its successive lag readings.

    ``applied`` only grows (by each drop of the lag) and ``total`` is ``applied +
    behind``, so events published meanwhile lengthen the bar instead of moving it back.
    The catch-up is over (``done``) at the first reading in sync: later lag is the
    steady state that heartbeats and ``fairstream status`` report.
    """

    applied: int = 0
    behind: int = 0
    #: The last count of events behind is a lower bound (counting stopped at a limit).
    lower_bound: bool = False
    readings: int = 0
    done: bool = False

    @property
    def total(self) -> int:
        return self.applied + self.behind

    def observe(self, behind: int, *, lower_bound: bool = False) -> None:
        """Take one reading of the events behind; ignored once the catch-up is done."""
        if self.done:
            return
        if self.readings:
            self.applied += max(0, self.behind - behind)
        self.behind, self.lower_bound = behind, lower_bound
        self.readings += 1
        self.done = behind == 0

    def describe(self) -> str:
        """``4000+ events behind, 120 applied`` as a person reads it."""
        more = "+" if self.lower_bound else ""
        return f"{self.behind}{more} events behind, {self.applied} applied since the start"


class CatchUpProgress:
    """Shows a node's catch-up from its measured statuses (give ``observe`` to the reporter).

    On a terminal: a progress bar on ``console`` (stderr) while the node is behind, removed
    once it is in sync; log lines written meanwhile scroll above it. Elsewhere: a log line
    every ``log_every`` seconds while behind, and one when in sync.
    """

    def __init__(
        self,
        console: Console,
        *,
        log_every: float = LOG_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catch_up = CatchUp()
        self._log_every = log_every
        self._clock = clock
        self._logged_at: float | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]catching up"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("events"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> CatchUpProgress:
        # Started before the worker sets up logging, so that its log handler writes through
        # the progress display (above the bar) rather than over it.
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None and self._progress.live.is_started:
            self._progress.stop()

    def observe(self, status: NodeStatus) -> None:
        """Take the lag of one measured status (called from the heartbeat's thread)."""
        if self.catch_up.done:
            return
        self.catch_up.observe(status.events_behind, lower_bound=status.behind_is_lower_bound)
        if self._progress is not None:
            self._show()
        else:
            self._log()

    def _show(self) -> None:
        assert self._progress is not None
        if self.catch_up.done:
            self._stop()
            return
        if self._task is None:
            self._task = self._progress.add_task("catch-up", total=self.catch_up.total)
        self._progress.update(
            self._task, total=self.catch_up.total, completed=self.catch_up.applied
        )

    def _log(self) -> None:
        if self.catch_up.done:
            if self.catch_up.readings > 1:
                log.info("caught up: %d events applied since the start", self.catch_up.applied)
            return
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self._log_every:
            self._logged_at = now
            log.info("catching up: %s", self.catch_up.describe())
