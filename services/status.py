"""Sync state of regions as a person reads it: a table of each region's position in the log."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.table import Table

from connectors.kafka import (
    Topics,
    group_positions,
    read_partition,
    records_after,
    topic_partitions,
)
from schemas.errors import RejectedError
from schemas.federation import NodeBook, NodeStatus
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


def sync_text(status: NodeStatus) -> str:
    """ "in sync", "behind by N events (S s)", or the state and why."""
    if status.state in ("degraded", "stopped"):
        return f"{status.state}: {status.detail}" if status.detail else status.state
    if status.events_behind == 0:
        return "in sync"
    more = "+" if status.behind_is_lower_bound else ""
    age = f", {status.seconds_behind:.0f} s" if status.seconds_behind is not None else ""
    return f"behind by {status.events_behind}{more} events{age}"


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return "-"


def federation_table(
    book: NodeBook,
    *,
    regions: Sequence[str] = (),
    admissions: Mapping[str, tuple[str, str]] | None = None,
    now: datetime | None = None,
) -> Table:
    """One row per registered node, by region: URL, sync state, last heartbeat, store usage."""
    now = now or datetime.now(UTC)
    table = Table(title="fairstream nodes")
    columns = ["region", "node", "base URL", "sync", "last heartbeat", "store", "trust root"]
    if admissions is not None:
        columns.append("directory")
    for column in columns:
        table.add_column(column, no_wrap=column == "base URL")
    registrations = sorted(
        book.registrations.values(), key=lambda r: (r.region, r.base_url, r.node_id)
    )
    for registration in registrations:
        if regions and registration.region not in regions:
            continue
        status = book.statuses.get(registration.node_id)
        if status is None:
            sync, heartbeat, store, root = "[yellow]no heartbeat yet[/]", "-", "-", "-"
        else:
            colour = "green" if status.state == "in-sync" else "yellow"
            if status.state in ("degraded", "stopped"):
                colour = "red"
            sync = f"[{colour}]{sync_text(status)}[/]"
            age = max(0.0, (now - status.heartbeat_at).total_seconds())
            heartbeat = f"{age:.0f} s ago"
            store = _size(status.store_bytes) if registration.mode == "full" else "metadata only"
            root = f"v{status.trust_root_version}"
        row = [
            registration.region,
            registration.node_id[:12],
            registration.base_url,
            sync,
            heartbeat,
            store,
            root,
        ]
        if admissions is not None:
            admission, reason = admissions.get(registration.node_id, ("unknown", ""))
            row.append(f"{admission}: {reason}" if reason else admission)
        table.add_row(*row)
    return table
