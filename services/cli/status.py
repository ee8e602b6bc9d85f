"""Sync state of regions as a person reads it: a table of each region's position in the log,
and the ``fairstream status`` command that shows it (``register(cli)`` adds it)."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from connectors.kafka_reading import group_positions, read_partition, records_after
from connectors.kafka_topics import Topics, topic_partitions
from schemas.errors import RejectedError, TransientError
from schemas.federation import SILENT_AFTER, NodeBook, NodeRegistration, NodeStatus
from services.cli.errors import show_error
from services.cli.options import BROKER_OPTION, DATA_DIR_OPTION, HTTP_URL, TOPIC_PREFIX_OPTION
from services.cli.options import broker_url as resolve_broker
from services.shared.serving import INTERRUPTED
from services.shared.status_views import NodeRow, node_rows
from streams.node_settings import group_id

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
    positions = group_positions(broker_url, group_id(region, topics), topics.releases)
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

#: Exit codes of ``fairstream status``, as a Nagios plugin's (UNKNOWN: it could not tell).
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
SEVERITY_NAMES = {OK: "ok", WARNING: "warning", CRITICAL: "critical"}
_STATE_SEVERITY = {
    "in-sync": OK,
    "catching-up": WARNING,
    "starting": WARNING,
    "degraded": CRITICAL,
    "stopped": CRITICAL,
    "silent": CRITICAL,
}
_ADMISSION_SEVERITY = {
    "admitted": OK,
    "pending": WARNING,
    "unknown": WARNING,
    "refused": CRITICAL,
    "dropped": CRITICAL,
    "silent": CRITICAL,
    "stopped": CRITICAL,
}


def severity(state: str, *, artifacts_pending: int = 0, admission: str | None = None) -> int:
    """How bad one node is, as a Nagios check says it: ``OK``, ``WARNING`` or ``CRITICAL``.

    ``state`` is what readers show (``shown_state``); ``admission`` the directory's, when
    asked. CRITICAL: silent, stopped, degraded (trust root expired: it applies nothing
    new), or refused or dropped by the directory (unreachable, or serving other bytes
    than signed); a state or admission this reader does not know is critical too.
    WARNING: behind, registered without a heartbeat yet, zips parked (``artifacts_pending``),
    or not yet admitted (pending, unknown to the directory). Else OK.
    """
    level = _STATE_SEVERITY.get(state, CRITICAL)
    if artifacts_pending > 0:
        level = max(level, WARNING)
    if admission is not None:
        level = max(level, _ADMISSION_SEVERITY.get(admission, CRITICAL))
    return level


def exit_code(severities: Iterable[int]) -> int:
    """The worst of the nodes' severities; WARNING when no node is shown (nothing to
    serve clients, or a --region no node registered in)."""
    return max(severities, default=WARNING)


@dataclass(frozen=True)
class NodeCheck:
    """One node as ``fairstream status`` judges it: its row, what it sent, its severity."""

    row: NodeRow
    registration: NodeRegistration
    status: NodeStatus | None
    severity: int

    def document(self, now: datetime) -> dict[str, Any]:
        """The node's entry of the ``--json`` document (field names are stable)."""
        status = self.status
        return {
            "region": self.row.region,
            "node_id": self.row.node_id,
            "base_url": self.row.base_url,
            "mode": self.registration.mode,
            "state": self.row.state,
            "severity": SEVERITY_NAMES[self.severity],
            "sync": self.row.sync,
            "detail": status.detail if status else "",
            "heartbeat_at": _iso(status.heartbeat_at) if status else None,
            "heartbeat_age_seconds": (
                round(max(0.0, (now - status.heartbeat_at).total_seconds()), 3) if status else None
            ),
            "events_behind": status.events_behind if status else None,
            "behind_is_lower_bound": status.behind_is_lower_bound if status else None,
            "seconds_behind": status.seconds_behind if status else None,
            "artifacts_pending": status.artifacts_pending if status else None,
            "rejected_total": status.rejected_total if status else None,
            "store_bytes": status.store_bytes if status else None,
            "trust_root_version": status.trust_root_version if status else None,
            "admission": self.row.admission,
            "admission_reason": self.row.reason if self.row.admission is not None else None,
        }


