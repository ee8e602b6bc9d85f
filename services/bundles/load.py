"""``fairstream bundle import``: a bundle into a network with no link to the one it came from.

Nothing is changed until the whole bundle is checked: the manifest's signature against the
pinned exporters' keys, its place in the chain (``schemas.bundle.check_chain``: the bundle
that follows the last one imported here, which the network's store remembers under
``bundles/``), and the sha256 of every member against the manifest. Then, in this order:

1. the zips go into the region's store (content addressed, each checked again on the way),
   so the nodes find them when they apply the releases;
2. the records go into the local broker, to the same topic, partition and **offset** as in
   the network they came from, trust roots first. The disconnected nodes verify each one
   against their pinned trust root, exactly as online: a bundle cannot bring in anything a
   node would refuse.
3. the store records the bundle as imported.

Importing again is safe: a bundle already imported changes nothing; one cut short (a crash,
Ctrl-C) resumes where it stopped, after checking that the records already in the log at
those offsets are the bundle's.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from connectors.kafka_producers import EventProducer
from connectors.kafka_reading import iter_partition_records
from connectors.kafka_topics import Topics, ensure_topics, topic_partitions
from connectors.object_store import ObjectStore
from schemas import layout
from schemas.bundle import (
    BundleChainError,
    BundleContentError,
    BundledRecord,
    Imported,
    Manifest,
    Segment,
    ZipEntry,
    check_chain,
    read_records,
    verify_manifest,
)
from schemas.errors import ConfigurationError
from schemas.signing import PublicKey
from services.bundles.export import local_topic
from services.bundles.members import manifest_member, member_stream

#: Where a network's store remembers the bundles it imported.
IMPORTED_KEY = "bundles/imported.json"
#: Records produced together.
BATCH = 1000
_CHUNK = 1 << 20


@dataclass
class LoadReport:
    manifest: Manifest
    #: False: the bundle was the last one imported here already; nothing changed.
    imported: bool
    records: int = 0
    #: Records found already in the log (a resumed import).
    records_present: int = 0
    zips: int = 0
    zips_present: int = 0


def load_bundle(
    path: Path,
    *,
    broker_url: str,
    topics: Topics,
    store: ObjectStore,
    exporters: dict[str, PublicKey],
    producer: EventProducer,
    on_record: Callable[[], None] = lambda: None,
    on_zip: Callable[[int], None] = lambda size: None,
) -> LoadReport:
    """Import the bundle at ``path`` (see the module docstring).

    Raises ``BundleRefusedError`` (signature, chain, content: nothing changed),
    ``ConfigurationError`` (the local topics do not fit), ``BrokerUnavailableError``,
    ``StoreUnavailableError`` or ``OSError`` (a rerun resumes).
    """
    with tarfile.open(path, "r:") as bundle:
        manifest = verify_manifest(
            manifest_member(bundle, "manifest.json", path),
            manifest_member(bundle, "manifest.sig", path),
            exporters,
        )
        if not check_chain(manifest, last_imported(store)):
            return LoadReport(manifest, imported=False)
        _check_members(bundle, manifest, path)
        report = LoadReport(manifest, imported=True)
        for entry in manifest.zips:
            if _store_zip(bundle, entry, store, path):
                report.zips += 1
                on_zip(entry.size)
            else:
                report.zips_present += 1
        _ensure_partitions(broker_url, topics, manifest)
        for segment in manifest.segments:
            produced, present = _load_segment(
                bundle,
                segment,
                local_topic(topics, segment.topic),
                broker_url,
                producer,
                path,
                on_record,
            )
            report.records += produced
            report.records_present += present
    _remember(store, manifest)
    return report


def last_imported(store: ObjectStore) -> Imported | None:
    """The last bundle imported into this network, from its store (None: none yet)."""
    body = store.get(IMPORTED_KEY)
    if body is None:
        return None
    document = orjson.loads(body.data)
    return Imported(
        sequence=int(document["sequence"]),
        digest=str(document["digest"]),
        last_offsets={
            (str(entry["topic"]), int(entry["partition"])): int(entry["last"])
            for entry in document["segments"]
        },
    )


def _remember(store: ObjectStore, manifest: Manifest) -> None:
    store.put_bytes(
        f"bundles/{manifest.sequence:08d}-{manifest.digest}.json",
        manifest.to_bytes(),
        content_type="application/json",
    )
    store.put_bytes(
        IMPORTED_KEY,
        orjson.dumps(
            {
                "sequence": manifest.sequence,
                "digest": manifest.digest,
                "segments": [
                    {"topic": s.topic, "partition": s.partition, "last": s.last}
                    for s in manifest.segments
                ],
            }
        ),
        content_type="application/json",
    )


def _check_members(bundle: tarfile.TarFile, manifest: Manifest, path: Path) -> None:
    """Every member the manifest names has the bytes it signed. Raises ``BundleContentError``."""
    expected = [(s.member, s.sha256) for s in manifest.segments]
    expected += [(z.member, z.sha256) for z in manifest.zips]
    for name, sha256 in expected:
        stream, _ = member_stream(bundle, name, path)
        digest = hashlib.sha256()
        with stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise BundleContentError(
                f"{path}: {name} is not what the manifest signed (sha256 {digest.hexdigest()}, "
                f"signed {sha256}): the bundle was changed after it was exported; nothing was "
                "imported"
            )


def _store_zip(bundle: tarfile.TarFile, entry: ZipEntry, store: ObjectStore, path: Path) -> bool:
    """Put one zip into the store unless it holds it; True when it was written."""
    key = layout.artifact_key(entry.sha256)
    held = store.stat(key)
    if held is not None and held.size == entry.size:
        return False
    stream, size = member_stream(bundle, entry.member, path)
    with stream, tempfile.NamedTemporaryFile(suffix=".zip") as spool:
        digest = hashlib.sha256()
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            spool.write(chunk)
        spool.flush()
        if digest.hexdigest() != entry.sha256 or size != entry.size:
            raise BundleContentError(
                f"{path}: {entry.member} changed while it was imported; run the import again"
            )
        store.put_file(key, Path(spool.name), content_type="application/zip")
    return True


def _ensure_partitions(broker_url: str, topics: Topics, manifest: Manifest) -> None:
    """The local topics exist with at least the bundle's partitions; created if missing."""
    needed: dict[str, int] = {}
    for segment in manifest.segments:
        topic = local_topic(topics, segment.topic)
        needed[topic] = max(needed.get(topic, 0), segment.partition + 1)
    missing = {t: n for t, n in needed.items() if not topic_partitions(broker_url, t)}
    if missing:
        ensure_topics(broker_url, missing)
    for topic, count in needed.items():
        have = len(topic_partitions(broker_url, topic))
        if have < count:
            raise ConfigurationError(
                f"the local {topic} has {have} partitions, the bundle's network {count}: a "
                "record must land in the partition it came from; create the topic with "
                f"{count} partitions"
            )


