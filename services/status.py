"""Sync state of regions as a person reads it: a table of each region's position in the log."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
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