@dataclass(frozen=True)
class FederationCheck:
    """Every node shown, judged at ``checked_at``; its exit code is the worst severity."""

    checked_at: datetime
    silent_after: timedelta
    nodes: Sequence[NodeCheck]

    @property
    def exit_code(self) -> int:
        return exit_code(node.severity for node in self.nodes)

    def document(
        self, *, regions: Sequence[str] = (), directory: str | None = None
    ) -> dict[str, Any]:
        """The ``--json`` document: the check's outcome and every node's entry."""
        code = self.exit_code
        return {
            "checked_at": _iso(self.checked_at),
            "status": SEVERITY_NAMES[code],
            "exit_code": code,
            "silent_after_seconds": self.silent_after.total_seconds(),
            "regions": list(regions),
            "directory": directory,
            "nodes": [node.document(self.checked_at) for node in self.nodes],
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check_federation(
    book: NodeBook,
    *,
    regions: Sequence[str] = (),
    admissions: Mapping[str, tuple[str, str]] | None = None,
    silent_after: timedelta = SILENT_AFTER,
    now: datetime | None = None,
) -> FederationCheck:
    """Judge every registered node (of ``regions``, when given) from the status topic's
    book: its row as every reader shows it (``node_rows``) and its severity."""
    now = now or datetime.now(UTC)
    nodes = []
    for row in node_rows(
        book, regions=regions, admissions=admissions, silent_after=silent_after, now=now
    ):
        status = book.statuses.get(row.node_id)
        level = severity(
            row.state,
            artifacts_pending=status.artifacts_pending if status else 0,
            admission=row.admission,
        )
        nodes.append(NodeCheck(row, book.registrations[row.node_id], status, level))
    return FederationCheck(now, silent_after, nodes)


def federation_table(check: FederationCheck) -> Table:
    """The nodes of a check as a terminal table; green only for a node in sync."""
    table = Table(title="fairstream nodes")
    columns = ["region", "node", "base URL", "sync", "last heartbeat", "store", "trust root"]
    with_admission = any(node.row.admission is not None for node in check.nodes)
    if with_admission:
        columns.append("directory")
    for column in columns:
        table.add_column(column, no_wrap=column == "base URL")
    for node in check.nodes:
        row = node.row
        # What nodes wrote is text, never rich markup.
        cells = [
            row.region,
            row.node_id[:12],
            escape(row.base_url),
            f"[{_COLOURS[row.health]}]{escape(row.sync)}[/]",
            row.heartbeat,
            row.store,
            row.trust_root,
        ]
        if row.admission is not None:
            admission = f"{row.admission}: {row.reason}" if row.reason else row.admission
            cells.append(escape(admission))
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


console = Console(soft_wrap=True)
#: The width tables are laid out in when stdout is not a terminal: wide enough that no
#: row is wrapped (a table takes only the width its cells need).
UNWRAPPED_WIDTH = 1000


def register(group: click.Group) -> None:
    """Add ``status`` to ``group``."""
    group.add_command(status)


@click.command()
@click.option("--region", "regions", multiple=True, help="Show only these regions.")
@click.option(
    "--directory",
    "directory_url",
    type=HTTP_URL,
    default=None,
    help="A directory's URL: adds whether it admitted each node, and why.",
)
@click.option(
    "--silent-after",
    type=click.FloatRange(0.5),
    default=SILENT_AFTER.total_seconds(),
    show_default=True,
    metavar="SECONDS",
    help="A node whose last heartbeat is older than this is shown silent (three missed "
    "heartbeats at the default --status-every; give three of the nodes' periods).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON document instead of the table (its fields: docs/operator-guide.md); "
    "same exit code.",
)
@click.option("--watch", is_flag=True, help="Redraw the table in place until Ctrl-C.")
@click.option(
    "--every",
    type=click.FloatRange(0.5, 3600),
    default=None,
    metavar="SECONDS",
    help="Seconds between redraws with --watch  [default: 5]",
)
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@DATA_DIR_OPTION
# Long because click passes one parameter per option, and the docstring is its --help.
def status(
    regions: tuple[str, ...],
    directory_url: str | None,
    silent_after: float,
    as_json: bool,
    watch: bool,
    every: float | None,
    broker: str | None,
    topic_prefix: str,
    data_dir: Path,
) -> None:
    """Print every node of the federation from its last heartbeat: region, URL, in sync,
    how far behind, stopped or silent, last heartbeat, store usage.

    Exits as a Nagios check: 0 every node shown is in sync (and admitted, with
    --directory), 1 a warning (behind, zips parked, no heartbeat yet, not yet admitted,
    no node at all), 2 critical (silent, stopped, trust root expired, refused or dropped
    by the directory), 3 unknown (the broker did not answer).

    \b
    Example: fairstream status --directory https://packages.example.org

    \b
    Example: fairstream status --json --silent-after 60

    \b
    Example: fairstream status --region eu --watch --every 2
    """
    if every is not None and not watch:
        raise click.UsageError("--every sets how often --watch redraws; add --watch")
    if as_json and watch:
        raise click.UsageError("--json prints one document; leave out --watch")
    broker_url = resolve_broker(data_dir, broker)
    topics = Topics.with_prefix(topic_prefix)
    bound = timedelta(seconds=silent_after)

    def check() -> FederationCheck:
        book = read_node_book(broker_url, topics.status)
        admissions = directory_admissions(directory_url) if directory_url else None
        return check_federation(book, regions=regions, admissions=admissions, silent_after=bound)

    try:
        checked = check()  # a wrong --broker fails here, with or without --watch
    except TransientError as exc:
        # A Nagios check that cannot tell says UNKNOWN (3), not WARNING (1).
        show_error(exc)
        click.get_current_context().exit(UNKNOWN)
    if as_json:
        document = checked.document(regions=regions, directory=directory_url)
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        click.get_current_context().exit(checked.exit_code)
    table = federation_table(checked)
    if not watch:
        # Piped or redirected, rich would cut the table to 80 columns: a log or a script
        # gets each row on one line instead.
        out = console if console.is_terminal else Console(soft_wrap=True, width=UNWRAPPED_WIDTH)
        out.print(table)
        click.get_current_context().exit(checked.exit_code)
    period = every or 5.0
    last = [table]

    def refresh() -> RenderableType:
        # A broker that stops answering leaves the last table up, saying so.
        try:
            last[0] = federation_table(check())
        except TransientError as exc:
            return Group(last[0], Text(f"not refreshed: {exc}", style="yellow"))
        last[0].caption = f"refreshed {datetime.now():%H:%M:%S}, every {period:g} s; Ctrl-C stops"
        return last[0]

    with Live(table, console=console, auto_refresh=False) as live:
        redraw(refresh, lambda frame: live.update(frame, refresh=True), every=period)
    # With no stop condition, only Ctrl-C ends the redraws: exit as after any Ctrl-C.
    click.get_current_context().exit(INTERRUPTED)
