"""``fairstream bundle export``: a segment of the connected network's log, and its zips, in one
signed file (``schemas.bundle``).

The bundle is an uncompressed tar, written member by member and never held in memory:

- ``records/<topic>/<partition>.log``: every record of the trust and releases topics from
  where the previous bundle ended (offset 0 for the first) to the log's end, byte for byte
  with their offsets; a partition with nothing new has an empty member, so every bundle
  says where each partition stands;
- ``zips/<sha256>.zip``: the zips those releases reference that the exporting region's
  store holds (filtered by package patterns), each checked against its sha256 on the way;
- ``manifest.json`` and ``manifest.sig`` last: what the bundle holds, signed by the
  exporting node's key, chained to the previous bundle.

It is written beside the target and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from connectors.kafka_reading import iter_partition_records
from connectors.kafka_topics import Topics, topic_partitions
from connectors.object_store import ObjectStore
from schemas import layout
from schemas.bundle import (
    BundleContentError,
    Manifest,
    Segment,
    ZipEntry,
    frame_record,
    sign_manifest,
)
from schemas.errors import RejectedError, StoreUnavailableError
from schemas.events import ReleasePublished, decode_package_event
from schemas.signing import SignedEvent, SigningKey
from schemas.trust import TrustRoot
from services.bundles.members import manifest_member

_CHUNK = 1 << 20


@dataclass
class ExportReport:
    manifest: Manifest
    path: Path
    records: int = 0
    zip_bytes: int = 0
    #: Zips the releases reference that the store does not hold (parked there): not carried.
    missing: list[str] = field(default_factory=list)


#: The topics a bundle carries, by the names a manifest gives them (every network adds its
#: own prefix), in the order they are imported: trust roots first.
CARRIED = ("fair.trust", "fair.releases")


def local_topic(topics: Topics, carried: str) -> str:
    """This network's name of a carried topic. Raises ``BundleContentError`` for another."""
    names = {"fair.trust": topics.trust, "fair.releases": topics.releases}
    if carried not in names:
        raise BundleContentError(f"a bundle carries {', '.join(CARRIED)}, not {carried!r}")
    return names[carried]


