"""What nodes tell the federation about themselves: signed registrations and heartbeats.

Both travel on the compacted status topic, keyed ``<node_id>/registration`` and
``<node_id>/status``. A registration is self-certified: it carries the node's
public key and is signed by it, and the node id is that key's id, so nobody can
register under another node's id. A heartbeat must be signed by the key its
node registered.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from schemas.codec import Decoder, encode, fingerprint_of, load_schema, schema_family
from schemas.errors import MalformedEventError, SignatureError
from schemas.names import JURISDICTION
from schemas.signing import PublicKey, SignedEvent, SigningKey, key_id, open_sealed, seal

_NODE_ID = re.compile(r"^[0-9a-f]{64}$")
#: What a region's name may be (``node run --region``, a directory's ``--name``, a region map):
#: the one rule every part of the federation checks names with (``REGION_NAME.fullmatch``).
REGION_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
#: Node states a heartbeat may carry.
NODE_STATES = ("in-sync", "catching-up", "degraded", "stopped")
#: What a reader may say of a node: a heartbeat's state, ``silent`` (nothing heard within
#: the bound) or ``starting`` (registered, no heartbeat yet, still within the bound).
SHOWN_STATES = (*NODE_STATES, "silent", "starting")
MODES = ("full", "metadata-only")
#: How often a node sends a heartbeat unless told otherwise (``--status-every``).
HEARTBEAT_EVERY_SECONDS = 10.0
#: Heartbeats a node may miss before every reader calls it ``silent``. Three, because a
#: running node does miss some: one lost to a broker hiccup (the producer gives up and the
#: next heartbeat gets a new one), one late because its measurement waited on a slow
#: broker (its reads time out after 10 s). Fewer would flash healthy nodes red; more
#: would keep a killed one green for longer than an operator waits.
MISSED_HEARTBEATS = 3
#: The bound itself at the default period: 30 s (the directory's ``--stale-after``).
SILENT_AFTER = timedelta(seconds=MISSED_HEARTBEATS * HEARTBEAT_EVERY_SECONDS)


def registration_key(node_id: str) -> bytes:
    return f"{node_id}/registration".encode()


def status_key(node_id: str) -> bytes:
    return f"{node_id}/status".encode()


def _check_common(node_id: str, region: str, base_url: str, problems: list[str]) -> None:
    if not _NODE_ID.match(node_id):
        problems.append(f"node_id {node_id[:80]!r} is not a hex key id")
    if not REGION_NAME.fullmatch(region):
        problems.append(f"region {region[:80]!r} is not lower-case letters, digits and dashes")
    if not is_http_url(base_url):
        problems.append(f"base_url {base_url[:200]!r} is not an http(s) URL")


def is_http_url(url: str) -> bool:
    """Whether ``url`` is what a node registers as its base URL: ``http(s)://HOST[/PATH]``."""
    return re.match(r"^https?://[^\s/]+(/[^\s]*)?$", url) is not None


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise MalformedEventError(f"{what}: " + "; ".join(problems))


@dataclass(frozen=True)
class NodeRegistration:
    """A node's request to be sent clients: who it is, where, what it serves."""

    node_id: str
    public_key: str
    region: str
    base_url: str
    mode: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    capacity_bytes: int | None
    registered_at: datetime
    #: Where the node holds and serves its bytes, as its operator declares it (EU, DE,
    #: US-gov); None: not declared, which no sovereign region's policy allows.
    jurisdiction: str | None = None
    #: The jurisdictions a directory may send this node's region's clients to (a sovereign
    #: region's policy); None: any.
    routes_to: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        _check_common(self.node_id, self.region, self.base_url, problems)
        for code in (self.jurisdiction, *(self.routes_to or ())):
            if code is not None and not JURISDICTION.fullmatch(code):
                problems.append(
                    f"jurisdiction {code[:40]!r} is not a code such as EU, DE or US-gov"
                )
        if self.routes_to == ():
            problems.append("routes_to names no jurisdiction (leave it out to allow any)")
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not re.match(r"^[0-9a-f]{64}$", self.public_key):
            problems.append("public_key is not 32 bytes of hex")
        elif key_id(bytes.fromhex(self.public_key)) != self.node_id:
            problems.append("node_id is not the key id of public_key")
        if not self.include:
            problems.append("include names no package pattern")
        _raise_if(problems, "node registration")

    @property
    def key(self) -> PublicKey:
        return PublicKey(raw=bytes.fromhex(self.public_key))

    def to_bytes(self) -> bytes:
        record = {
            **self.__dict__,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "routes_to": None if self.routes_to is None else list(self.routes_to),
        }
        return encode(load_schema("node_registration"), record)

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeRegistration:
        """Raises ``MalformedEventError`` or ``UnknownSchemaError``."""
        _, record = _registration_decoder().decode(data)
        routes_to = record.get("routes_to")
        return cls(
            **{
                **record,
                "include": tuple(record["include"]),
                "exclude": tuple(record["exclude"]),
                "routes_to": None if routes_to is None else tuple(routes_to),
            }
        )


