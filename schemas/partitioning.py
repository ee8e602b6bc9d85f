"""Which partition a region's records go to: the contract of the downloads topic.

Every producer of ``fair.downloads`` sends a region's ``DownloadCounts`` to partition
``region_partition(region, n)`` of the topic's ``n`` partitions, and sets that partition
explicitly rather than leaving it to its client: the clients' default partitioners
disagree (Kafka's Java clients and aiokafka, so Faust, hash the key with murmur2;
librdkafka, so confluent-kafka, with crc32 by default). A worker then follows that one
partition only, so what it reads grows with its own region's downloads (and those of the
regions whose names share its partition), not with every region's.

The hash is Kafka's own: murmur2 of the region's UTF-8 name (aiokafka's implementation), as
the Java client's default partitioner computes it for key = region
(``Utils.toPositive(Utils.murmur2(key)) % n``).
A record produced by such a client with the region as its key lands where this says.
The answer depends on ``n``: records produced before the topic gained partitions stay
where they were.
"""

from __future__ import annotations

# Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``) as aiokafka, which Faust
# runs on, implements it: the same function the key partitioner of Faust's producer uses.
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]


def region_partition(region: str, partitions: int) -> int:
    """The partition, of a topic's ``partitions`` (numbered 0 to ``partitions`` - 1), that
    holds ``region``'s records. Raises ``ValueError`` for fewer than one partition."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    hashed: int = murmur2(region.encode("utf-8"))
    return (hashed & 0x7FFFFFFF) % partitions
