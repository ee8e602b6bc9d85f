"""A rejection is recordable whatever was refused; the dead-letter file keeps what the broker
would not take (streams/dead_letter.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.codec import encode, schema_family
from schemas.errors import OversizedEventError
from schemas.events import (
    REJECTED_DETAIL_CHARS,
    REJECTED_KEY_CHARS,
    REJECTED_PREFIX_BYTES,
    ReleaseRejected,
)
from schemas.signing import MAX_EVENT_BYTES, SignedEvent, SigningKey, seal
from streams.dead_letter import DeadLetter, DeadLetterFile

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def rejection_of(value: bytes, **overrides: object) -> ReleaseRejected:
    fields: dict[str, object] = {
        "region": "eu",
        "topic": "fair.releases",
        "partition": 3,
        "offset": 41,
        "key": "junk",
        "reason": "oversized",
        "detail": "too big",
        **overrides,
    }
    return ReleaseRejected.refusing(value, rejected_at=AT, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 300, REJECTED_PREFIX_BYTES, 1_048_300, 5 << 20])
def test_a_rejection_carries_a_bounded_prefix_with_the_whole_size_and_digest(size: int) -> None:
    value = os.urandom(size)
    rejection = rejection_of(value)
    assert rejection.record == value[:REJECTED_PREFIX_BYTES]
    assert rejection.record_size == size
    assert rejection.record_sha256 == hashlib.sha256(value).hexdigest()
    assert rejection.truncated == (size > REJECTED_PREFIX_BYTES)
    encoded = rejection.to_bytes()
    assert len(encoded) < REJECTED_PREFIX_BYTES + 4 * 1024  # far below any broker's limit
    assert ReleaseRejected.from_bytes(encoded) == rejection


def test_a_huge_key_and_detail_are_cut_and_say_how_long_they_were() -> None:
    rejection = rejection_of(b"x", key="k" * 100_000, detail="d" * 50_000)
    assert rejection.key is not None
    assert rejection.key.startswith("k" * REJECTED_KEY_CHARS)
    assert rejection.key.endswith("(100,000 characters in all)")
    assert len(rejection.detail) < REJECTED_DETAIL_CHARS + 40
    assert "50,000 characters" in rejection.detail


def test_a_v1_rejection_reads_with_the_size_and_digest_of_the_whole_record_it_carried() -> None:
    value = b"refused bytes"
    v1 = schema_family("release_rejected").versions[0]
    old = encode(
        v1,
        {
            "region": "eu", "topic": "fair.releases", "partition": 0, "offset": 7, "key": None,
            "reason": "malformed", "detail": "d", "rejected_at": AT, "record": value,
        },
    )  # fmt: skip
    read = ReleaseRejected.from_bytes(old)
    assert (read.record, read.record_size) == (value, len(value))
    assert read.record_sha256 == hashlib.sha256(value).hexdigest()
    assert not read.truncated


def test_a_record_above_the_largest_event_is_refused_before_it_is_decoded() -> None:
    envelope = seal(b"payload", [SigningKey.generate()])
    # A valid envelope's header, then enough bytes to pass the limit: never decoded.
    oversized = envelope + b"\x00" * (MAX_EVENT_BYTES - len(envelope) + 1)
    with pytest.raises(OversizedEventError, match=f"{MAX_EVENT_BYTES + 1:,} bytes") as caught:
        SignedEvent.from_bytes(oversized)
    assert caught.value.reason == "oversized"


def test_seal_refuses_to_make_an_event_every_node_would_refuse() -> None:
    with pytest.raises(OversizedEventError, match="largest signed event"):
        seal(b"p" * MAX_EVENT_BYTES, [SigningKey.generate()])
    assert len(seal(b"p" * (MAX_EVENT_BYTES - 1024), [SigningKey.generate()])) <= MAX_EVENT_BYTES


def letter(offset: int) -> DeadLetter:
    value = rejection_of(os.urandom(100), offset=offset).to_bytes()
    return DeadLetter(b"junk", value, "KafkaTimeoutError")


def test_dead_letters_are_resent_in_order_and_kept_from_the_first_refusal_on(
    tmp_path: Path,
) -> None:
    file = DeadLetterFile(tmp_path / "dead-letter-eu.jsonl")
    letters = [letter(n) for n in (1, 2, 3)]
    for each in letters:
        file.append(each)
    assert file.waiting() == 3
    sent: list[bytes] = []

    async def accept_first_only(key: bytes, value: bytes) -> bool:
        sent.append(value)
        return len(sent) == 1

    assert asyncio.run(file.resend(accept_first_only)) == (1, 2)
    assert sent == [letters[0].value, letters[1].value]  # the third waits its turn
    assert file.letters() == letters[1:]

    async def accept(key: bytes, value: bytes) -> bool:
        return True

    assert asyncio.run(file.resend(accept)) == (2, 0)
    assert not file.path.exists()
    assert asyncio.run(file.resend(accept)) == (0, 0)


def test_a_dead_letter_line_is_readable_by_a_person(tmp_path: Path) -> None:
    file = DeadLetterFile(tmp_path / "d.jsonl")
    file.append(letter(41))
    line = file.path.read_text()
    for text in ('"topic":"fair.releases"', '"offset":41', '"reason":"oversized"',
                 '"not_recorded_because":"KafkaTimeoutError"'):  # fmt: skip
        assert text in line


def test_a_line_the_node_did_not_write_is_set_aside_not_lost(tmp_path: Path) -> None:
    file = DeadLetterFile(tmp_path / "d.jsonl")
    kept = letter(1)
    file.append(kept)
    with file.path.open("ab") as out:
        out.write(b"not json\n")
    assert file.letters() == [kept]

    async def accept(key: bytes, value: bytes) -> bool:
        return True

    assert asyncio.run(file.resend(accept)) == (1, 0)
    assert (tmp_path / "d.bad").read_bytes() == b"not json\n"
    assert not file.path.exists()
