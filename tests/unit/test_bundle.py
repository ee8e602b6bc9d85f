"""schemas.bundle: the signed manifest, the chain of bundles and the record framing. Pure."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from schemas.bundle import (
    MAX_RECORD_BYTES,
    BundleChainError,
    BundleContentError,
    BundleSignatureError,
    Imported,
    Manifest,
    Segment,
    ZipEntry,
    check_chain,
    frame_record,
    read_records,
    sign_manifest,
    verify_manifest,
)
from schemas.signing import SigningKey

EXPORTER = SigningKey(seed=b"\x41" * 32)
STRANGER = SigningKey(seed=b"\x42" * 32)
PINNED = {EXPORTER.public_key.keyid: EXPORTER.public_key}
AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def segment(first: int, last: int, partition: int = 0, topic: str = "fair.releases") -> Segment:
    return Segment(
        topic,
        partition,
        first,
        last,
        last - first + 1,
        f"records/{topic}/{partition}.log",
        "ab" * 32,
    )


def manifest(sequence: int = 1, previous: str | None = None, *segments: Segment) -> Manifest:
    return Manifest(
        exporter=EXPORTER.public_key.raw.hex(),
        sequence=sequence,
        previous=previous,
        created_at=AT,
        segments=segments or (segment(0, 9), segment(0, 4, partition=1)),
        zips=(ZipEntry("cd" * 32, 1234),),
        covers_from=AT,
        covers_to=AT,
        root_version=3,
        root_expires=AT,
    )


def test_a_signed_manifest_round_trips_and_verifies() -> None:
    first = manifest()
    data = first.to_bytes()

    assert verify_manifest(data, sign_manifest(first, EXPORTER), PINNED) == first
    assert Manifest.from_bytes(data).digest == first.digest


def test_a_changed_byte_of_the_manifest_is_refused() -> None:
    first = manifest()
    signature = sign_manifest(first, EXPORTER)
    changed = first.to_bytes().replace(b'"count":10', b'"count":11')
    assert changed != first.to_bytes()

    with pytest.raises(BundleSignatureError, match="does not match its signature"):
        verify_manifest(changed, signature, PINNED)
    with pytest.raises(BundleSignatureError, match="does not match its signature"):
        verify_manifest(first.to_bytes(), bytes(64), PINNED)


def test_a_bundle_of_an_exporter_not_pinned_is_refused() -> None:
    theirs = replace(manifest(), exporter=STRANGER.public_key.raw.hex())

    with pytest.raises(BundleSignatureError, match="not among the exporters"):
        verify_manifest(theirs.to_bytes(), sign_manifest(theirs, STRANGER), PINNED)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not one fairstream writes"),
        (orjson.dumps({"format": "other/1"}), "format is 'other/1'"),
    ],
)
def test_a_manifest_that_is_not_one_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(BundleContentError, match=problem):
        verify_manifest(data, b"", PINNED)


def test_a_manifest_in_another_form_is_refused_even_if_it_means_the_same() -> None:
    first = manifest()
    reformatted = orjson.dumps(orjson.loads(first.to_bytes()), option=orjson.OPT_INDENT_2)

    with pytest.raises(BundleContentError, match="canonical"):
        verify_manifest(reformatted, sign_manifest(first, EXPORTER), PINNED)


def imported(m: Manifest) -> Imported:
    return Imported(m.sequence, m.digest, {(s.topic, s.partition): s.last for s in m.segments})


def test_bundles_chain_in_order_and_a_second_import_changes_nothing() -> None:
    first = manifest()
    second = manifest(2, first.digest, segment(10, 19), segment(5, 5, partition=1))

    assert check_chain(first, None) is True
    assert check_chain(first, imported(first)) is False
    assert check_chain(second, imported(first)) is True


@pytest.mark.parametrize(
    ("bundle", "problem"),
    [
        ("skipped", "bundle 4 follows bundle 3, not imported here"),
        ("replayed", "bundle 1 is older than bundle 2, already imported"),
        ("forked", "bundle 3 does not chain to the last one imported"),
        ("gap", "starts at offset 21 in bundle 3, not at 20"),
    ],
)
def test_a_bundle_that_does_not_follow_the_last_one_imported_is_refused(
    bundle: str, problem: str
) -> None:
    first = manifest()
    second = manifest(2, first.digest, segment(10, 19), segment(5, 5, partition=1))
    third = manifest(3, second.digest, segment(20, 29))
    fourth = manifest(4, third.digest, segment(30, 39))
    cases = {
        "skipped": (fourth, imported(second)),
        "replayed": (first, imported(second)),
        "forked": (manifest(3, "00" * 32, segment(20, 29)), imported(second)),
        "gap": (manifest(3, second.digest, segment(21, 29)), imported(second)),
    }
    offered, last = cases[bundle]

    with pytest.raises(BundleChainError, match=problem):
        check_chain(offered, last)


def test_records_are_framed_and_read_back_one_at_a_time() -> None:
    records = [
        (0, 1_700_000_000_000, b"drupal/token", b"\xc3\x01signed"),
        (1, 1_700_000_000_001, None, b""),
        (7, 1_700_000_000_002, b"", bytes(range(256)) * 10),
    ]
    stream = io.BytesIO(b"".join(frame_record(*r) for r in records))

    read = [(r.offset, r.timestamp_ms, r.key, r.value) for r in read_records(stream, member="m")]

    assert read == records


def test_a_truncated_or_oversized_member_is_refused_naming_it() -> None:
    whole = frame_record(3, 0, b"k", b"value")
    for cut in (5, len(whole) - 1):
        with pytest.raises(BundleContentError, match=r"records/x\.log is truncated"):
            list(read_records(io.BytesIO(whole[:cut]), member="records/x.log"))
    # A header announcing a value one byte over the limit: refused before it is read.
    huge = frame_record(4, 0, None, b"")[:-4] + (MAX_RECORD_BYTES + 1).to_bytes(4, "big")
    with pytest.raises(BundleContentError, match="over the"):
        list(read_records(io.BytesIO(huge), member="records/x.log"))
