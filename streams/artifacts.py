"""Where a region's zips can come from, how hot each one is, and which to evict under a quota.

``ReplicaRegistry`` remembers which regions announced a verified copy of which
sha256 (from the replicas topic); ``DownloadTally`` counts this region's
downloads until they are produced as a ``DownloadCounts`` event; ``HotStats``
folds the region's counts back in from its partition of the downloads topic
(``schemas.partitioning``), so every worker of the region sees the same
statistics; ``choose_evictions`` is the pure
choice of what to drop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.events import DownloadCount, DownloadCounts, ReplicaAvailable


@dataclass(frozen=True)
class Source:
    """One place to fetch a zip from, and whose it is."""

    url: str
    #: Who holds it, for messages: ``origin``, a region's name, or a label (``peer:typo3``).
    holder: str
    #: The holder's declared jurisdiction; None: not declared.
    jurisdiction: str | None


class ReplicaRegistry:
    """sha256 → the dist URLs of other regions that announced a verified copy (with each
    region's declared jurisdiction), and other download sources such as a peer network's
    origin URLs (thread safe)."""

    def __init__(self, own_region: str) -> None:
        self._own_region = own_region
        self._lock = threading.Lock()
        self._by_sha256: dict[str, dict[str, str]] = {}
        self._bases: dict[str, str] = {}
        self._jurisdictions: dict[str, str | None] = {}
        # Download sources other than nodes (a peer network's origin URLs): fetched from
        # and checked by this node, never a redirect target for clients.
        self._sources: dict[str, dict[str, str]] = {}
        # Per label, the jurisdiction its operator declared for it (a peer's ``jurisdiction=``).
        self._source_jurisdictions: dict[str, str | None] = {}

    def add(self, replica: ReplicaAvailable) -> None:
        if replica.region == self._own_region:
            return
        with self._lock:
            self._by_sha256.setdefault(replica.sha256, {})[replica.region] = replica.url
            base = replica.url.split("/dist/", 1)[0]
            if base:
                self._bases[replica.region] = base
            # A region's latest announcement says where it is now.
            self._jurisdictions[replica.region] = replica.jurisdiction

    def add_record(self, value: bytes) -> None:
        """Add one record of the replicas topic (raises ``MalformedEventError``)."""
        self.add(ReplicaAvailable.from_bytes(value))

    def urls(self, sha256: str) -> list[str]:
        """Other regions' URLs for a verified copy of ``sha256``, in a stable order."""
        with self._lock:
            return [url for _, url in sorted(self._by_sha256.get(sha256, {}).items())]

    def add_source(
        self, sha256: str, label: str, url: str, jurisdiction: str | None = None
    ) -> None:
        """Remember ``url`` as one more place to fetch ``sha256`` from, under ``label``
        (``peer:typo3``), in ``jurisdiction`` (None: not declared); the last URL a label
        gave for a sha256 wins."""
        with self._lock:
            self._sources.setdefault(sha256, {})[label] = url
            self._source_jurisdictions[label] = jurisdiction

    def sources(self, sha256: str) -> list[str]:
        """Every URL to fetch ``sha256`` from: other regions' copies, then the other sources,
        each in a stable order. Whatever they deliver is checked against the signed sha256."""
        with self._lock:
            extra = [url for _, url in sorted(self._sources.get(sha256, {}).items())]
        return [*self.urls(sha256), *extra]

    def fetch_sources(self, sha256: str) -> list[Source]:
        """``sources``, each with its holder and the holder's declared jurisdiction (for a
        peer network's origin, what its operator declared, if anything)."""
        with self._lock:
            extra = [
                Source(url, label, self._source_jurisdictions.get(label))
                for label, url in sorted(self._sources.get(sha256, {}).items())
            ]
        return [*self.copies(sha256), *extra]

    def copies(self, sha256: str) -> list[Source]:
        """Other regions' verified copies of ``sha256``, by region: where a node may send a
        client (unlike other sources, which only this node fetches from and checks)."""
        with self._lock:
            copies = sorted(self._by_sha256.get(sha256, {}).items())
            return [Source(url, region, self._jurisdictions.get(region)) for region, url in copies]

    def peer_sources(self) -> list[Source]:
        """The base URL of each other region that announced any copy, with its jurisdiction."""
        with self._lock:
            return [
                Source(base, region, self._jurisdictions.get(region))
                for region, base in sorted(self._bases.items())
            ]

    def jurisdiction_of(self, region: str) -> str | None:
        """What ``region`` declared in its latest announcement (None: nothing, or not heard)."""
        with self._lock:
            return self._jurisdictions.get(region)

    def peers(self) -> list[str]:
        """Base URLs of the other regions that announced any copy."""
        with self._lock:
            return [base for _, base in sorted(self._bases.items())]


@dataclass(frozen=True)
class Heat:
    downloads: int
    last_download: datetime


class HotStats:
    """sha256 → how often and how recently the region served it (thread safe)."""

    def __init__(self, region: str) -> None:
        self._region = region
        self._lock = threading.Lock()
        self._heat: dict[str, Heat] = {}

    def add(self, sha256: str, downloads: int, at: datetime) -> None:
        with self._lock:
            old = self._heat.get(sha256)
            if old is None:
                self._heat[sha256] = Heat(downloads, at)
            else:
                self._heat[sha256] = Heat(old.downloads + downloads, max(old.last_download, at))

    def record_serve(self, package: str, version: str, sha256: str) -> None:
        """A zip this worker just served (a dist redirect): hot at once, before any count
        reaches the downloads topic."""
        self.add(sha256, 1, datetime.now(UTC))

    def add_record(self, value: bytes) -> None:
        """Fold in one record of the downloads topic, if it is this region's (the region's
        partition may hold other regions' counts too: those whose names share it)."""
        counts = DownloadCounts.from_bytes(value)
        if counts.region != self._region:
            return
        for count in counts.counts:
            if count.sha256:
                self.add(count.sha256, count.downloads, counts.period_end)

    def snapshot(self) -> dict[str, Heat]:
        with self._lock:
            return dict(self._heat)


class DownloadTally:
    """Counts this worker's downloads until the next ``DownloadCounts`` event (thread safe)."""

    def __init__(self, node_id: str, region: str, started: datetime) -> None:
        self._node_id = node_id
        self._region = region
        self._lock = threading.Lock()
        self._since = started
        self._counts: dict[tuple[str, str, str], int] = {}

    def record(self, package: str, version: str, sha256: str) -> None:
        key = (package, version, sha256)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def drain(self, now: datetime) -> DownloadCounts | None:
        """The counts since the last drain as one event, or None when there were none."""
        with self._lock:
            counts, self._counts = self._counts, {}
            since, self._since = self._since, now
        if not counts:
            return None
        return DownloadCounts(
            node_id=self._node_id,
            region=self._region,
            period_start=since,
            period_end=now,
            counts=tuple(
                DownloadCount(package=p, version=v, downloads=n, sha256=s)
                for (p, v, s), n in sorted(counts.items())
            ),
        )

    def restore(self, counts: DownloadCounts) -> None:
        """Put back counts whose event was not produced, to send them with the next."""
        with self._lock:
            self._since = min(self._since, counts.period_start)
            for count in counts.counts:
                key = (count.package, count.version, count.sha256 or "")
                self._counts[key] = self._counts.get(key, 0) + count.downloads


def choose_evictions(
    sizes: Mapping[str, int],
    heat: Mapping[str, Heat],
    *,
    quota: int,
    incoming: int = 0,
    protected: Iterable[str] = (),
    now: datetime,
    keep_recent: timedelta = timedelta(hours=1),
) -> Sequence[str] | None:
    """Which artifacts to evict so that ``incoming`` more bytes fit under ``quota``.

    Cold first: never downloaded, then least recently downloaded, fewest
    downloads breaking ties. Artifacts downloaded within ``keep_recent`` and
    ``protected`` ones are kept. Returns the sha256s to evict (empty when it
    already fits), or None when even evicting every candidate would not make
    room: the incoming artifact is then not kept (served by redirect).
    """
    used = sum(sizes.values())
    excess = used + incoming - quota
    if excess <= 0:
        return []
    keep = set(protected)
    never = datetime.min.replace(tzinfo=now.tzinfo)

    def coldness(sha256: str) -> tuple[datetime, int, str]:
        entry = heat.get(sha256)
        if entry is None:
            return (never, 0, sha256)
        return (entry.last_download, entry.downloads, sha256)

    candidates = [
        sha256
        for sha256 in sizes
        if sha256 not in keep
        and (sha256 not in heat or now - heat[sha256].last_download > keep_recent)
    ]
    chosen: list[str] = []
    freed = 0
    for sha256 in sorted(candidates, key=coldness):
        if freed >= excess:
            break
        chosen.append(sha256)
        freed += sizes[sha256]
    return chosen if freed >= excess else None
