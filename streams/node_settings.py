"""A regional node's settings, and what follows from them alone: its consumer group, the
public URL its documents carry, the region's partition of the downloads topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import orjson

from connectors.kafka_followers import TopicFollower
from connectors.kafka_topics import Topics
from connectors.object_store import ObjectStore
from connectors.origin import FetchLimits
from connectors.store import StoreLocation
from schemas import layout
from schemas.events import DEFAULT_MAX_ARTIFACT_SIZE
from schemas.partitioning import region_partition
from schemas.signing import SigningKey
from streams.faults import FaultSpec
from streams.health import HealthRules
from streams.peer_config import PeerSettings
from streams.policy import ReplicationPolicy

# The node's logger name, as when this lived in streams/node.py: operators read its lines by it.
log = logging.getLogger("streams.node")


@dataclass(frozen=True)
class NodeSettings:
    """Everything a regional node's stream processing needs; built once by the CLI."""

    region: str
    broker_url: str = field(repr=False)  # may carry SASL credentials
    store: StoreLocation
    bucket: str
    public_url: str
    pinned_root: bytes
    data_dir: Path
    topics: Topics = Topics()
    policy: ReplicationPolicy = ReplicationPolicy()
    session_timeout: float = 10.0
    fetch_limits: FetchLimits = FetchLimits()
    max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE
    #: Records applied together: each package is written once per batch.
    batch_size: int = 1000
    #: How long a batch waits to fill; the floor of the publish-to-served latency.
    batch_within: float = 0.05
    #: How often parked fetches are looked at, and the first delay before one is retried.
    pending_interval: float = 15.0
    #: How often the region's download counts are produced.
    downloads_interval: float = 10.0
    #: The node's own key: with it, the node registers and sends heartbeats (sync state).
    node_key: SigningKey | None = None
    #: How often a heartbeat is sent.
    status_interval: float = 10.0
    #: Other networks this node follows, each under its own policy (streams/peering.py).
    peers: tuple[PeerSettings, ...] = ()
    #: A fault point armed by the fault harness (streams/faults.py); None in production.
    fault: FaultSpec | None = None
    #: Added to the wall clock for every decision and record of this node: the fault
    #: harness's clock skew (libfaketime hangs librdkafka, so it is done here). Zero in
    #: production.
    clock_skew: timedelta = timedelta(0)
    #: This worker's own copy of the region's view (sqlite and docroot); default
    #: ``data_dir/view``. Every worker needs its own.
    view_dir: Path | None = None
    #: Names this worker in the view records it writes.
    worker_name: str = "worker"
    #: Where the region's states and p2 documents live: ``bucket`` (the object store,
    #: fenced: ADR 4) or ``topic`` (the region's view topic and a local view per process:
    #: ADR 5, the default). ``bucket`` is kept for the tests that still drive it.
    view: str = "topic"
    #: When /health calls the worker stuck and /ready lets clients come (streams/health.py).
    health: HealthRules = HealthRules()

    @property
    def view_in_topic(self) -> bool:
        return self.view == "topic"

    @property
    def dead_letter_path(self) -> Path:
        """This worker's own dead-letter file (streams/dead_letter.py)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.worker_name)
        return self.data_dir / f"dead-letter-{safe}.jsonl"

    @property
    def group_id(self) -> str:
        return group_id(self.region, self.topics)


def region_public_url(store: ObjectStore, requested: str | None, default: str) -> str:
    """The public URL this worker renders documents with: the one its region recorded.

    A region's first worker records ``requested`` (or ``default``, its own address) in
    the bucket; a later worker started without ``--public-url`` takes the recorded one,
    so documents never point clients at one worker of many (it may be scaled away). A
    worker started with another ``--public-url`` records it and says so: documents
    written before keep the old URL until ``fairstream node rebuild`` re-renders them.
    Raises ``StoreUnavailableError``.
    """
    stored = store.get(layout.REGION_JSON)
    recorded: str | None = None
    if stored is not None:
        try:
            value = orjson.loads(stored.data).get("public_url")
            recorded = value if isinstance(value, str) and value else None
        except orjson.JSONDecodeError:
            recorded = None
    if requested is None and recorded is not None:
        return recorded
    chosen = (requested or default).rstrip("/")
    if chosen != recorded:
        if recorded is not None:
            log.warning(
                "the region's public URL changes from %s to %s; documents written before "
                "keep the old one until `fairstream node rebuild --public-url %s`",
                recorded,
                chosen,
                chosen,
            )
        store.put_bytes(
            layout.REGION_JSON,
            orjson.dumps({"public_url": chosen}),
            content_type="application/json",
        )
    return chosen


def group_id(region: str, topics: Topics) -> str:
    """The consumer group of a region: every worker of the region joins it.

    Topics under a prefix (another federation on the same brokers: a staging copy, a
    test, a benchmark) have groups of their own, named after the prefix
    (``fairstream-node-eu.staging`` for ``staging.fair.releases``): a group shared across
    federations would rebalance all of them whenever one of their workers came or went
    (and on Tansu 0.6 a member leaving mid-rebalance can leave a group stuck for good:
    ``docs/architecture.md``).
    Region names have no dots, so no two federations' groups share a name."""
    prefix = topics.prefix.rstrip(".")
    return f"fairstream-node-{region}.{prefix}" if prefix else f"fairstream-node-{region}"


def own_partition(region: str, partitions: list[int]) -> int:
    """Of a topic's partitions (sorted), the one holding ``region``'s records."""
    return partitions[region_partition(region, len(partitions))]


def region_downloads_follower(
    broker_url: str, topic: str, region: str, on_record: Callable[[bytes], None]
) -> TopicFollower:
    """A follower of the one partition of the downloads ``topic`` that holds ``region``'s
    counts (``region_partition``): the other regions' counts are never read, except those
    of regions whose names share the partition."""
    return TopicFollower(
        broker_url,
        topic,
        on_record,
        name="downloads",
        partitions=lambda found: [own_partition(region, found)],
    )
