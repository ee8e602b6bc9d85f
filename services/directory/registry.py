"""The directory's registry of nodes and its choice of node for a download: pure logic.

A node is sent clients only when it is admitted (it passed a self-test), it
was heard from recently (else it is ``silent``) and did not say goodbye (a
``stopped`` heartbeat), and its heartbeat shows the region has applied the
very event that published the version asked for. A node silent for longer
than the silence window is dropped and must pass a new self-test when it
comes back. An admitted node is spot-checked at a steady interval (a version
chosen at random among those it claims to have applied): a node that turns
hostile after its admission, or whose metadata lags what its heartbeat claims,
is refused at its next spot check.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from schemas.federation import (
    REGION_NAME,
    SILENT_AFTER,
    NodeRegistration,
    NodeStatus,
    shown_state,
)
from schemas.package_state import VersionRecord

#: AspireCloud's default: a peer silent this long is defederated.
DEFAULT_SILENCE_WINDOW = timedelta(hours=24)
#: A node not heard from for this long is silent and not sent clients (it may be down):
#: the bound every reader uses (three missed heartbeats, ``schemas.federation``).
DEFAULT_STALE_AFTER = SILENT_AFTER
#: How long a refused node waits before it is tested again.
DEFAULT_RETEST_AFTER = timedelta(seconds=60)
#: How often an admitted node is spot-checked.
DEFAULT_SPOT_CHECK_EVERY = timedelta(seconds=60)

PENDING, ADMITTED, REFUSED, DROPPED = "pending", "admitted", "refused", "dropped"


@dataclass(frozen=True)
class NodeEntry:
    """What the directory knows of one node."""

    registration: NodeRegistration
    status: NodeStatus | None = None
    #: When the directory last received a record of it, on the directory's own clock
    #: (a node's clock may be wrong by a day; liveness must not depend on it).
    last_seen: datetime | None = None
    admission: str = PENDING
    reason: str = "waiting for its self-test"
    tested_at: datetime | None = None
    served: int = 0

    @property
    def node_id(self) -> str:
        return self.registration.node_id

    def serves(self, package: str) -> bool:
        r = self.registration
        return any(fnmatchcase(package, p) for p in r.include) and not any(
            fnmatchcase(package, p) for p in r.exclude
        )


@dataclass
class Registry:
    """Every node the directory heard of, with its admission; ``now`` is always passed in."""

    silence_window: timedelta = DEFAULT_SILENCE_WINDOW
    stale_after: timedelta = DEFAULT_STALE_AFTER
    retest_after: timedelta = DEFAULT_RETEST_AFTER
    spot_check_every: timedelta = DEFAULT_SPOT_CHECK_EVERY
    nodes: dict[str, NodeEntry] = field(default_factory=dict)

    def observe(self, record: NodeRegistration | NodeStatus, now: datetime) -> None:
        """A verified registration or heartbeat arrived. A node that was dropped and is
        heard from again waits for a new self-test; so does one whose registration changed."""
        if isinstance(record, NodeRegistration):
            known = self.nodes.get(record.node_id)
            if known is None or known.registration != record:
                self.nodes[record.node_id] = NodeEntry(record, last_seen=now)
            return
        entry = self.nodes.get(record.node_id)
        if entry is None:
            return
        if entry.admission == DROPPED:
            entry = replace(entry, admission=PENDING, reason="back after silence; re-testing")
        self.nodes[record.node_id] = replace(entry, status=record, last_seen=now)

    def sweep(self, now: datetime) -> list[NodeEntry]:
        """Drop nodes silent for longer than the silence window; returns those dropped now."""
        dropped = []
        for node_id, entry in self.nodes.items():
            if entry.admission == DROPPED or entry.last_seen is None:
                continue
            if now - entry.last_seen > self.silence_window:
                hours = self.silence_window.total_seconds() / 3600
                entry = replace(
                    entry,
                    admission=DROPPED,
                    reason=f"silent for more than {hours:g} h; defederated until it is heard again",
                )
                self.nodes[node_id] = entry
                dropped.append(entry)
        return dropped

    def due_for_test(self, now: datetime) -> list[NodeEntry]:
        """Nodes to test now: new or returning ones, refused ones after a pause, and
        admitted ones whose last test is older than the spot-check interval; never one
        that said goodbye (it is tested again when it registers on its restart)."""
        pause = {REFUSED: self.retest_after, ADMITTED: self.spot_check_every}
        due = []
        for entry in self.nodes.values():
            if entry.status is not None and entry.status.state == "stopped":
                continue  # it said goodbye: a test could only fail, and it is sent no clients
            if entry.admission == PENDING:
                if entry.status is not None:
                    due.append(entry)
            elif entry.admission in pause and (
                entry.tested_at is None or now - entry.tested_at >= pause[entry.admission]
            ):
                due.append(entry)
        return due

    def record_test(self, node_id: str, passed: bool, reason: str, now: datetime) -> None:
        """The outcome of a self-test or a spot check. An admitted node that fails a spot
        check is refused at once (no client is sent there) and re-tested later."""
        entry = self.nodes.get(node_id)
        if entry is None or entry.admission == DROPPED:
            return
        if not passed and entry.admission == ADMITTED:
            reason = f"failed a spot check after its admission: {reason}"
        self.nodes[node_id] = replace(
            entry, admission=ADMITTED if passed else REFUSED, reason=reason, tested_at=now
        )

    def count_served(self, node_id: str) -> None:
        entry = self.nodes.get(node_id)
        if entry is not None:
            self.nodes[node_id] = replace(entry, served=entry.served + 1)

    def live(self, entry: NodeEntry, now: datetime) -> bool:
        """Heard from within ``stale_after`` (on the directory's clock) and not stopped."""
        return self.shown_state(entry, now) not in ("silent", "stopped")

    def shown_state(self, entry: NodeEntry, now: datetime) -> str:
        """The node's state as the directory shows it: its last heartbeat's, ``stopped``
        after a goodbye, ``silent`` when not heard from within ``stale_after``."""
        return shown_state(
            entry.status, heard_at=entry.last_seen, now=now, silent_after=self.stale_after
        )


@dataclass(frozen=True)
class Choice:
    """Where a download goes, and why (logged, and shown on the status page)."""

    url: str
    node_id: str | None
    region: str | None
    why: str


# Long because the routing rules (region, policy, jurisdiction, lag, health) read in order in one place.
def choose(
    registry: Registry,
    *,
    package: str,
    version: str,
    record: VersionRecord,
    client_region: str | None,
    now: datetime,
) -> Choice:
    """The best node for a client's download of ``package`` ``version``.

    Candidates are admitted, live, not degraded, serve the package and have applied the
    event that published the version (its log position). Same region first, then others;
    within a tier full mirrors before metadata-only ones, then the fewest events behind,
    then a hash of the zip and the node (each zip lands on the same node: warm caches).
    With no candidate, the signed origin.

    A sovereign client region (its nodes register ``routes_to``) is sent only to nodes
    that declared one of those jurisdictions, and never to the origin, whose jurisdiction
    the directory cannot vouch for: with no such candidate the choice has no URL and
    says why (the directory answers 503).
    """
    candidates = [
        entry
        for entry in registry.nodes.values()
        if entry.admission == ADMITTED
        and registry.live(entry, now)
        and entry.status is not None
        and entry.status.state in ("in-sync", "catching-up")
        and entry.serves(package)
        and record.position
        and entry.status.has_applied(record.position)
    ]

    allowed = routes_of(registry, client_region)
    if allowed is not None:
        candidates = [c for c in candidates if c.registration.jurisdiction in allowed]

    def rank(entry: NodeEntry) -> tuple[int, int, int, str]:
        assert entry.status is not None
        same = 0 if client_region is not None and entry.registration.region == client_region else 1
        full = 0 if entry.registration.mode == "full" else 1
        spread = hashlib.sha256(f"{record.sha256}/{entry.node_id}".encode()).hexdigest()
        return same, full, entry.status.events_behind, spread

    if candidates:
        best = min(candidates, key=rank)
        region = best.registration.region
        why = "same region" if region == client_region else "nearest in-sync region"
        url = f"{best.registration.base_url}/dist/{package}/{version}/{record.sha256}.zip"
        return Choice(url, best.node_id, region, why)
    if allowed is not None:
        return Choice(
            "",
            None,
            None,
            f"region {client_region} sends its clients to nodes in "
            f"{', '.join(sorted(allowed))} only, and no in-sync node there has "
            f"{package} {version} yet; try again later",
        )
    return Choice(record.origin_url, None, None, "no in-sync node has it: the signed origin")


def routes_of(registry: Registry, region: str | None) -> frozenset[str] | None:
    """The jurisdictions ``region``'s clients may be sent to, from its nodes' registrations
    (the strictest, when they differ); None: the region restricts nothing, or is unknown."""
    lists = [
        frozenset(entry.registration.routes_to)
        for entry in registry.nodes.values()
        if region is not None
        and entry.registration.region == region
        and entry.registration.routes_to is not None
    ]
    return frozenset.intersection(*lists) if lists else None


@dataclass(frozen=True)
class RegionMap:
    """How the directory tells a client's region: an explicit header the client sets, a
    header a trusted front proxy sets, then the client address in a configured network."""

    networks: Sequence[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = ()
    choice_header: str = "X-Fairstream-Region"
    geo_header: str | None = None

    @classmethod
    def parse(cls, entries: Iterable[str], **kwargs: str | None) -> RegionMap:
        """``CIDR=REGION`` entries; raises ``ValueError`` saying which one is wrong."""
        networks = []
        for entry in entries:
            cidr, sep, region = entry.partition("=")
            if not sep or not region:
                raise ValueError(f"{entry!r} is not CIDR=REGION, e.g. 10.0.0.0/8=eu")
            if not REGION_NAME.fullmatch(region.strip()):
                # No node could register in it: its clients would silently go elsewhere.
                raise ValueError(
                    f"{entry!r}: region {region.strip()!r} is not a region name; write it in "
                    "lower-case letters, digits and dashes, as nodes give --region"
                )
            try:
                networks.append((ipaddress.ip_network(cidr.strip(), strict=False), region.strip()))
            except ValueError as exc:
                raise ValueError(f"{entry!r}: {exc}") from None
        # The most specific network wins.
        networks.sort(key=lambda item: -item[0].prefixlen)
        return cls(networks=tuple(networks), **{k: v for k, v in kwargs.items() if v})

    def region_of(self, headers: Mapping[str, str], address: str | None) -> str | None:
        for header in (self.choice_header, self.geo_header):
            if header and headers.get(header):
                return headers[header].strip().lower()
        if address:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return None
            for network, region in self.networks:
                if ip.version == network.version and ip in network:
                    return region
        return None