@dataclass(frozen=True)
class PartitionSync:
    """How far a region has applied one partition of a releases topic."""

    topic: str
    partition: int
    applied_offset: int
    log_end: int
    behind: int
    behind_is_lower_bound: bool = False
    oldest_unapplied_at: datetime | None = None


@dataclass(frozen=True)
class NodeStatus:
    """A node's heartbeat: its sync state, measured from the log, and its health."""

    node_id: str
    region: str
    base_url: str
    sequence: int
    heartbeat_at: datetime
    partitions: tuple[PartitionSync, ...]
    events_behind: int
    behind_is_lower_bound: bool
    seconds_behind: float | None
    artifacts_pending: int
    rejected_total: int
    store_bytes: int | None
    trust_root_version: int
    state: str
    detail: str = ""

    def __post_init__(self) -> None:
        problems: list[str] = []
        _check_common(self.node_id, self.region, self.base_url, problems)
        if self.state not in NODE_STATES:
            problems.append(f"state {self.state!r} is not one of {', '.join(NODE_STATES)}")
        if self.sequence < 0 or self.events_behind < 0:
            problems.append("sequence and events_behind cannot be negative")
        _raise_if(problems, "node status")

    def applied_offset(self, topic: str, partition: int) -> int:
        """Every event of ``topic[partition]`` below this offset is applied (0: none known)."""
        for sync in self.partitions:
            if sync.topic == topic and sync.partition == partition:
                return sync.applied_offset
        return 0

    def has_applied(self, position: str) -> bool:
        """Whether the event at ``position`` (``topic:partition:offset``) is applied here."""
        topic, partition, offset = split_position(position)
        return self.applied_offset(topic, partition) > offset

    def to_bytes(self) -> bytes:
        record: dict[str, Any] = {
            **self.__dict__,
            "partitions": [sync.__dict__ for sync in self.partitions],
        }
        return encode(load_schema("node_status"), record)

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeStatus:
        """Raises ``MalformedEventError`` or ``UnknownSchemaError``."""
        _, record = _status_decoder().decode(data)
        partitions = tuple(PartitionSync(**sync) for sync in record.pop("partitions"))
        return cls(**record, partitions=partitions)


def shown_state(
    status: NodeStatus | None,
    *,
    heard_at: datetime | None,
    now: datetime,
    silent_after: timedelta = SILENT_AFTER,
) -> str:
    """What a reader says of a node (one of ``SHOWN_STATES``) from its last heartbeat.

    ``heard_at`` is when the reader last heard from it (its last heartbeat, else its
    registration), on whichever clock the reader trusts. A goodbye stays ``stopped``
    however old; any other heartbeat older than ``silent_after`` is ``silent``, whatever
    it said, and so is a registration with no heartbeat after it.
    """
    if status is not None and status.state == "stopped":
        return "stopped"
    if heard_at is None or now - heard_at > silent_after:
        return "silent"
    return "starting" if status is None else status.state


