"""What the status pages show, as plain data: the views, the ``StatusSource`` port a process
implements, and the pure functions that build views from what the process holds (heartbeats,
package states, rejections) and word them for a person (ages, sizes, sync). A package's page
has a JSON twin (``/status/packages/<name>.json``, ``package_document``): the same versions,
digests and copies, with each copy's provenance as fields an auditor can script against."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from schemas.errors import MalformedEventError
from schemas.events import ReleaseRejected
from schemas.federation import (
    SILENT_AFTER,
    LagSample,
    NodeBook,
    NodeRegistration,
    NodeStatus,
    shown_state,
    split_position,
)
from schemas.package_state import PackageState, VersionRecord
from schemas.trust import TrustRoot, namespace_of

# --- the views ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRow:
    """One node as the network table shows it."""

    region: str
    node_id: str
    base_url: str
    sync: str
    #: What the reader says of the node, one of ``SHOWN_STATES`` (``silent``, ``stopped``...).
    state: str
    #: ``ok``, ``behind`` or ``down``: the row's colour.
    health: str
    heartbeat: str
    store: str
    trust_root: str
    #: The directory's admission and why; None on a node's own page.
    admission: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Series:
    """One line of the lag chart."""

    label: str
    samples: Sequence[LagSample]


@dataclass(frozen=True)
class NetworkView:
    title: str
    rows: Sequence[NodeRow]
    series: Sequence[Series]
    rejected_by_reason: Sequence[tuple[str, int]] = ()


@dataclass(frozen=True)
class Signer:
    keyid: str
    #: Whether the trust root in force still delegates the package's namespace to it.
    delegated_now: bool


#: Why a copy's provenance is not known: the store holds no record of it.
NOT_RECORDED = (
    "not recorded: the zip was stored before fairstream recorded provenance, or came in a bundle"
)
#: Why a copy's provenance is not known: the store did not answer when asked.
STORE_SILENT = "the store did not answer"


@dataclass(frozen=True)
class Provenance:
    """Where a copy's bytes came from, as the replicator recorded it beside the zip
    (``streams.artifact_fetch.provenance``): the holder it fetched them from (``origin``, a
    region, a peer's label), that holder's declared jurisdiction (None: none declared), the
    URL and when."""

    source: str
    jurisdiction: str | None
    url: str
    fetched_at: datetime

    @classmethod
    def from_record(cls, data: bytes) -> Provenance:
        """The provenance in a record's bytes. Raises ``ValueError`` for one that is not."""
        try:
            record = orjson.loads(data)
            jurisdiction = record.get("jurisdiction")
            return cls(
                source=str(record["from"]),
                jurisdiction=None if jurisdiction is None else str(jurisdiction),
                url=str(record["url"]),
                fetched_at=datetime.fromisoformat(record["fetched_at"]).astimezone(UTC),
            )
        # orjson.JSONDecodeError is a ValueError.
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a provenance record: {exc!r}") from exc


@dataclass(frozen=True)
class Copy:
    """One verified copy of a version: who holds it and, on a node's own pages, where its
    bytes came from."""

    #: As the page names it: ``this node (eu)``, ``eu: https://eu.example``.
    holder: str
    region: str | None = None
    base_url: str | None = None
    provenance: Provenance | None = None
    #: Why the provenance is not known, when it was looked for and is not (``NOT_RECORDED``,
    #: ``STORE_SILENT``, an unreadable record); None otherwise.
    unknown: str | None = None

    @property
    def text(self) -> str:
        """``this node (eu), from de (EU), fetched 2026-12-06 12:00 UTC``; a copy whose
        provenance was not recorded claims nothing."""
        came = self.provenance
        if came is not None:
            jurisdiction = came.jurisdiction or "jurisdiction not declared"
            return (
                f"{self.holder}, from {came.source} ({jurisdiction}), fetched "
                f"{came.fetched_at:%Y-%m-%d %H:%M} UTC"
            )
        if self.unknown is not None and self.unknown != NOT_RECORDED:
            return f"{self.holder}, origin unknown ({self.unknown})"
        return self.holder


@dataclass(frozen=True)
class VersionView:
    version: str
    drupal_version: str
    sha256: str
    sha1: str
    size: int
    origin_url: str
    position: str
    signers: Sequence[Signer]
    yanked: str | None
    copies: Sequence[Copy]

    @property
    def holders(self) -> list[str]:
        """The copies as the page lists them."""
        return [copy.text for copy in self.copies]


@dataclass(frozen=True)
class PackageView:
    package: str
    namespace: str
    publisher: str
    threshold: int
    root_version: int
    versions: Sequence[VersionView]
    advisories: Sequence[dict[str, Any]]
    expunged: Sequence[tuple[str, str]]
    holders_note: str


@dataclass(frozen=True)
class RejectionRow:
    at: str
    region: str
    where: str
    key: str
    reason: str
    detail: str


class StatusSource(Protocol):
    """What a process shows on its status pages."""

    title: str

    def network(self, now: datetime) -> NetworkView: ...

    async def package(self, name: str) -> PackageView | None: ...

    def rejections(self) -> Sequence[RejectionRow]: ...


# --- building the views ------------------------------------------------------------------


def age_text(then: datetime, now: datetime) -> str:
    """``12 s ago``, ``4 min ago``, ``3 h ago``, ``2 d ago``."""
    seconds = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * 2 or (unit == "min" and seconds >= size):
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def package_view(
    state: PackageState,
    root: TrustRoot,
    holders: Callable[[VersionRecord], Sequence[Copy]],
    note: str,
) -> PackageView:
    """A package page's content from its state, the trust root in force and the copies of
    each version (``holders``)."""
    delegation = root.delegation_for(state.package)
    delegated = set(delegation.keyids) if delegation else set()
    versions = [
        VersionView(
            version=version,
            drupal_version=record.drupal_version,
            sha256=record.sha256,
            sha1=record.sha1,
            size=record.size,
            origin_url=record.origin_url,
            position=record.position,
            signers=[Signer(k, k in delegated) for k in record.signed_by],
            yanked=record.yanked,
            copies=holders(record),
        )
        for version, record in sorted(
            state.versions.items(), key=lambda item: _offset(item[1].position), reverse=True
        )
    ]
    return PackageView(
        package=state.package,
        namespace=namespace_of(state.package),
        publisher=delegation.publisher if delegation else "no publisher (not delegated)",
        threshold=delegation.threshold if delegation else 0,
        root_version=root.version,
        versions=versions,
        advisories=list(state.advisories.values()),
        expunged=sorted(state.expunged.items()),
        holders_note=note,
    )


def _offset(position: str) -> int:
    """The log offset of a version's position; -1 for a state without one."""
    try:
        return split_position(position)[2]
    except MalformedEventError:
        return -1


def package_document(view: PackageView, *, answered_by: str, now: datetime) -> dict[str, Any]:
    """The JSON of a package's page (``/status/packages/<name>.json``): every version, newest
    first, with its digests, signers and the copies of it, each with where its bytes came
    from when known. A version no copy of which is listed is not held there: clients are
    sent to another region's copy or to the signed origin URL."""
    return {
        "package": view.package,
        "answered_by": answered_by,
        "generated_at": _utc_text(now),
        "namespace": view.namespace,
        "publisher": view.publisher,
        "threshold": view.threshold,
        "trust_root_version": view.root_version,
        "versions": [
            {
                "version": v.version,
                "drupal_version": v.drupal_version,
                "sha256": v.sha256,
                "sha1": v.sha1,
                "size": v.size,
                "origin_url": v.origin_url,
                "position": v.position,
                "signed_by": [s.keyid for s in v.signers],
                "yanked": v.yanked,
                "copies": [_copy_document(copy) for copy in v.copies],
            }
            for v in view.versions
        ],
        "expunged": [{"version": version, "sha256": sha} for version, sha in view.expunged],
    }


def _copy_document(copy: Copy) -> dict[str, Any]:
    came = copy.provenance
    return {
        "holder": copy.holder,
        "region": copy.region,
        "base_url": copy.base_url,
        "provenance": None
        if came is None
        else {
            "from": came.source,
            "jurisdiction": came.jurisdiction,
            "url": came.url,
            "fetched_at": _utc_text(came.fetched_at),
        },
        "provenance_unknown": copy.unknown,
    }


def _utc_text(moment: datetime) -> str:
    """``2026-12-06T12:00:00Z``: a time as the JSON documents give it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rejection_row(record: ReleaseRejected) -> RejectionRow:
    return RejectionRow(
        at=record.rejected_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        region=record.region,
        where=f"{record.topic}[{record.partition}]@{record.offset}",
        key=record.key or "",
        reason=record.reason,
        detail=record.detail,
    )


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


#: The colour of each shown state: green only in sync.
_HEALTH = {
    "in-sync": "ok",
    "catching-up": "behind",
    "starting": "behind",
    "degraded": "down",
    "stopped": "down",
    "silent": "down",
}
#: Directory admissions that mean it sends the node no clients.
_NOT_ROUTED = ("refused", "dropped", "silent", "stopped")


def node_rows(
    book: NodeBook,
    *,
    regions: Sequence[str] = (),
    admissions: Mapping[str, tuple[str, str]] | None = None,
    heard: Mapping[str, datetime] | None = None,
    silent_after: timedelta = SILENT_AFTER,
    now: datetime,
) -> list[NodeRow]:
    """One row per registered node, by region: URL, sync state, last heartbeat, store usage
    and, given ``admissions``, the directory's admission.

    A node not heard from within ``silent_after`` is shown ``silent``, one that said
    goodbye ``stopped`` (``shown_state``), never in sync. ``heard`` gives, per node id, when
    the reader last heard from it on its own clock (the directory's); without it, the
    heartbeat's own time (else the registration's) against ``now``.
    """
    rows = []
    registrations = sorted(
        book.registrations.values(), key=lambda r: (r.region, r.base_url, r.node_id)
    )
    for registration in registrations:
        if regions and registration.region not in regions:
            continue
        status = book.statuses.get(registration.node_id)
        heard_at = (heard or {}).get(registration.node_id) or (
            status.heartbeat_at if status is not None else registration.registered_at
        )
        state = shown_state(status, heard_at=heard_at, now=now, silent_after=silent_after)
        rows.append(
            _node_row(registration, status, state, admissions, silent_after=silent_after, now=now)
        )
    return rows


def _node_row(
    registration: NodeRegistration,
    status: NodeStatus | None,
    state: str,
    admissions: Mapping[str, tuple[str, str]] | None,
    *,
    silent_after: timedelta,
    now: datetime,
) -> NodeRow:
    """The row of one node, in the ``state`` the reader shows it in (``node_rows``)."""
    if state == "silent":
        sync = f"silent: no heartbeat for more than {silent_after.total_seconds():g} s"
    elif status is None:
        sync = "no heartbeat yet"
    else:
        sync = sync_text(status)
    health = _HEALTH[state]
    heartbeat, store, root = "-", "-", "-"
    if status is not None:
        heartbeat = age_text(status.heartbeat_at, now)
        store = _size(status.store_bytes) if registration.mode == "full" else "metadata only"
        root = f"v{status.trust_root_version}"
    admission, reason = (None, "")
    if admissions is not None:
        admission, reason = admissions.get(registration.node_id, ("unknown", ""))
        if admission in _NOT_ROUTED:
            health = "down"
    return NodeRow(
        region=registration.region,
        node_id=registration.node_id,
        base_url=registration.base_url,
        sync=sync,
        state=state,
        health=health,
        heartbeat=heartbeat,
        store=store,
        trust_root=root,
        admission=admission,
        reason=reason,
    )
