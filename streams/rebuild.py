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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from connectors.kafka_producers import EventProducer
from connectors.kafka_reading import iter_partition
from connectors.kafka_topics import topic_partitions
from connectors.object_store import ObjectStore
from connectors.state_store import PackageStates
from connectors.view_store import LocalView, ViewFollower
from schemas import layout
from schemas.errors import RejectedError, SignatureError
from schemas.event_verification import VerifiedEvent, verify_signed
from schemas.events import Artifact, ReleasePublished, decode_package_event
from schemas.package_state import PackageState, apply_event
from schemas.signing import SignedEvent
from schemas.trust import TrustRoot
from schemas.view import changed_documents, removal
from streams.parked import pending_document
from streams.policy import ReplicationPolicy
from streams.region_view import view_of

#: View records produced together by a rebuild.
REBUILD_BATCH = 500


class RebuildTarget(Protocol):
    """Where a rebuild reads the region's metadata as it is and writes what differs."""

    def load(self, package: str) -> PackageState | None: ...

    def packages(self) -> list[str]: ...

    def save(self, state: PackageState) -> tuple[bool, int]:
        """Write ``state`` if it differs; (state written, documents written)."""
        ...

    def remove(self, package: str) -> None: ...

    def flush(self) -> None: ...


class ViewTarget:
    """The region's view topic: ``view`` holds the topic read to its end; what differs is
    produced as records a rebuild wrote (``replace``), which every reader takes."""

    def __init__(
        self,
        view: LocalView,
        *,
        producer: EventProducer,
        topic: str,
        render: Callable[[PackageState], Mapping[str, bytes]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        written_by: str = "rebuild",
    ) -> None:
        self._view = view
        self._producer = producer
        self._topic = topic
        self._render = render
        self._clock = clock
        self._written_by = written_by
        self._pending: list[tuple[bytes, bytes]] = []

    def load(self, package: str) -> PackageState | None:
        return self._view.load(package)

    def packages(self) -> list[str]:
        return self._view.packages()

    def save(self, state: PackageState) -> tuple[bool, int]:
        held = self._view.held(state.package)
        existing = self._view.load(state.package)
        changed = existing is None or existing.to_json() != state.to_json()
        view = view_of(
            state,
            held,
            render=self._render,
            now=self._clock(),
            written_by=self._written_by,
            replace=True,
        )
        documents = changed_documents(view, held)
        if changed or documents:
            self._send(state.package, view.to_bytes())
        return changed, documents

    def remove(self, package: str) -> None:
        held = self._view.held(package)
        if held is not None:
            gone = removal(held, now=self._clock(), written_by=self._written_by)
            self._send(package, gone.to_bytes())

    def _send(self, package: str, value: bytes) -> None:
        self._pending.append((package.encode(), value))
        if len(self._pending) >= REBUILD_BATCH:
            self.flush()

    def flush(self) -> None:
        """Produce what is pending. Raises ``BrokerUnavailableError``."""
        pending, self._pending = self._pending, []
        if pending:
            self._producer.produce_many(self._topic, pending)


def read_region_view(
    broker_url: str, topic: str, producer: EventProducer, *, timeout: float = 300.0
) -> LocalView:
    """The region's view topic read to its end into a view in memory: a marker is produced to
    every partition and read back (exact on any broker). Raises ``BrokerUnavailableError``."""
    view = LocalView(None)
    follower = ViewFollower(broker_url, topic, view, name="rebuild")
    follower.start()
    try:
        follower.catch_up(producer, "rebuild", timeout=timeout)
    finally:
        follower.stop()
    return view


class BucketTarget:
    """The earlier design: states and p2 documents in the region's bucket."""

    def __init__(self, store: ObjectStore, states: PackageStates) -> None:
        self._store = store
        self._states = states

    def load(self, package: str) -> PackageState | None:
        return self._states.load(package)

    def packages(self) -> list[str]:
        return self._states.packages()

    def save(self, state: PackageState) -> tuple[bool, int]:
        existing = self._states.load(state.package)
        changed = existing is None or existing.to_json() != state.to_json()
        saved = self._states.save(state, state_changed=changed)
        return changed, len(saved.documents_written)

    def remove(self, package: str) -> None:
        for key in (layout.p2_key(package), layout.p2_key(package, dev=True)):
            self._store.delete(key)
        for key in self._store.list_keys(layout.state_prefix(package)):
            self._store.delete(key)

    def flush(self) -> None:
        return None


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


def log_partitions(
    broker_url: str, topic: str
) -> Iterator[tuple[int, Iterator[tuple[int, bytes]]]]:
    """Each partition of ``topic`` with its records (offset, value) from offset 0 to the end
    it had when read: what ``rebuild_region`` reads. Raises ``BrokerUnavailableError``."""
    for partition in topic_partitions(broker_url, topic):
        yield partition, iter_partition(broker_url, topic, partition)


# Long because it is the rebuild in one pass (records, packages, leftovers), settings by keyword.
def rebuild_region(
    topic: str,
    partitions: Iterable[tuple[int, Iterable[tuple[int, bytes]]]],
    *,
    store: ObjectStore,
    states: RebuildTarget,
    root: TrustRoot,
    policy: ReplicationPolicy,
    max_artifact_size: int | None = None,
    on_record: Callable[[], None] = lambda: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RebuildReport:
    """Rebuild one region's metadata from ``partitions`` of ``topic`` (``log_partitions``),
    each one's records (offset, value) in log order; see the module docstring. Positions are
    ``topic:partition:offset``, as the live node's.

    Raises ``BrokerUnavailableError`` (reading the log) or ``StoreUnavailableError``; a
    rerun after either is safe.
    """
    report = RebuildReport()
    seen: set[str] = set()
    now = clock()
    for partition, records in partitions:
        built: dict[str, PackageState] = {}
        stored: dict[str, PackageState | None] = {}
        for offset, value in records:
            report.records += 1
            on_record()
            position = f"{topic}:{partition}:{offset}"
            try:
                verified = verify_signed(value, root, now=now, max_artifact_size=max_artifact_size)
            except SignatureError as exc:
                earlier = _applied_before(value, position, states, stored)
                if earlier is None:
                    report.refused[exc.reason] += 1
                    continue
                verified = earlier
                report.kept_from_earlier_roots += 1
            except RejectedError as exc:
                report.refused[exc.reason] += 1
                continue
            event, signed_by, digest = verified.event, verified.signed_by, verified.payload_sha256
            if not policy.serves(event.package):
                continue
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
            log.warning("%s has metadata here but no event in the log: removing it", package)
            states.remove(package)
            report.removed.append(package)
    states.flush()
    return report


def _applied_before(
    value: bytes,
    position: str,
    states: RebuildTarget,
    stored: dict[str, PackageState | None],
) -> VerifiedEvent | None:
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
    return VerifiedEvent(event, record.signed_by if record is not None else (), digest)


def _write_package(
    store: ObjectStore,
    states: RebuildTarget,
    state: PackageState,
    policy: ReplicationPolicy,
    report: RebuildReport,
    now: datetime,
) -> None:
    changed, documents = states.save(state)
    report.states_written += int(changed)
    report.documents_written += documents
    for sha256 in set(state.expunged.values()):
        if not state.references(sha256):
            store.delete(layout.artifact_key(sha256))
            store.delete(layout.provenance_key(sha256))
    if not policy.mirrors_artifacts:
        return
    for version, record in state.versions.items():
        if store.stat(layout.artifact_key(record.sha256)) is not None:
            continue
        if any(store.stat(key) is not None for key in layout.pending_keys(record.sha256)):
            continue
        artifact = Artifact(record.sha256, record.sha1, record.size, record.origin_url)
        document = pending_document(
            state.package, version, artifact, 0, now, "missing from the store at rebuild"
        )
        store.put_bytes(
            layout.pending_key(record.sha256), document, content_type="application/json"
        )
        report.fetches_parked += 1
