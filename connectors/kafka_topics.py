"""The federation's Kafka topics: their names, their creation, their partitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.cimpl import NewTopic

from connectors.kafka_connection import admin_client
from connectors.store import redact_url
from schemas.errors import BrokerUnavailableError

#: Partitions of the downloads topic. A region's counts go to one of them
#: (``schemas.partitioning.region_partition``) and its workers read that one only, so a
#: worker reads its own region's counts and those of the regions sharing its partition:
#: with N regions, (N - 1) / 64 others on average. A topic that already exists keeps its
#: count (``ensure_topics`` never repartitions); with one partition every worker reads all.
DOWNLOADS_PARTITIONS = 64


@dataclass(frozen=True)
class Topics:
    """The names of the topics a federation uses; tests give each run its own."""

    releases: str = "fair.releases"
    rejected: str = "fair.rejected"
    trust: str = "fair.trust"
    replicas: str = "fair.replicas"
    #: Each region's counts in one partition: ``schemas.partitioning.region_partition``.
    downloads: str = "fair.downloads"
    #: Compacted: each node's signed registration and latest heartbeat.
    status: str = "fair.status"
    #: Prefix of each region's view topic (``view``).
    view_prefix: str = "fair.view."

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            releases=f"{prefix}fair.releases",
            rejected=f"{prefix}fair.rejected",
            trust=f"{prefix}fair.trust",
            replicas=f"{prefix}fair.replicas",
            downloads=f"{prefix}fair.downloads",
            status=f"{prefix}fair.status",
            view_prefix=f"{prefix}fair.view.",
        )

    @property
    def prefix(self) -> str:
        """The prefix the topics were named with (``with_prefix``), ``""`` for the defaults."""
        return self.releases.removesuffix("fair.releases")

    def view(self, region: str) -> str:
        """The region's view topic (compacted, key = package): every worker and frontend of
        the region follows it into its own local view."""
        return f"{self.view_prefix}{region}"

    def partitions(self, releases: int) -> dict[str, int]:
        """Partition counts to create: releases by package, download counts by region
        (``DOWNLOADS_PARTITIONS``), the others in one ordered log."""
        return {
            self.releases: releases,
            self.rejected: 1,
            self.trust: 1,
            self.replicas: 1,
            self.downloads: DOWNLOADS_PARTITIONS,
            self.status: 1,
        }

    @property
    def compacted(self) -> frozenset[str]:
        """Topics where only the last record of each key matters."""
        return frozenset({self.status})


def ensure_topics(
    broker_url: str,
    partitions: Mapping[str, int],
    *,
    compacted: Iterable[str] = (),
    timeout: float = 15.0,
) -> None:
    """Create the topics that do not exist yet (``compacted`` ones with
    ``cleanup.policy=compact``); existing ones are left as they are.

    Raises ``BrokerUnavailableError`` when the broker does not answer.
    """
    admin = admin_client(broker_url)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"broker {redact_url(broker_url)} did not list topics: {exc}"
        ) from exc
    compact = set(compacted)
    wanted = [
        NewTopic(
            name,
            num_partitions=count,
            replication_factor=1,
            config={"cleanup.policy": "compact"} if name in compact else {},
        )
        for name, count in partitions.items()
        if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BrokerUnavailableError(
                f"broker {redact_url(broker_url)} did not create {name}: {exc}"
            ) from exc


def ensure_region_topics(broker_url: str, topics: Topics, region: str, partitions: int) -> None:
    """The federation's topics and the region's view topic (compacted, as many partitions as
    the releases topic). Raises ``BrokerUnavailableError``."""
    view = topics.view(region)
    ensure_topics(
        broker_url,
        {**topics.partitions(partitions), view: partitions},
        compacted={*topics.compacted, view},
    )


def topic_partitions(broker_url: str, topic: str, *, timeout: float = 15.0) -> list[int]:
    """The partitions of ``topic`` (empty when it does not exist; never creates it).

    Raises ``BrokerUnavailableError``.
    """
    admin = admin_client(broker_url)
    try:
        # Listing all topics: asking about one by name makes the broker create it.
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"broker {redact_url(broker_url)} did not list topics: {exc}"
        ) from exc
    found = metadata.topics.get(topic)
    return sorted(found.partitions) if found is not None else []
