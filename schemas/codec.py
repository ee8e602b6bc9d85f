"""Avro single-object encoding: ``C3 01`` + 8-byte CRC-64-AVRO fingerprint + body.

A reader that has the ``.avsc`` files and no registry decodes every record on
the wire: the fingerprint names the writer's schema.
"""

from __future__ import annotations

import io
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

    @classmethod
    def from_json(cls, schema_json: bytes) -> AvroSchema:
        """Parse an Avro schema document; raises ``ValueError`` if it is not a valid schema."""
        parsed = fastavro.parse_schema(orjson.loads(schema_json))
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        # fastavro prints the CRC-64-AVRO value as the hex of its little-endian
        # bytes, which is exactly the byte order single-object encoding wants.
        fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        name = parsed["name"] if isinstance(parsed, dict) else str(parsed)
        return cls(name=name, parsed=parsed, fingerprint=fingerprint)


@cache
def load_schema(file_name: str) -> AvroSchema:
    """Load ``schemas/avro/<file_name>.avsc`` shipped with this package."""
    data = resources.files("schemas").joinpath("avro", f"{file_name}.avsc").read_bytes()
    return AvroSchema.from_json(data)


def encode(schema: AvroSchema, record: dict[str, Any]) -> bytes:
    """Encode ``record`` with ``schema`` as one Avro single object.

    Raises ``ValueError`` when the record does not fit the schema.
    """
    buffer = io.BytesIO()
    buffer.write(MAGIC)
    buffer.write(schema.fingerprint)
    try:
        fastavro.schemaless_writer(buffer, schema.parsed, record, strict=True)
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


def decode(data: bytes, *readers: AvroSchema) -> tuple[AvroSchema, dict[str, Any]]:
    """Decode a single object written with one of ``readers``' schemas.

    Returns the matching schema and the record. Raises ``UnknownSchemaError``
    when the fingerprint is none of theirs and ``MalformedEventError`` when the
    body does not decode.
    """
    fingerprint = fingerprint_of(data)
    for schema in readers:
        if schema.fingerprint == fingerprint:
            break
    else:
        known = ", ".join(f"{s.name}={s.fingerprint.hex()}" for s in readers)
        raise UnknownSchemaError(
            f"record written with unknown schema fingerprint {fingerprint.hex()} "
            f"(this reader knows {known}); upgrade fairstream if the publisher is newer"
        )
    body = io.BytesIO(data[HEADER_SIZE:])
    try:
        record = fastavro.schemaless_reader(body, schema.parsed, schema.parsed)
    except Exception as exc:  # fastavro raises many types on truncated or garbled bodies
        raise MalformedEventError(
            f"{schema.name} record does not decode ({type(exc).__name__}: {exc})"
        ) from exc
    if body.tell() != len(data) - HEADER_SIZE:
        raise MalformedEventError(
            f"{schema.name} record has {len(data) - HEADER_SIZE - body.tell()} trailing bytes"
        )
    if not isinstance(record, dict):
        raise MalformedEventError(f"{schema.name} record decoded to {type(record).__name__}")
    return schema, record
