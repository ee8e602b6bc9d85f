"""streams.sinks and streams.rejections on a sink in memory: how often a record is written,
how long between attempts, and where a rejection the broker keeps refusing goes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from schemas.errors import BrokerUnavailableError
from schemas.events import ReleaseRejected
from streams.dead_letter import DeadLetterFile
from streams.rejections import REJECTION_ATTEMPTS, Rejections
from streams.sinks import MAX_BACKOFF_SECONDS, Record, deliver

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class MemorySink:
    """Refuses the first ``failures`` writes (as a broker that is down), then keeps each."""

    name = "fair.rejected"

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.written: list[Record] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise BrokerUnavailableError("broker down", retry_after=0.5)
        self.written.extend(records)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def test_a_record_is_written_again_after_each_refusal_waiting_longer_each_time() -> None:
    sink, sleeps = MemorySink(failures=3), Sleeps()

    error = asyncio.run(deliver(sink, [Record(b"k", b"v")], what="replica", sleep=sleeps))

    assert error is None
    assert sink.attempts == 4
    assert sink.written == [Record(b"k", b"v")]
    assert sleeps.delays == [1.0, 2.0, 4.0]


def test_an_unbounded_delivery_never_waits_longer_than_the_cap() -> None:
    sink, sleeps = MemorySink(failures=12), Sleeps()

    asyncio.run(deliver(sink, [Record(b"k", b"v")], what="replica", sleep=sleeps))

    assert len(sleeps.delays) == 12
    assert max(sleeps.delays) == MAX_BACKOFF_SECONDS
    assert sleeps.delays == sorted(sleeps.delays)


def test_a_bounded_delivery_gives_up_with_the_last_error_and_writes_nothing() -> None:
    sink, sleeps = MemorySink(failures=10), Sleeps()

    error = asyncio.run(
        deliver(sink, [Record(b"k", b"v")], what="rejection", attempts=3, sleep=sleeps)
    )

    assert error == "broker down"
    assert sink.attempts == 3 and sink.written == []
    assert sleeps.delays == [1.0, 2.0]  # none after the last attempt


def rejections(sink: MemorySink, tmp_path: Path, sleeps: Sleeps | None = None) -> Rejections:
    return Rejections(
        sink,
        DeadLetterFile(tmp_path / "dead-letter-eu.jsonl"),
        region="eu",
        clock=lambda: NOW,
        retry_after=0.0,
        sleep=sleeps or Sleeps(),
    )


def refuse(recorder: Rejections, offset: int, value: bytes = b"\x00junk") -> None:
    asyncio.run(
        recorder.record(
            topic="fair.releases",
            partition=1,
            offset=offset,
            key="drupal/token",
            value=value,
            reason="malformed",
            detail="not a signed event",
        )
    )


def test_a_rejection_is_recorded_bounded_with_where_and_why(tmp_path: Path) -> None:
    sink = MemorySink()
    recorder = rejections(sink, tmp_path)

    refuse(recorder, 41, b"x" * 5_000_000)

    [written] = sink.written
    rejection = ReleaseRejected.from_bytes(written.value)
    assert written.key == b"drupal/token"
    assert (rejection.topic, rejection.partition, rejection.offset) == ("fair.releases", 1, 41)
    assert (rejection.reason, rejection.region, rejection.rejected_at) == ("malformed", "eu", NOW)
    assert rejection.record_size == 5_000_000
    assert len(written.value) < 100_000  # a prefix of the record, not the record
    assert (recorder.total, recorder.unrecorded) == (1, 0)


def test_a_rejection_the_broker_keeps_refusing_is_dead_lettered_then_resent(
    tmp_path: Path,
) -> None:
    sink, sleeps = MemorySink(failures=REJECTION_ATTEMPTS), Sleeps()
    recorder = rejections(sink, tmp_path, sleeps)

    refuse(recorder, 7)

    assert sink.attempts == REJECTION_ATTEMPTS and sink.written == []
    assert sleeps.delays == [1.0, 2.0, 4.0]
    assert (recorder.total, recorder.unrecorded) == (1, 1)
    [letter] = recorder.dead_letters.letters()
    assert ReleaseRejected.from_bytes(letter.value).offset == 7
    assert letter.error == "broker down"

    asyncio.run(recorder.resend())

    [written] = sink.written
    assert written.value == letter.value
    assert recorder.unrecorded == 0
    assert recorder.dead_letters.letters() == []
