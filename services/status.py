"""Sync state of regions as a person reads it: a table of each region's position in the log."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from connectors.kafka import Topics, group_positions, records_after
from streams.node import group_id


@dataclass(frozen=True)
class RegionStatus:
    """One region's sync state: committed events and the events still to apply."""

    region: str
    url: str | None
    healthy: bool | None
    committed: int
    behind: int
    behind_is_lower_bound: bool

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
    return RegionStatus(
        region=region,
        url=url,
        healthy=_healthy(url) if url else None,
        committed=sum(committed.values()),
        behind=sum(remaining.values()),
        behind_is_lower_bound=any(count >= limit for count in remaining.values()),
    )


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=3) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def status_table(statuses: Sequence[RegionStatus]) -> Table:
    table = Table(title="fairstream regions")
    for column in ("region", "url", "health", "committed events", "state"):
        table.add_column(column)
    for status in statuses:
        health = {True: "[green]up[/]", False: "[red]down[/]", None: "-"}[status.healthy]
        colour = "green" if status.state == "in sync" else "yellow"
        table.add_row(
            status.region,
            status.url or "-",
            health,
            str(status.committed),
            f"[{colour}]{status.state}[/]",
        )
    return table