# Long because keyword-only: what a bundle is cut from (broker, topics, store, key, filters, chain).
def export_bundle(
    *,
    broker_url: str,
    topics: Topics,
    store: ObjectStore,
    key: SigningKey,
    out: Path,
    root: TrustRoot,
    previous: Manifest | None = None,
    carries_zip: Callable[[str], bool] = lambda package: True,
    on_record: Callable[[], None] = lambda: None,
    on_zip: Callable[[int], None] = lambda size: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ExportReport:
    """Write the bundle that follows ``previous`` (None: the first) to ``out``.

    Raises ``BrokerUnavailableError``, ``StoreUnavailableError`` or ``OSError``; nothing is
    left at ``out`` unless the bundle is whole.
    """
    starts = {(s.topic, s.partition): s.last + 1 for s in previous.segments} if previous else {}
    partial = out.with_name(f".{out.name}.partial")
    segments: list[Segment] = []
    referenced: dict[str, str] = {}
    stamps: list[int] = []
    records = 0
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as bundle:
        for carried in CARRIED:
            topic = local_topic(topics, carried)
            for partition in topic_partitions(broker_url, topic):
                start = starts.get((carried, partition), 0)
                segment, count = _add_partition(
                    bundle,
                    (carried, topic),
                    partition,
                    broker_url,
                    start,
                    referenced,
                    stamps,
                    on_record,
                )
                segments.append(segment)
                records += count
        zips, missing, zip_bytes = _add_zips(bundle, store, referenced, carries_zip, on_zip)
        manifest = Manifest(
            exporter=key.public_key.raw.hex(),
            sequence=1 if previous is None else previous.sequence + 1,
            previous=None if previous is None else previous.digest,
            created_at=clock(),
            segments=tuple(segments),
            zips=tuple(zips),
            covers_from=_moment(min(stamps)) if stamps else None,
            covers_to=_moment(max(stamps)) if stamps else None,
            root_version=root.version,
            root_expires=root.expires,
        )
        _add_bytes(bundle, "manifest.json", manifest.to_bytes())
        _add_bytes(bundle, "manifest.sig", sign_manifest(manifest, key))
    partial.replace(out)
    return ExportReport(manifest, out, records, zip_bytes, missing)


def _add_partition(  # the exporter's running totals travel with it; a reason for 8
    bundle: tarfile.TarFile,
    names: tuple[str, str],
    partition: int,
    broker_url: str,
    start: int,
    referenced: dict[str, str],
    stamps: list[int],
    on_record: Callable[[], None],
) -> tuple[Segment, int]:
    """Frame one partition's records from ``start`` into a member (spooled to disk: a tar
    member's size comes first); note the zips its releases reference. ``names``: the
    topic's carried name (in the manifest) and its name in this network."""
    carried, topic = names
    member = f"records/{carried}/{partition}.log"
    digest = hashlib.sha256()
    count, last = 0, start - 1
    with tempfile.TemporaryFile() as spool:
        for offset, timestamp, key, value in iter_partition_records(
            broker_url, topic, partition, start=start
        ):
            framed = frame_record(offset, timestamp, key, value)
            spool.write(framed)
            digest.update(framed)
            count, last = count + 1, offset
            if timestamp > 0:
                stamps.append(timestamp)
            _note_zip(value, referenced)
            on_record()
        size = spool.tell()
        spool.seek(0)
        _add_stream(bundle, member, spool, size)
    return Segment(carried, partition, start, last, count, member, digest.hexdigest()), count


def _note_zip(value: bytes, referenced: dict[str, str]) -> None:
    """Remember the zip a release references (sha256 → package); other records, and records
    that do not decode (the disconnected nodes refuse them as online), reference none."""
    try:
        event = decode_package_event(SignedEvent.from_bytes(value).payload)
    except RejectedError:
        return
    if isinstance(event, ReleasePublished):
        referenced.setdefault(event.artifact.sha256, event.package)


def _add_zips(
    bundle: tarfile.TarFile,
    store: ObjectStore,
    referenced: dict[str, str],
    carries_zip: Callable[[str], bool],
    on_zip: Callable[[int], None],
) -> tuple[list[ZipEntry], list[str], int]:
    zips: list[ZipEntry] = []
    missing: list[str] = []
    total = 0
    for sha256, package in sorted(referenced.items()):
        if not carries_zip(package):
            continue
        reader = store.reader(layout.artifact_key(sha256))
        if reader is None:
            missing.append(sha256)
            continue
        entry = ZipEntry(sha256, reader.size)
        checked = _Sha256Reader(reader.read)
        try:
            _add_stream(bundle, entry.member, checked, reader.size)
        finally:
            reader.close()
        if checked.hexdigest() != sha256:
            raise StoreUnavailableError(
                f"the store's copy of {sha256} has other bytes (sha256 {checked.hexdigest()}); "
                "it is damaged: run `fairstream node rebuild` for the region, then export again"
            )
        zips.append(entry)
        total += entry.size
        on_zip(entry.size)
    return zips, missing, total


class _Sha256Reader:
    """A reader that hashes what passes through it."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._read(_CHUNK if size is None or size < 0 else size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _add_stream(
    bundle: tarfile.TarFile, name: str, stream: BinaryIO | _Sha256Reader, size: int
) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    bundle.addfile(info, stream)


def _add_bytes(bundle: tarfile.TarFile, name: str, data: bytes) -> None:
    _add_stream(bundle, name, io.BytesIO(data), len(data))


def _moment(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def read_manifest(path: Path) -> Manifest:
    """The manifest of the bundle at ``path`` (to export the one that follows it); the
    exporter reads its own bundle, so only its form is checked. Raises
    ``BundleContentError`` or ``OSError``."""
    with tarfile.open(path, "r:") as bundle:
        return Manifest.from_bytes(manifest_member(bundle, "manifest.json", path))
