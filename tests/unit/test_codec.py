"""Avro single-object encoding (schemas.codec) and the ReleasePublished event (schemas.events)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import codec
from schemas.errors import (
    MalformedEventError,
    UnknownSchemaError,
    UnsafeNameError,
    WrongPackageError,
)
from schemas.events import Artifact, ReleasePublished, check_consistency
from schemas.signing import Signature, SignedEvent

AVRO_DIR = Path("schemas/avro")
# Every released schema version, as "family/vN", read from the files themselves.
SCHEMA_FILES = tuple(
    sorted(f"{path.parent.name}/{path.stem}" for path in AVRO_DIR.glob("*/v*.avsc"))
)
SHA256 = hashlib.sha256(b"token").hexdigest()
SHA1 = hashlib.sha1(b"token").hexdigest()


# ---------------------------------------------------------------------------
# CRC-64-AVRO, written from the Avro specification ("Schema Fingerprints"):
#
#   static long fingerprint64(byte[] buf) {
#     if (FP_TABLE == null) initFPTable();
#     long fp = EMPTY;
#     for (int i = 0; i < buf.length; i++)
#       fp = (fp >>> 8) ^ FP_TABLE[(int)(fp ^ buf[i]) & 0xff];
#     return fp;
#   }
#   static long EMPTY = 0xc15d213aa4d7a795L;
#   static void initFPTable() {
#     for (int i = 0; i < 256; i++) {
#       long fp = i;
#       for (int j = 0; j < 8; j++) fp = (fp >>> 1) ^ (EMPTY & -(fp & 1L));
#       FP_TABLE[i] = fp;
#     }
#   }
#
# Single-object encoding stores it as 8 little-endian bytes after C3 01.
# ---------------------------------------------------------------------------

CRC64_EMPTY = 0xC15D213AA4D7A795
_MASK64 = (1 << 64) - 1


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            # -(fp & 1) is all ones or zero in Java's 64-bit two's complement.
            fp = (fp >> 1) ^ (CRC64_EMPTY & (-(fp & 1) & _MASK64))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    fp = CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def latest_file(family: str) -> Path:
    return max(AVRO_DIR.glob(f"{family}/v*.avsc"), key=lambda path: int(path.stem[1:]))


def canonical_form(file_name: str) -> str:
    parsed = fastavro.parse_schema(orjson.loads((AVRO_DIR / f"{file_name}.avsc").read_bytes()))
    canonical: str = fastavro.schema.to_parsing_canonical_form(parsed)
    return canonical


@pytest.mark.parametrize(
    ("schema_text", "expected"),
    [
        # Values from apache/avro share/test/data/schema-tests.txt (Java longs).
        ('"null"', 7195948357588979594),
        ('"int"', 8247732601305521295),
        ('"string"', -8142146995180207161),
        ('{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ],
)
def test_the_reference_crc64_matches_the_avro_test_vectors(schema_text: str, expected: int) -> None:
    assert signed64(crc64_avro(schema_text.encode())) == expected


@pytest.mark.parametrize("file_name", SCHEMA_FILES)
def test_fingerprint_is_crc64_avro_of_the_parsing_canonical_form(file_name: str) -> None:
    canonical = canonical_form(file_name)
    expected = crc64_avro(canonical.encode()).to_bytes(8, "little")

    family, version = file_name.split("/")
    assert codec.schema_family(family).versions[int(version[1:]) - 1].fingerprint == expected


def test_canonical_form_strips_logical_types() -> None:
    # Parsing Canonical Form keeps only what parsing needs: timestamp-millis is a long.
    canonical = canonical_form("release_published/v2")

    assert '{"name":"published_at","type":"long"}' in canonical
    assert "logicalType" not in canonical
    assert "doc" not in canonical


def release(**changes: Any) -> ReleasePublished:
    fields: dict[str, Any] = {
        "package": "drupal/token",
        "drupal_version": "8.x-1.9",
        "version": "1.9.0",
        "published_at": datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC),
        "artifact": Artifact(
            sha256=SHA256, sha1=SHA1, size=1234, origin_url="https://ftp.drupal.org/token.zip"
        ),
        "composer": {"name": "drupal/token", "version": "1.9.0", "type": "drupal-module"},
    }
    fields.update(changes)
    return ReleasePublished(**fields)


def test_header_is_magic_then_fingerprint() -> None:
    data = release().to_bytes()
    expected = crc64_avro(canonical_form("release_published/v3").encode()).to_bytes(8, "little")

    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected
    assert codec.fingerprint_of(data) == expected
    assert codec.HEADER_SIZE == 10


def test_body_is_plain_avro_readable_with_fastavro_alone() -> None:
    event = release()
    data = event.to_bytes()
    parsed = fastavro.parse_schema(orjson.loads(latest_file("release_published").read_bytes()))

    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), parsed, parsed)

    assert isinstance(record, dict)
    assert record["package"] == "drupal/token"
    assert record["published_at"] == event.published_at
    assert orjson.loads(record["composer"]) == event.composer


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

_SEGMENT = st.from_regex(r"\A[a-z0-9]{1,6}\Z")
VENDORS = st.builds(
    lambda first, rest: first + "".join(rest),
    _SEGMENT,
    st.lists(st.tuples(st.sampled_from(["", "_", ".", "-"]), _SEGMENT).map("".join), max_size=2),
)
PROJECTS = st.builds(
    lambda first, rest: first + "".join(rest),
    _SEGMENT,
    st.lists(
        st.tuples(st.sampled_from(["", "_", ".", "-", "--"]), _SEGMENT).map("".join), max_size=2
    ),
)
PACKAGES = st.builds(lambda vendor, project: f"{vendor}/{project}", VENDORS, PROJECTS)
HEX = st.sampled_from("0123456789abcdef")
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
# Events carry milliseconds in UTC (timestamp-millis).
TIMESTAMPS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))


# Versions as events carry them: safe as object keys (no '/', '..', '%', controls).
VERSION_TEXTS = st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9_+-]|\.(?!\.)){0,30}\Z").filter(
    lambda text: ".." not in text
)


@st.composite
def releases(draw: st.DrawFn) -> ReleasePublished:
    package = draw(PACKAGES)
    version = draw(VERSION_TEXTS)
    extra = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5))
    return ReleasePublished(
        package=package,
        drupal_version=draw(VERSION_TEXTS),
        version=version,
        sequence=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        published_at=draw(TIMESTAMPS),
        artifact=Artifact(
            sha256="".join(draw(st.lists(HEX, min_size=64, max_size=64))),
            sha1="".join(draw(st.lists(HEX, min_size=40, max_size=40))),
            size=draw(st.integers(min_value=0, max_value=2**63 - 1)),
            origin_url=draw(st.sampled_from(["http://", "https://"])) + draw(st.text(max_size=30)),
        ),
        composer={**extra, "name": package, "version": version},
    )


@given(releases())
def test_release_round_trips(event: ReleasePublished) -> None:
    data = event.to_bytes()

    decoded = ReleasePublished.from_bytes(data)

    assert decoded == event
    assert decoded.published_at.tzinfo is not None
    # Deterministic: the same event always gives the same payload (it gets signed).
    assert decoded.to_bytes() == data


@given(releases(), st.data())
def test_every_truncation_is_malformed(event: ReleasePublished, data: st.DataObject) -> None:
    encoded = event.to_bytes()
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="cut")

    with pytest.raises(MalformedEventError) as raised:
        ReleasePublished.from_bytes(encoded[:cut])

    assert type(raised.value) is MalformedEventError
    message = str(raised.value)
    if cut < codec.HEADER_SIZE:
        assert f"got {cut} bytes" in message
        assert "C3 01" in message
    else:
        assert "ReleasePublished record does not decode" in message


def test_empty_input_is_malformed() -> None:
    with pytest.raises(MalformedEventError, match="got 0 bytes starting with nothing"):
        ReleasePublished.from_bytes(b"")


@pytest.mark.parametrize("magic", [b"\xc3\x00", b"\xc2\x01", b"\x00\x00", b"Ob"])
def test_wrong_magic_is_malformed(magic: bytes) -> None:
    data = magic + release().to_bytes()[2:]

    with pytest.raises(MalformedEventError, match="not an Avro single-object record") as raised:
        ReleasePublished.from_bytes(data)

    assert type(raised.value) is MalformedEventError
    assert magic.hex() in str(raised.value)


def test_unknown_fingerprint_is_unknown_schema() -> None:
    data = bytearray(release().to_bytes())
    data[2:10] = bytes.fromhex("0102030405060708")

    with pytest.raises(UnknownSchemaError) as raised:
        ReleasePublished.from_bytes(bytes(data))

    message = str(raised.value)
    assert "0102030405060708" in message
    assert codec.load_schema("release_published").fingerprint.hex() in message
    assert "upgrade fairstream" in message
    assert raised.value.reason == "unknown-schema"


def test_another_known_schema_is_not_a_release() -> None:
    envelope = SignedEvent(payload=b"x", signatures=(Signature("k", b"s"),)).to_bytes()

    with pytest.raises(
        UnknownSchemaError, match=codec.load_schema("signed_event").fingerprint.hex()
    ):
        ReleasePublished.from_bytes(envelope)


@pytest.mark.parametrize("garbage", [b"\x00", b"\xff" * 7, b"trailing"])
def test_trailing_bytes_are_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedEventError, match=f"has {len(garbage)} trailing bytes") as raised:
        ReleasePublished.from_bytes(release().to_bytes() + garbage)

    assert type(raised.value) is MalformedEventError


def test_decode_picks_the_matching_reader() -> None:
    envelope = SignedEvent(payload=b"p", signatures=()).to_bytes()
    readers = (codec.load_schema("release_published"), codec.load_schema("signed_event"))

    schema, record = codec.decode(envelope, *readers)

    assert schema.name == "org.fairstream.v1.SignedEvent"
    assert record == {"payload": b"p", "signatures": []}


def test_encode_refuses_a_record_that_does_not_fit() -> None:
    schema = codec.load_schema("signed_event")

    with pytest.raises(
        ValueError, match=re.escape("does not fit Avro schema org.fairstream.v1.SignedEvent")
    ):
        codec.encode(schema, {"payload": "not bytes", "signatures": []})
    with pytest.raises(ValueError, match="does not fit"):
        codec.encode(schema, {"payload": b"", "signatures": [], "extra": 1})


# ---------------------------------------------------------------------------
# Field validation, on construction and on decode
# ---------------------------------------------------------------------------


def raw_release(**changes: Any) -> bytes:
    """A ReleasePublished single object written with codec.encode, bypassing the dataclass."""
    record: dict[str, Any] = {
        "package": "drupal/token",
        "drupal_version": "8.x-1.9",
        "version": "1.9.0",
        "published_at": datetime(2024, 5, 1, tzinfo=UTC),
        "artifact": {
            "sha256": SHA256,
            "sha1": SHA1,
            "size": 10,
            "origin_url": "https://ftp.drupal.org/token.zip",
        },
        "composer": '{"name":"drupal/token","version":"1.9.0"}',
    }
    artifact = {k: changes.pop(k) for k in list(changes) if k in record["artifact"]}
    record["artifact"].update(artifact)
    record.update(changes)
    return codec.encode(codec.load_schema("release_published"), record)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"sha256": SHA256.upper()}, "artifact.sha256 is not 64 lower-case hex digits"),
        ({"sha256": SHA256[:-1]}, "artifact.sha256 is not 64 lower-case hex digits"),
        ({"sha1": SHA1 + "0"}, "artifact.sha1 is not 40 lower-case hex digits"),
        ({"size": -1}, "artifact.size is negative (-1)"),
        (
            {"origin_url": "ftp://x/token.zip"},
            "artifact.origin_url 'ftp://x/token.zip' is not http(s)",
        ),
        (
            {
                "package": "Drupal/Token",
                "composer": '{"name":"Drupal/Token","version":"1.9.0"}',
            },
            "package 'Drupal/Token' is not a Composer name",
        ),
        ({"package": "token"}, "package 'token' is not a Composer name"),
        ({"composer": "{not json"}, "composer field is not JSON"),
        ({"composer": "[1, 2]"}, "composer field is not a JSON object"),
    ],
)
def test_invalid_fields_are_malformed_on_decode(changes: dict[str, Any], problem: str) -> None:
    data = raw_release(**changes)

    with pytest.raises(MalformedEventError) as raised:
        ReleasePublished.from_bytes(data)

    assert problem in str(raised.value)
    assert raised.value.reason == "malformed"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(MalformedEventError) as raised:
        release(
            package="drupal/Token",
            artifact=Artifact(sha256="x", sha1="y", size=-5, origin_url="file:///etc/passwd"),
        )

    message = str(raised.value)
    for problem in (
        "package 'drupal/Token'",
        "artifact.sha256",
        "artifact.sha1",
        "artifact.size is negative (-5)",
        "'file:///etc/passwd' is not http(s)",
    ):
        assert problem in message


def test_construction_validates_like_decode() -> None:
    event = release()

    with pytest.raises(MalformedEventError, match=re.escape("artifact.sha256")):
        dataclasses.replace(event, artifact=dataclasses.replace(event.artifact, sha256="00"))
    with pytest.raises(UnsafeNameError, match=re.escape("path traversal")):
        dataclasses.replace(event, version="../1.9.0")


@pytest.mark.parametrize("field", ["package", "sha256", "sha1"])
def test_a_trailing_newline_is_malformed(field: str) -> None:
    changes: dict[str, Any] = {
        "package": {
            "package": "drupal/token\n",
            "composer": orjson.dumps({"name": "drupal/token\n", "version": "1.9.0"}).decode(),
        },
        "sha256": {"sha256": SHA256 + "\n"},
        "sha1": {"sha1": SHA1 + "\n"},
    }[field]
    data = raw_release(**changes)

    try:
        ReleasePublished.from_bytes(data)
    except MalformedEventError:
        return
    raise AssertionError(f"a {field} ending in a newline was accepted")


def test_metadata_of_another_package_is_wrong_package() -> None:
    event = ReleasePublished.from_bytes(
        raw_release(composer='{"name":"drupal/pathauto","version":"1.9.0"}')
    )

    with pytest.raises(WrongPackageError, match="carries Composer metadata of 'drupal/pathauto'"):
        check_consistency(event)
    check_consistency(ReleasePublished.from_bytes(raw_release()))  # the untouched one passes


def test_metadata_of_another_version_is_malformed() -> None:
    event = ReleasePublished.from_bytes(
        raw_release(composer='{"name":"drupal/token","version":"2.0.0"}')
    )

    with pytest.raises(MalformedEventError, match=r"its metadata '2\.0\.0'"):
        check_consistency(event)


def test_a_v1_release_is_read_by_the_v2_reader_with_sequence_zero() -> None:
    v1 = codec.schema_family("release_published").versions[0]
    _, record = codec.decode(raw_release(), codec.load_schema("release_published"))
    del record["sequence"], record["rebuild_of"]
    data = codec.encode(v1, record)

    event = ReleasePublished.from_bytes(data)

    assert event.sequence == 0
    assert event.package == "drupal/token"
    assert event.rebuild_of is None


def test_a_v2_release_is_read_by_the_v3_reader_as_a_first_build() -> None:
    v2 = codec.schema_family("release_published").versions[1]
    _, record = codec.decode(raw_release(), codec.load_schema("release_published"))
    del record["rebuild_of"]
    event = ReleasePublished.from_bytes(codec.encode(v2, record))
    assert event.rebuild_of is None and event.sequence == record["sequence"]