def split_position(position: str) -> tuple[str, int, int]:
    """``topic:partition:offset`` → its parts; raises ``MalformedEventError``."""
    try:
        topic, partition, offset = position.rsplit(":", 2)
        return topic, int(partition), int(offset)
    except ValueError:
        raise MalformedEventError(
            f"{position!r} is not a topic:partition:offset position"
        ) from None


@cache
def _registration_decoder() -> Decoder:
    return Decoder(schema_family("node_registration"))


@cache
def _registration_fingerprints() -> frozenset[bytes]:
    return frozenset(v.fingerprint for v in schema_family("node_registration").versions)


@cache
def _status_decoder() -> Decoder:
    return Decoder(schema_family("node_status"))


def seal_registration(registration: NodeRegistration, key: SigningKey) -> bytes:
    """The registration signed by the node's key (which must be the one it names)."""
    if key.public_key.keyid != registration.node_id:
        raise ValueError("a registration must be signed by the key it registers")
    return seal(registration.to_bytes(), [key])


def open_registration(data: bytes) -> NodeRegistration:
    """A registration checked against the key it carries.

    Raises ``MalformedEventError`` or ``SignatureError``.
    """
    envelope = SignedEvent.from_bytes(data)
    registration = NodeRegistration.from_bytes(envelope.payload)
    open_sealed(data, {registration.node_id: registration.key})
    return registration


def seal_status(status: NodeStatus, key: SigningKey) -> bytes:
    if key.public_key.keyid != status.node_id:
        raise ValueError("a heartbeat must be signed by its node's key")
    return seal(status.to_bytes(), [key])


def open_status(data: bytes, registered: Mapping[str, PublicKey]) -> NodeStatus:
    """A heartbeat checked against the key its node registered.

    Raises ``MalformedEventError``, or ``SignatureError`` when the node is not
    registered or another key signed.
    """
    envelope = SignedEvent.from_bytes(data)
    status = NodeStatus.from_bytes(envelope.payload)
    key = registered.get(status.node_id)
    if key is None:
        raise SignatureError(
            f"heartbeat of node {status.node_id[:16]} which has no registration; "
            "the node must publish its registration first"
        )
    open_sealed(data, {status.node_id: key})
    return status


#: Lag samples kept per node for a status page's chart (at a 10 s heartbeat, 2 hours).
LAG_HISTORY = 720


@dataclass(frozen=True)
class LagSample:
    """A node's events behind at one moment (from a heartbeat or its own measurement)."""

    at: datetime
    events_behind: int


@dataclass
class NodeBook:
    """The latest verified registration and heartbeat of every node, from the status topic.

    ``add`` takes records in log order; the last verified one of each kind wins.
    ``history`` keeps each node's recent heartbeats as lag samples.
    """

    registrations: dict[str, NodeRegistration] = field(default_factory=dict)
    statuses: dict[str, NodeStatus] = field(default_factory=dict)
    history: dict[str, deque[LagSample]] = field(default_factory=dict)

    def add(self, value: bytes) -> NodeRegistration | NodeStatus:
        """Verify and keep one record of the status topic, a registration or a heartbeat.

        Raises ``MalformedEventError`` or ``SignatureError``.
        """
        payload = SignedEvent.from_bytes(value).payload
        if fingerprint_of(payload) in _registration_fingerprints():
            registration = open_registration(value)
            known = self.registrations.get(registration.node_id)
            if known is None or registration.registered_at >= known.registered_at:
                self.registrations[registration.node_id] = registration
            return registration
        keys = {node: r.key for node, r in self.registrations.items()}
        status = open_status(value, keys)
        registration = self.registrations[status.node_id]
        if (status.region, status.base_url) != (registration.region, registration.base_url):
            raise SignatureError(
                f"heartbeat of node {status.node_id[:16]} names {status.region} "
                f"{status.base_url}, its registration {registration.region} "
                f"{registration.base_url}; the node must register again"
            )
        # The last in log order wins. A replayed older heartbeat can only show
        # less applied, never more, so it cannot send clients to a node too early.
        self.statuses[status.node_id] = status
        samples = self.history.setdefault(status.node_id, deque(maxlen=LAG_HISTORY))
        samples.append(LagSample(status.heartbeat_at, status.events_behind))
        return status
