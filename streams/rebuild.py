"""Re-deriving every package state and p2 document of a region from the log and the store.

The metadata a node serves is derived state: the releases topic is the truth.
``rebuild_region`` reads each partition from offset 0 (a package lives in
exactly one partition, so one partition's states at a time fit in memory),
verifies every record against the trust root in force, applies it with the
same pure ``apply_event`` and the same log positions as the live node (so the
states come out byte-identical). An event the root in force refuses for its
signature (a key a later rotation revoked) is kept only if the region's
stored state shows the live node applied it at that very position, under the
root of its time; a revoked key cannot add anything through a rebuild. It writes whatever differs, parks a fetch for
every zip a full mirror lacks, and removes the metadata of packages the log
(or the region's policy) no longer gives it.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.kafka import iter_partition, topic_partitions
from connectors.state_store import PackageStates
from connectors.store import ObjectStore
from schemas import layout
from schemas.errors import RejectedError, SignatureError
from schemas.events import Artifact, PackageEvent, ReleasePublished, decode_package_event
from schemas.package_state import PackageState, apply_event
from schemas.signing import SignedEvent
from schemas.trust import TrustRoot, verify_event_signers
from streams.policy import ReplicationPolicy
from streams.replication import pending_document

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    """What a rebuild read and wrote."""

    records: int = 0
    packages: int = 0
    kept_from_earlier_roots: int = 0
    states_written: int = 0
    documents_written: int = 0
    fetches_parked: int = 0
    removed: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)


def rebuild_region(
    *,
    broker_url: str,
    topic: str,
    store: ObjectStore,
    states: PackageStates,
    root: TrustRoot,
    policy: ReplicationPolicy,
    max_artifact_size: int | None = None,
    on_record: Callable[[], None] = lambda: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RebuildReport:
    """Rebuild one region's metadata; see the module docstring.

    Raises ``BrokerUnavailableError`` or ``StoreUnavailableError``; a rerun
    after either is safe.
    """
    report = RebuildReport()
    seen: set[str] = set()
    now = clock()
    for partition in topic_partitions(broker_url, topic):
        built: dict[str, PackageState] = {}
        stored: dict[str, PackageState | None] = {}
        for offset, value in iter_partition(broker_url, topic, partition):
            report.records += 1
            on_record()
            position = f"{topic}:{partition}:{offset}"
            try:
                event, signed_by = verify_event_signers(
                    value, root, now=now, max_artifact_size=max_artifact_size
                )
            except SignatureError as exc:
                earlier = _applied_before(value, position, states, stored)
                if earlier is None:
                    report.refused[exc.reason] += 1
                    continue
                event, signed_by = earlier
                report.kept_from_earlier_roots += 1
            except RejectedError as exc:
                report.refused[exc.reason] += 1
                continue
            if not policy.serves(event.package):
                continue
            digest = hashlib.sha256(SignedEvent.from_bytes(value).payload).hexdigest()
            state = built.get(event.package) or PackageState(event.package)
            try:
                transition = apply_event(
                    state, event, digest=digest, position=position, signed_by=signed_by
                )
            except RejectedError as exc:
                report.refused[exc.reason] += 1
                continue
            if transition is not None:
                built[event.package] = transition.state
        for state in built.values():
            _write_package(store, states, state, policy, report, now)
        seen.update(built)
        report.packages += len(built)
    for package in states.packages():
        if package not in seen:
            _remove_package(store, package)
            report.removed.append(package)
    return report


def _applied_before(
    value: bytes,
    position: str,
    states: PackageStates,
    stored: dict[str, PackageState | None],
) -> tuple[PackageEvent, tuple[str, ...]] | None:
    """The event at ``position`` if the region's stored state records it applied there, and
    the key ids that verified it then (kept with a published version)."""
    try:
        payload = SignedEvent.from_bytes(value).payload
        event = decode_package_event(payload)
    except RejectedError:
        return None
    if event.package not in stored:
        stored[event.package] = states.load(event.package)
    state = stored[event.package]
    digest = hashlib.sha256(payload).hexdigest()
    if state is None or state.applied.get(digest) != position:
        return None
    record = state.versions.get(event.version) if isinstance(event, ReleasePublished) else None
    return event, record.signed_by if record is not None else ()


def _write_package(
    store: ObjectStore,
    states: PackageStates,
    state: PackageState,
    policy: ReplicationPolicy,
    report: RebuildReport,
    now: datetime,
) -> None:
    existing = states.load(state.package)
    changed = existing is None or existing.to_json() != state.to_json()
    saved = states.save(state, state_changed=changed)
    report.states_written += int(changed)
    report.documents_written += len(saved.documents_written)
    for sha256 in set(state.expunged.values()):
        if not state.references(sha256):
            store.delete(layout.artifact_key(sha256))
    if not policy.mirrors_artifacts:
        return
    for version, record in state.versions.items():
        if store.stat(layout.artifact_key(record.sha256)) is not None:
            continue
        if store.stat(layout.pending_key(record.sha256)) is not None:
            continue
        artifact = Artifact(record.sha256, record.sha1, record.size, record.origin_url)
        document = pending_document(
            state.package, version, artifact, 0, now, "missing from the store at rebuild"
        )
        store.put_bytes(
            layout.pending_key(record.sha256), document, content_type="application/json"
        )
        report.fetches_parked += 1


def _remove_package(store: ObjectStore, package: str) -> None:
    log.warning("%s has metadata here but no event in the log: removing it", package)
    for key in (layout.p2_key(package), layout.p2_key(package, dev=True)):
        store.delete(key)
    for key in store.list_keys(layout.state_prefix(package)):
        store.delete(key)
