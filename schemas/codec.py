"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + body.

A reader that has the ``.avsc`` files and no registry decodes every record on
the wire: the fingerprint names the writer's schema.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
import fastavro.schema
import orjson

from schemas.errors import MalformedEventError, UnknownSchemaError

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


@dataclass(frozen=True)
class AvroSchema:
    """One parsed ``.avsc`` file and its single-object fingerprint."""

    name: str
    parsed: Any
    fingerprint: bytes
    family: str = ""
    version: int = 0

    @classmethod
    def from_json(cls, schema_json: bytes, *, family: str = "", version: int = 0) -> AvroSchema:
        """Parse an Avro schema document; raises ``ValueError`` if it is not a valid schema."""
        parsed = fastavro.parse_schema(orjson.loads(schema_json))
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        # fastavro prints the CRC-64-AVRO value as the hex of its little-endian
        # bytes, which is exactly the byte order single-object encoding wants.
        fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        name = parsed["name"] if isinstance(parsed, dict) else str(parsed)
        return cls(
            name=name, parsed=parsed, fingerprint=fingerprint, family=family, version=version
        )


@dataclass(frozen=True)
class SchemaFamily:
    """Every released version of one event schema, oldest first.

    Writers use the latest version; readers decode any version they know into
    the latest (Avro schema resolution), so old and new peers interoperate.
    """

    name: str
    versions: tuple[AvroSchema, ...]

    @property
    def latest(self) -> AvroSchema:
        return self.versions[-1]

    def writer(self, fingerprint: bytes) -> AvroSchema | None:
        """The version whose fingerprint this is, or None."""
        for schema in self.versions:
            if schema.fingerprint == fingerprint:
                return schema
        return None


_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


@cache
def schema_family(name: str) -> SchemaFamily:
    """All versions of ``schemas/avro/<name>/v<N>.avsc``; raises ``ValueError`` if none or a gap."""
    folder = resources.files("schemas").joinpath("avro", name)
    found: dict[int, AvroSchema] = {}
    for entry in folder.iterdir():
        match = _VERSION_FILE.match(entry.name)
        if match:
            version = int(match[1])
            found[version] = AvroSchema.from_json(entry.read_bytes(), family=name, version=version)
    if not found or sorted(found) != list(range(1, len(found) + 1)):
        raise ValueError(f"schema family {name} needs v1.avsc, v2.avsc, ... without gaps")
    return SchemaFamily(name=name, versions=tuple(found[v] for v in sorted(found)))


def family_names() -> tuple[str, ...]:
    """The names of every schema family shipped in ``schemas/avro``."""
    folder = resources.files("schemas").joinpath("avro")
    return tuple(sorted(entry.name for entry in folder.iterdir() if entry.is_dir()))


def load_schema(name: str) -> AvroSchema:
    """The latest version of schema family ``name``: what writers use."""
    return schema_family(name).latest


def encode(schema: AvroSchema, record: dict[str, Any]) -> bytes:
    """Encode ``record`` with ``schema`` as one Avro single object.

    Raises ``ValueError`` when the record does not fit the schema.
    """
    buffer = io.BytesIO()
    buffer.write(MAGIC)
    buffer.write(schema.fingerprint)
    try:
        fastavro.schemaless_writer(buffer, schema.parsed, record, strict_allow_default=True)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"record does not fit Avro schema {schema.name}: {exc}") from exc
    return buffer.getvalue()


def fingerprint_of(data: bytes) -> bytes:
    """The writer-schema fingerprint of a single object; raises ``MalformedEventError``."""
    if len(data) < HEADER_SIZE or data[:2] != MAGIC:
        raise MalformedEventError(
            f"not an Avro single-object record: expected {HEADER_SIZE}+ bytes starting "
            f"with C3 01, got {len(data)} bytes starting with {data[:2].hex() or 'nothing'}; "
            "produce fairstream events with `fairstream publish`"
        )
    return data[2:HEADER_SIZE]


class Decoder:
    """Decodes single objects written with any of a fixed set of schemas.

    A ``SchemaFamily`` accepts any of its versions and resolves the record into
    its latest version; a bare ``AvroSchema`` accepts exactly that schema. The
    lookup from fingerprint to schemas is built once: decoding is on the hot
    path of every node.
    """

    def __init__(self, *readers: AvroSchema | SchemaFamily) -> None:
        self._readers = readers
        self._by_fingerprint: dict[bytes, tuple[AvroSchema, Any]] = {}
        for candidate in reversed(readers):  # the first reader given wins a shared fingerprint
            if isinstance(candidate, SchemaFamily):
                for version in candidate.versions:
                    # Without a distinct reader schema fastavro skips schema resolution.
                    reader = None if version is candidate.latest else candidate.latest.parsed
                    self._by_fingerprint[version.fingerprint] = (version, reader)
            else:
                self._by_fingerprint[candidate.fingerprint] = (candidate, None)

    def decode(self, data: bytes) -> tuple[AvroSchema, dict[str, Any]]:
        """The writer's schema and the record. Raises ``UnknownSchemaError``, ``MalformedEventError``."""
        found = self._by_fingerprint.get(fingerprint_of(data))
        if found is None:
            known = ", ".join(_describe(r) for r in self._readers)
            raise UnknownSchemaError(
                f"record written with unknown schema fingerprint {fingerprint_of(data).hex()} "
                f"(this reader knows {known}); upgrade fairstream if the publisher is newer"
            )
        writer, reader = found
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, reader)
        except Exception as exc:  # fastavro raises many types on truncated or garbled bodies
            raise MalformedEventError(
                f"{writer.name} record does not decode ({type(exc).__name__}: {exc})"
            ) from exc
        if body.tell() != len(data):
            raise MalformedEventError(
                f"{writer.name} record has {len(data) - body.tell()} trailing bytes"
            )
        if not isinstance(record, dict):
            raise MalformedEventError(f"{writer.name} record decoded to {type(record).__name__}")
        return writer, record


def decode(data: bytes, *readers: AvroSchema | SchemaFamily) -> tuple[AvroSchema, dict[str, Any]]:
    """Decode a single object written with one of ``readers``' schemas (see ``Decoder``).

    Returns the writer's schema and the record. Raises ``UnknownSchemaError``
    when the fingerprint is none of theirs and ``MalformedEventError`` when the
    body does not decode.
    """
    return Decoder(*readers).decode(data)


def _describe(reader: AvroSchema | SchemaFamily) -> str:
    if isinstance(reader, SchemaFamily):
        return ", ".join(
            f"{reader.name} v{s.version}={s.fingerprint.hex()}" for s in reader.versions
        )
    return f"{reader.name}={reader.fingerprint.hex()}"
