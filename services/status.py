"""Sync state of regions as a person reads it: a table of each region's position in the log."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from connectors.kafka import (
    Topics,
    group_positions,
    read_partition,
    records_after,
    topic_partitions,
)
from schemas.errors import RejectedError
from schemas.federation import NodeBook
from services.status_pages import node_rows
from streams.node import group_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionStatus:
    """One region's sync state: committed events and the events still to apply."""

    region: str
    url: str | None
    healthy: bool | None
    committed: int
    behind: int
    behind_is_lower_bound: bool
    trust_root: int | None = None

    @property
    def state(self) -> str:
        if self.healthy is False:
            return "down"
        if self.behind == 0:
            return "in sync"
        more = "+" if self.behind_is_lower_bound else ""
        return f"behind by {self.behind}{more} events"


def region_status(
    broker_url: str, topics: Topics, region: str, url: str | None = None, *, limit: int = 10_000
) -> RegionStatus:
    """Read a region's committed offsets and count, by reading, the records it has not committed.

    Raises ``BrokerUnavailableError``.
    """
    positions = group_positions(broker_url, group_id(region), topics.releases)
    committed = {p.partition: p.committed or 0 for p in positions}
    remaining = records_after(broker_url, topics.releases, committed, limit=limit)
    health = _health(url) if url else None
    root = health.get("trust_root") if health else None
    return RegionStatus(
        region=region,
        url=url,
        healthy=None if url is None else health is not None and health.get("status") == "ok",
        trust_root=root.get("version") if isinstance(root, dict) else None,
        committed=sum(committed.values()),
        behind=sum(remaining.values()),
        behind_is_lower_bound=any(count >= limit for count in remaining.values()),
    )


def _health(url: str) -> dict[str, Any] | None:
    """The node's /health document, or None if it does not answer."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=3) as response:
            document = orjson.loads(response.read())
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def status_table(statuses: Sequence[RegionStatus]) -> Table:
    table = Table(title="fairstream regions")
    for column in ("region", "url", "health", "trust root", "committed events", "state"):
        # URLs are what a person copies: never cut them short.
        table.add_column(column, no_wrap=column == "url", min_width=22 if column == "url" else None)
    for status in statuses:
        health = {True: "[green]up[/]", False: "[red]down[/]", None: "-"}[status.healthy]
        colour = "green" if status.state == "in sync" else "yellow"
        table.add_row(
            status.region,
            status.url or "-",
            health,
            f"v{status.trust_root}" if status.trust_root is not None else "-",
            str(status.committed),
            f"[{colour}]{status.state}[/]",
        )
    return table


def read_node_book(broker_url: str, topic: str) -> NodeBook:
    """Every node's verified registration and last heartbeat, read from the status topic.

    A record that does not verify is passed over (logged). Raises ``BrokerUnavailableError``.
    """
    book = NodeBook()
    if not topic_partitions(broker_url, topic):
        return book
    for _, value in read_partition(broker_url, topic):
        try:
            book.add(value)
        except RejectedError as exc:
            log.warning("status record refused: %s", exc)
    return book


def directory_admissions(url: str) -> dict[str, tuple[str, str]]:
    """node id → (admission, reason) from a directory's ``/nodes.json`` (empty if it is down)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/nodes.json", timeout=5) as response:
            document = orjson.loads(response.read())
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError):
        return {}
    return {n["node_id"]: (n["admission"], n["reason"]) for n in document.get("nodes", [])}


_COLOURS = {"ok": "green", "behind": "yellow", "down": "red"}


def federation_table(
    book: NodeBook,
    *,
    regions: Sequence[str] = (),
    admissions: Mapping[str, tuple[str, str]] | None = None,
    now: datetime | None = None,
) -> Table:
    """The rows of ``node_rows`` as a terminal table."""
    now = now or datetime.now(UTC)
    table = Table(title="fairstream nodes")
    columns = ["region", "node", "base URL", "sync", "last heartbeat", "store", "trust root"]
    if admissions is not None:
        columns.append("directory")
    for column in columns:
        table.add_column(column, no_wrap=column == "base URL")
    for row in node_rows(book, regions=regions, admissions=admissions, now=now):
        cells = [
            row.region,
            row.node_id[:12],
            row.base_url,
            f"[{_COLOURS[row.health]}]{escape(row.sync)}[/]",
            row.heartbeat,
            row.store,
            row.trust_root,
        ]
        if row.admission is not None:
            cells.append(f"{row.admission}: {row.reason}" if row.reason else row.admission)
        table.add_row(*cells)
    return table


def redraw(
    render: Callable[[], RenderableType],
    show: Callable[[RenderableType], None],
    *,
    every: float,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Show what ``render`` returns, again every ``every`` seconds, until ``stop()`` is true
    or Ctrl-C, which ends it quietly; returns how many times it showed something.

    Raises what ``render`` raises.
    """
    shown = 0
    try:
        while not stop():
            show(render())
            shown += 1
            sleep(every)
    except KeyboardInterrupt:
        pass
    return shown
