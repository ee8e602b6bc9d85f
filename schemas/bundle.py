"""The signed bundle format: the log carried into a network with no Kafka link (issue 19).

A bundle holds a contiguous segment of the federation's log, the original signed records
byte for byte with their positions, and the zips they reference. Its manifest says what
it holds: per topic and partition, the offsets it covers and the digest of the member
holding them; each zip's sha256 and size; the trust root in force when it was made; the
time span its records cover (what a disconnected operator knows about freshness). The
manifest is signed by the exporting node's key and names the digest of the previous
bundle's manifest, so a missing, replayed, reordered or forked bundle is found before
anything is imported.

Nothing here trusts a bundle's records: the disconnected nodes verify every record against
their pinned trust root exactly as online. The manifest only protects the carrying (what
was exported is what is imported, in order, nothing left out).

The records of one partition are framed one after the other (``frame_record``), big-endian:

    offset u64 | timestamp ms i64 | key length + 1 u32 (0: no key) | key | value length u32 | value
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

import nacl.exceptions
import nacl.signing
import orjson

from schemas.errors import FairstreamError
from schemas.signing import PublicKey, SigningKey

FORMAT = "fairstream-bundle/1"
#: Prefix of the signed message: a manifest signature is never valid as an event's or a
#: request's, nor the reverse, though the same node key may sign other things.
BUNDLE_DOMAIN = b"fairstream/bundle-manifest/v1\x00"
#: The largest record a bundle carries: as the broker's own limit, larger is refused.
MAX_RECORD_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">QqI")  # offset, timestamp, key length (+1; 0: no key)
_VALUE_LENGTH = struct.Struct(">I")


class BundleRefusedError(FairstreamError):
    """A bundle that must not be imported: the message says what is wrong with it, ``reason``
    what kind of wrong. Not an event's rejection (nothing of it reaches ``fair.rejected``):
    the operator is told, and nothing is imported."""

    reason = "bundle-refused"


class BundleSignatureError(BundleRefusedError):
    reason = "bundle-signature"


class BundleChainError(BundleRefusedError):
    """Not the bundle that follows the last one imported (missing, replayed, reordered, forked)."""

    reason = "bundle-chain"


class BundleContentError(BundleRefusedError):
    """A member whose bytes are not the ones the manifest signed, or a malformed member."""

    reason = "bundle-content"


@dataclass(frozen=True)
class Segment:
    """The records of one partition a bundle carries: offsets ``first`` to ``last``."""

    topic: str
    partition: int
    first: int
    last: int
    count: int
    #: The member holding the framed records, and the sha256 of its bytes.
    member: str
    sha256: str


@dataclass(frozen=True)
class ZipEntry:
    sha256: str
    size: int

    @property
    def member(self) -> str:
        return f"zips/{self.sha256}.zip"


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds; signed by the exporting node (``exporter``, its public key hex)."""

    exporter: str
    sequence: int
    #: The sha256 of the previous bundle's manifest bytes; None for the first.
    previous: str | None
    created_at: datetime
    segments: tuple[Segment, ...]
    zips: tuple[ZipEntry, ...] = ()
    #: The time span of the records' own timestamps: how fresh the carried log is.
    covers_from: datetime | None = None
    covers_to: datetime | None = None
    #: The trust root in force at the exporter when it exported (version, expiry).
    root_version: int = 0
    root_expires: datetime | None = None
    format: str = field(default=FORMAT)

    def to_bytes(self) -> bytes:
        """The canonical bytes (sorted keys): what is signed and what the next one chains to."""
        return orjson.dumps(
            {
                "format": self.format,
                "exporter": self.exporter,
                "sequence": self.sequence,
                "previous": self.previous,
                "created_at": self.created_at,
                "segments": [s.__dict__ for s in self.segments],
                "zips": [z.__dict__ for z in self.zips],
                "covers": {"from": self.covers_from, "to": self.covers_to},
                "trust_root": {"version": self.root_version, "expires": self.root_expires},
            },
            option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Raises ``BundleContentError`` saying what is wrong."""
        try:
            document = orjson.loads(data)
            if document.get("format") != FORMAT:
                raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT!r}")
            covers, root = document["covers"], document["trust_root"]
            return cls(
                exporter=str(document["exporter"]),
                sequence=int(document["sequence"]),
                previous=document["previous"],
                created_at=datetime.fromisoformat(document["created_at"]),
                segments=tuple(Segment(**s) for s in document["segments"]),
                zips=tuple(ZipEntry(**z) for z in document["zips"]),
                covers_from=_time(covers["from"]),
                covers_to=_time(covers["to"]),
                root_version=int(root["version"]),
                root_expires=_time(root["expires"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleContentError(
                f"the bundle's manifest is not one fairstream writes: {exc}"
            ) from exc

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def sign_manifest(manifest: Manifest, key: SigningKey) -> bytes:
    """The exporter's signature over the manifest's bytes."""
    return nacl.signing.SigningKey(key.seed).sign(BUNDLE_DOMAIN + manifest.to_bytes()).signature


def verify_manifest(data: bytes, signature: bytes, exporters: dict[str, PublicKey]) -> Manifest:
    """The manifest in ``data`` if a key among ``exporters`` (by key id: the pinned keys of the
    nodes a disconnected operator imports from) signed exactly these bytes.

    Raises ``BundleSignatureError`` (unknown exporter, bad signature) or
    ``BundleContentError`` (not a manifest).
    """
    manifest = Manifest.from_bytes(data)
    if manifest.to_bytes() != data:
        raise BundleContentError("the bundle's manifest is not in its canonical form")
    try:
        exporter = PublicKey(raw=bytes.fromhex(manifest.exporter))
    except ValueError as exc:
        raise BundleContentError(f"the manifest's exporter is not a public key: {exc}") from exc
    if exporter.keyid not in exporters:
        raise BundleSignatureError(
            f"the bundle was exported by key {exporter.keyid[:16]}, which is not among the "
            "exporters this network imports from; pin the exporting node's public key"
        )
    try:
        nacl.signing.VerifyKey(exporter.raw).verify(BUNDLE_DOMAIN + data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise BundleSignatureError(
            "the bundle's manifest does not match its signature: it was changed after it "
            "was exported; ask for the bundle again"
        ) from exc
    return manifest


@dataclass(frozen=True)
class Imported:
    """The last bundle a network imported: where the chain stands."""

    sequence: int
    digest: str
    #: Per (topic, partition), the last offset imported.
    last_offsets: dict[tuple[str, int], int]


def check_chain(manifest: Manifest, last: Imported | None) -> bool:
    """Whether ``manifest`` is new: True to import it, False if it is the last one imported
    again (importing twice changes nothing).

    Raises ``BundleChainError`` for a bundle that does not follow the last one imported: one
    skipped, an older one replayed, another exporter's fork, or a segment that does not
    start right after the offsets already imported.
    """
    if last is not None and manifest.digest == last.digest:
        return False
    expected = 1 if last is None else last.sequence + 1
    if manifest.sequence != expected or manifest.previous != (last.digest if last else None):
        if last is not None and manifest.sequence <= last.sequence:
            what = (
                f"bundle {manifest.sequence} is older than bundle {last.sequence}, already imported"
            )
        elif manifest.sequence > expected:
            what = f"bundle {manifest.sequence} follows bundle {manifest.sequence - 1}, not imported here"
        else:
            what = f"bundle {manifest.sequence} does not chain to the last one imported"
        raise BundleChainError(
            f"{what}; import the bundles in order, each once (the last imported here: "
            f"{'none' if last is None else last.sequence})"
        )
    for segment in manifest.segments:
        done = None if last is None else last.last_offsets.get((segment.topic, segment.partition))
        start = 0 if done is None else done + 1
        if segment.first != start:
            raise BundleChainError(
                f"{segment.topic}[{segment.partition}] starts at offset {segment.first} in "
                f"bundle {manifest.sequence}, not at {start}: records would be missing or twice"
            )
    return True


def frame_record(offset: int, timestamp_ms: int, key: bytes | None, value: bytes) -> bytes:
    """One record as a bundle member holds it."""
    key_length = 0 if key is None else len(key) + 1
    return (
        _HEADER.pack(offset, timestamp_ms, key_length)
        + (key or b"")
        + _VALUE_LENGTH.pack(len(value))
        + value
    )


@dataclass(frozen=True)
class BundledRecord:
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


def read_records(stream: IO[bytes], *, member: str) -> Iterator[BundledRecord]:
    """The records framed in ``stream``, one at a time (never the whole member in memory).

    Raises ``BundleContentError`` for a truncated member or a record over
    ``MAX_RECORD_BYTES``, naming ``member``.
    """
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        offset, timestamp_ms, key_length = _unpack(_HEADER, header, member)
        key = None
        if key_length:
            key = _read_exactly(stream, key_length - 1, member)
        (value_length,) = _unpack(_VALUE_LENGTH, stream.read(_VALUE_LENGTH.size), member)
        if value_length > MAX_RECORD_BYTES or key_length > MAX_RECORD_BYTES:
            raise BundleContentError(
                f"{member}: a record of {value_length} bytes at offset {offset}, over the "
                f"{MAX_RECORD_BYTES} a bundle carries"
            )
        yield BundledRecord(offset, timestamp_ms, key, _read_exactly(stream, value_length, member))


def _unpack(shape: struct.Struct, data: bytes, member: str) -> tuple[int, ...]:
    if len(data) != shape.size:
        raise BundleContentError(f"{member} is truncated: it ends inside a record")
    return shape.unpack(data)


def _read_exactly(stream: IO[bytes], size: int, member: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise BundleContentError(f"{member} is truncated: it ends inside a record")
    return data