def _load_segment(  # one segment's whole context; a reason for 7
    bundle: tarfile.TarFile,
    segment: Segment,
    topic: str,
    broker_url: str,
    producer: EventProducer,
    path: Path,
    on_record: Callable[[], None],
) -> tuple[int, int]:
    """Produce one segment's records at their offsets; (produced, already present)."""
    if segment.count == 0:
        return 0, 0
    _check_start(broker_url, topic, segment)
    # What a cut-short import left: a prefix of the segment, read in step with the bundle
    # (never held whole), to its end before anything more is produced.
    present: Iterator[tuple[int, int, bytes | None, bytes]] | None = iter_partition_records(
        broker_url, topic, segment.partition, start=segment.first
    )
    stream, _ = member_stream(bundle, segment.member, path)
    produced = 0
    with stream:
        pending: list[BundledRecord] = []
        for record in _in_order(read_records(stream, member=segment.member), segment):
            there = None if present is None else next(present, None)
            if there is None:
                present = None
            else:
                offset, _, key, value = there
                if (offset, key, value) != (record.offset, record.key, record.value):
                    raise BundleChainError(
                        f"the local {topic}[{segment.partition}] holds another record "
                        f"at offset {offset} than the bundle: this network's log is not "
                        "the one the bundles were made for"
                    )
                continue
            pending.append(record)
            if len(pending) >= BATCH:
                produced += _produce(producer, topic, segment, pending, on_record)
                pending = []
        produced += _produce(producer, topic, segment, pending, on_record)
    return produced, segment.count - produced


def _check_start(broker_url: str, topic: str, segment: Segment) -> None:
    """The local partition ends right before the segment (or already holds some of it)."""
    if segment.first == 0:
        return
    before = next(
        iter_partition_records(broker_url, topic, segment.partition, start=segment.first - 1),
        None,
    )
    if before is None or before[0] != segment.first - 1:
        raise BundleChainError(
            f"the local {topic}[{segment.partition}] does not hold offset "
            f"{segment.first - 1}, the one before this bundle's: import the earlier bundles first"
        )


def _in_order(records: Iterator[BundledRecord], segment: Segment) -> Iterator[BundledRecord]:
    expected = segment.first
    for record in records:
        if record.offset != expected:
            raise BundleContentError(
                f"{segment.member}: offset {record.offset} where {expected} was expected"
            )
        expected += 1
        yield record
    if expected != segment.last + 1:
        raise BundleContentError(f"{segment.member} ends at {expected - 1}, not {segment.last}")


def _produce(
    producer: EventProducer,
    topic: str,
    segment: Segment,
    records: list[BundledRecord],
    on_record: Callable[[], None],
) -> int:
    if not records:
        return 0
    delivered = producer.produce_many(
        topic, [(r.key, r.value) for r in records], partition=segment.partition
    )
    for record, landed in zip(records, delivered, strict=True):
        if landed.offset != record.offset:
            raise BundleChainError(
                f"{topic}[{segment.partition}]: a record of the bundle landed at offset "
                f"{landed.offset}, not {record.offset}: something else writes this topic; "
                "stop it, then import again"
            )
        on_record()
    return len(records)
