"""A package as a node knows it, and the pure decision of what one verified event does to it.

The state records the last applied per-package sequence and where each applied
event sat in the log, so that an at-least-once redelivery is recognised as such
(same event, same position: nothing to do), while the same signed event
produced again elsewhere (replay) or an older sequence (rollback) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson

from schemas import layout
from schemas.composer import render_servable
from schemas.errors import (
    InvalidVersionError,
    ReplayError,
    RollbackError,
    VersionConflictError,
)
from schemas.events import (
    Artifact,
    PackageEvent,
    ReleaseExpunged,
    ReleasePublished,
    ReleaseYanked,
    SecurityAdvisory,
)
from schemas.version_entries import servable_entry, with_dist_url
from schemas.versions import is_dev, normalize_version


@dataclass(frozen=True)
class VersionRecord:
    """A verified version of a package as a node keeps it."""

    drupal_version: str
    sha256: str
    sha1: str
    size: int
    composer: dict[str, Any]
    yanked: str | None = None
    #: The canonical origin of the zip, as signed: the first source to fetch from.
    origin_url: str = ""
    #: Where the event that published it sits in the log (``topic:partition:offset``): a
    #: node has this version once its applied offset of that partition is past it.
    position: str = ""
    #: Key ids of the delegated keys whose signatures verified when it was applied (empty
    #: in states written before they were recorded).
    signed_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackageState:
    """Everything a node knows of one package."""

    package: str
    versions: Mapping[str, VersionRecord] = field(default_factory=dict)
    sequence: int = -1
    applied: Mapping[str, str] = field(default_factory=dict)
    expunged: Mapping[str, str] = field(default_factory=dict)
    advisories: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The state document. Keys are not sorted: the order inside each version's Composer
        entry is the publisher's, and p2 rendered from a loaded state must be byte for byte
        what the state in memory rendered (else equal documents would be rewritten). The
        maps keep the order events were applied in, which a replay repeats."""
        return orjson.dumps(
            {
                "package": self.package,
                "sequence": self.sequence,
                "applied": dict(self.applied),
                "expunged": dict(self.expunged),
                "advisories": dict(self.advisories),
                "versions": {v: record.__dict__ for v, record in self.versions.items()},
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> PackageState:
        document = orjson.loads(data)
        return cls(
            package=document["package"],
            versions={v: _version_record(r) for v, r in document["versions"].items()},
            sequence=document.get("sequence", -1),
            applied=document.get("applied", {}),
            expunged=document.get("expunged", {}),
            advisories=document.get("advisories", {}),
        )

    @property
    def last_position(self) -> str:
        """Where the last event applied sits in the log ("" before any): ``applied`` keeps
        log order."""
        return list(self.applied.values())[-1] if self.applied else ""

    def references(self, sha256: str) -> bool:
        """Whether a version still kept points at this artifact."""
        return any(record.sha256 == sha256 for record in self.versions.values())


class StateReader(Protocol):
    """Where a process reads package states (its local view, or the earlier bucket design)."""

    def load(self, package: str) -> PackageState | None:
        """The package's newest state, or None; may raise ``TransientError``."""
        ...

    def packages(self) -> list[str]:
        """Every package with a state, sorted."""
        ...


def _version_record(document: dict[str, Any]) -> VersionRecord:
    signed_by = tuple(document.pop("signed_by", ()))
    return VersionRecord(**document, signed_by=signed_by)


@dataclass(frozen=True)
class Transition:
    """What one event does: the new state, and the artifact effects it needs."""

    state: PackageState
    fetch: Artifact | None = None
    delete: str | None = None


def apply_event(
    state: PackageState,
    event: PackageEvent,
    *,
    digest: str,
    position: str,
    signed_by: tuple[str, ...] = (),
) -> Transition | None:
    """The transition ``event`` makes, or None when this very delivery was applied already.

    ``digest`` is the sha256 of the signed payload, ``position`` where the
    record sits in the log (``topic:partition:offset``), ``signed_by`` the key ids whose
    signatures verified (kept with a published version). Raises
    ``ReplayError``, ``RollbackError`` or ``VersionConflictError``.
    """
    seen_at = state.applied.get(digest)
    if seen_at is not None:
        if seen_at == position:
            return None
        raise ReplayError(
            f"{event.package}: this signed event was applied already at {seen_at}; "
            f"the copy at {position} is a replay and is ignored"
        )
    if event.sequence <= state.sequence:
        raise RollbackError(
            f"{event.package}: event sequence {event.sequence} is not above the last applied "
            f"{state.sequence}; an older event cannot undo a newer one (rollback or freeze attack)"
        )
    applied = {**state.applied, digest: position}
    advanced = replace(state, sequence=event.sequence, applied=applied)
    if isinstance(event, ReleasePublished):
        return _publish(advanced, event, position, signed_by)
    if isinstance(event, ReleaseYanked):
        return _yank(advanced, event)
    if isinstance(event, ReleaseExpunged):
        return _expunge(advanced, event)
    return _advise(advanced, event)


def _publish(
    state: PackageState, event: ReleasePublished, position: str, signed_by: tuple[str, ...]
) -> Transition:
    if event.version in state.expunged:
        raise VersionConflictError(
            f"{event.package} {event.version} was expunged; an expunged version never "
            "comes back: publish a new version instead"
        )
    current = state.versions.get(event.version)
    dev = is_dev(event.version)
    if event.rebuild_of is not None and not dev:
        raise VersionConflictError(
            f"{event.package} {event.version} is a tagged version and this event claims to "
            f"rebuild it: only a dev version is rebuilt (tagged versions are immutable: "
            "publish a new version instead)"
        )
    yanked = None
    if current is not None:
        same = (current.sha256, current.sha1, current.size) == (
            event.artifact.sha256,
            event.artifact.sha1,
            event.artifact.size,
        )
        if same:
            return Transition(state)
        if not dev:
            raise VersionConflictError(
                f"{event.package} {event.version} was already published with sha256 "
                f"{current.sha256}; this event claims {event.artifact.sha256}. Published "
                "versions are immutable: publish a new version instead"
            )
        if event.rebuild_of is None:
            raise VersionConflictError(
                f"{event.package} {event.version} already has build {current.sha256}; this "
                f"event brings other bytes ({event.artifact.sha256}) but names no build it "
                "replaces: a new build of a dev version must say rebuild_of="
                f"{current.sha256}"
            )
        if event.rebuild_of != current.sha256:
            raise VersionConflictError(
                f"{event.package} {event.version}: this build replaces {event.rebuild_of}, "
                f"but the current build is {current.sha256} (an old build replayed, or a "
                "fork of the build history)"
            )
        yanked = current.yanked  # a yank is of the version: a new build stays yanked
    record = VersionRecord(
        drupal_version=event.drupal_version,
        sha256=event.artifact.sha256,
        sha1=event.artifact.sha1,
        size=event.artifact.size,
        composer=event.composer,
        origin_url=event.artifact.origin_url,
        position=position,
        signed_by=signed_by,
        yanked=yanked,
    )
    return Transition(
        replace(state, versions={**state.versions, event.version: record}), fetch=event.artifact
    )


def _yank(state: PackageState, event: ReleaseYanked) -> Transition:
    current = state.versions.get(event.version)
    if current is None:
        return Transition(state)
    versions = {**state.versions, event.version: replace(current, yanked=event.reason)}
    return Transition(replace(state, versions=versions))


def _expunge(state: PackageState, event: ReleaseExpunged) -> Transition:
    current = state.versions.get(event.version)
    if current is not None and current.sha256 != event.sha256:
        raise VersionConflictError(
            f"expunge of {event.package} {event.version} names sha256 {event.sha256}, "
            f"this node holds {current.sha256}: refusing to delete other bytes"
        )
    versions = {v: r for v, r in state.versions.items() if v != event.version}
    new_state = replace(
        state, versions=versions, expunged={**state.expunged, event.version: event.sha256}
    )
    delete = None if current is None or new_state.references(event.sha256) else event.sha256
    return Transition(new_state, delete=delete)


def _advise(state: PackageState, event: SecurityAdvisory) -> Transition:
    advisory = {
        "advisoryId": event.advisory_id,
        "packageName": event.package,
        "affectedVersions": event.affected_versions,
        "title": event.title,
        "link": event.link,
        "cve": event.cve,
        "reportedAt": event.reported_at,
        "sources": [{"name": s.name, "remoteId": s.remote_id} for s in event.sources],
        "severity": event.severity,
    }
    return Transition(replace(state, advisories={**state.advisories, event.advisory_id: advisory}))


def render_documents(state: PackageState, public_url: str) -> dict[str, bytes]:
    """The p2 documents of a package, with dist URLs on this node; yanked versions left out.

    The stable document carries the package's security advisories, which Composer
    reads from there when ``packages.json`` says ``"security-advisories": {"metadata": true}``.
    """
    base = public_url.rstrip("/")
    entries = [
        _servable(state.package, version, record, base)
        for version, record in state.versions.items()
        if record.yanked is None
    ]
    advisories = [state.advisories[key] for key in sorted(state.advisories)]
    return render_servable(state.package, entries, advisories=advisories)


#: Servable entries already made (item 5 of issue 15: a release re-renders every version of
#: its package; each entry is made once), by package and version, with what each was made
#: from: the composer dict (compared by identity: held here, it cannot be another dict at
#: the same address), the zip's sha256 and the public URL. Emptied when full; a dict, so
#: threads may share it (each step is atomic).
_ENTRIES: dict[tuple[str, str], tuple[dict[str, Any], str, str, dict[str, Any]]] = {}
ENTRIES_KEPT = 20_000


def _servable(package: str, version: str, record: VersionRecord, base: str) -> dict[str, Any]:
    kept = _ENTRIES.get((package, version))
    if (
        kept is not None
        and kept[0] is record.composer
        and kept[1] == record.sha256
        and kept[2] == base
    ):
        return kept[3]
    entry = servable_entry(
        package,
        with_dist_url(record.composer, base + layout.dist_path(package, version, record.sha256)),
    )
    if len(_ENTRIES) >= ENTRIES_KEPT:
        _ENTRIES.clear()
    _ENTRIES[(package, version)] = (record.composer, record.sha256, base, entry)
    return entry


def find_version(state: PackageState, version: str) -> tuple[str, VersionRecord] | None:
    """The kept version a Composer version string names, pretty (``1.9.0``) or normalized
    (``1.9.0.0``, what Composer's install notifications send)."""
    record = state.versions.get(version)
    if record is not None:
        return version, record
    for pretty, candidate in state.versions.items():
        try:
            normalized = candidate.composer.get("version_normalized") or normalize_version(pretty)
        except InvalidVersionError:
            continue
        if normalized == version:
            return pretty, candidate
    return None
