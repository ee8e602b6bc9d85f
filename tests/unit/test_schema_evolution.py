"""The contract evolves compatibly: every schema version reads its neighbours' records.

Each family lives in ``schemas/avro/<family>/v<N>.avsc``. A released version is
immutable (its fingerprint is pinned in ``schemas/avro/fingerprints.json``);
a change is a new version that the previous one can read, and that can read
the previous one. These tests fail when someone breaks either promise.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import codec
from schemas.events import decode_package_event

PINS: dict[str, str] = orjson.loads(Path("schemas/avro/fingerprints.json").read_bytes())
FAMILIES = codec.family_names()
PAIRS = [
    (family, older, newer)
    for family in FAMILIES
    for older, newer in zip(
        codec.schema_family(family).versions, codec.schema_family(family).versions[1:], strict=False
    )
]


def records_of(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """A Hypothesis strategy of values valid for a parsed Avro schema."""
    named = {} if named is None else named
    if isinstance(schema, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
            "bytes": st.binary(max_size=20),
            "string": st.text(max_size=20),
        }
        if schema in primitive:
            return primitive[schema]
        return st.deferred(lambda: named[schema])
    if isinstance(schema, list):
        return st.one_of([records_of(branch, named) for branch in schema])
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return st.datetimes(
            min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
    if kind == "record":
        strategy = st.fixed_dictionaries(
            {field["name"]: records_of(field["type"], named) for field in schema["fields"]}
        )
        named[schema["name"]] = strategy
        return strategy
    if kind == "array":
        return st.lists(records_of(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=5), records_of(schema["values"], named), max_size=3)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    return records_of(kind, named)


def resolve(data: bytes, writer: codec.AvroSchema, reader: codec.AvroSchema) -> Any:
    return fastavro.schemaless_reader(
        io.BytesIO(data[codec.HEADER_SIZE :]), writer.parsed, reader.parsed
    )


def test_every_released_version_is_pinned_and_unchanged() -> None:
    found = {
        f"{family}/v{schema.version}": schema.fingerprint.hex()
        for family in FAMILIES
        for schema in codec.schema_family(family).versions
    }
    changed = {name for name in PINS if name in found and found[name] != PINS[name]}
    assert not changed, (
        f"released schemas {sorted(changed)} were edited: a released version is immutable; "
        "restore it and add the change as the next version"
    )
    assert set(found) == set(PINS), (
        "every schema version must be pinned in schemas/avro/fingerprints.json "
        f"(missing: {sorted(set(found) - set(PINS))}; gone: {sorted(set(PINS) - set(found))})"
    )


def test_there_is_an_evolution_to_check() -> None:
    # release_published v1 → v2 added the per-package sequence.
    assert ("release_published", 1, 2) in [(f, o.version, n.version) for f, o, n in PAIRS]


@pytest.mark.parametrize(
    ("family", "older", "newer"), PAIRS, ids=lambda v: str(getattr(v, "version", v))
)
@given(data=st.data())
def test_newer_reader_reads_older_records(
    family: str, older: codec.AvroSchema, newer: codec.AvroSchema, data: st.DataObject
) -> None:
    record = data.draw(records_of(older.parsed))
    encoded = codec.encode(older, record)

    resolved = resolve(encoded, older, newer)

    for field in older.parsed["fields"]:
        if field["name"] in resolved:
            # Fields the newer version added inside nested records take their defaults.
            assert as_older(resolved[field["name"]], field["type"]) == record[field["name"]]


def as_older(value: Any, schema: Any) -> Any:
    """``value`` read by a newer schema, cut back to the fields of the older ``schema``."""
    if isinstance(schema, dict) and schema.get("type") == "record" and isinstance(value, dict):
        return {f["name"]: as_older(value.get(f["name"]), f["type"]) for f in schema["fields"]}
    if isinstance(schema, dict) and schema.get("type") == "array" and isinstance(value, list):
        return [as_older(item, schema["items"]) for item in value]
    return value


@pytest.mark.parametrize(
    ("family", "older", "newer"), PAIRS, ids=lambda v: str(getattr(v, "version", v))
)
@given(data=st.data())
def test_older_reader_reads_newer_records(
    family: str, older: codec.AvroSchema, newer: codec.AvroSchema, data: st.DataObject
) -> None:
    record = data.draw(records_of(newer.parsed))
    encoded = codec.encode(newer, record)

    resolved = resolve(encoded, newer, older)

    assert set(resolved) == {field["name"] for field in older.parsed["fields"]}


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_every_family_round_trips_its_latest_version(family: str, data: st.DataObject) -> None:
    schema = codec.load_schema(family)
    record = data.draw(records_of(schema.parsed))

    written, decoded = codec.decode(codec.encode(schema, record), codec.schema_family(family))

    assert written == schema
    assert decoded == record


def test_a_reader_missing_a_field_default_is_caught() -> None:
    """The check above is able to fail: a v2 that adds a field without default breaks v1 data."""
    v1 = codec.schema_family("release_published").versions[0]
    broken = orjson.loads(orjson.dumps(v1.parsed))
    broken["fields"].append({"name": "required_new", "type": "string"})
    broken_schema = codec.AvroSchema.from_json(
        orjson.dumps({k: v for k, v in broken.items() if not k.startswith("__")})
    )
    record = {
        "package": "drupal/token",
        "drupal_version": "8.x-1.9",
        "version": "1.9.0",
        "published_at": datetime(2024, 1, 1, tzinfo=UTC),
        "artifact": {"sha256": "0" * 64, "sha1": "0" * 40, "size": 1, "origin_url": "https://x"},
        "composer": "{}",
    }

    with pytest.raises(fastavro.read.SchemaResolutionError):
        resolve(codec.encode(v1, record), v1, broken_schema)


def test_package_events_decode_from_any_known_version() -> None:
    v1 = codec.schema_family("release_published").versions[0]
    record = {
        "package": "drupal/token",
        "drupal_version": "8.x-1.9",
        "version": "1.9.0",
        "published_at": datetime(2024, 1, 1, tzinfo=UTC),
        "artifact": {
            "sha256": "0" * 64,
            "sha1": "0" * 40,
            "size": 1,
            "origin_url": "https://ftp.drupal.org/files/projects/token-8.x-1.9.zip",
        },
        "composer": '{"name":"drupal/token","version":"1.9.0"}',
    }

    event = decode_package_event(codec.encode(v1, record))

    assert event.package == "drupal/token"
    assert event.sequence == 0
