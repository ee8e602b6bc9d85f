"""A worker's dead-letter file: the rejections it could not record on the rejected topic.

A rejection that the broker still refuses after bounded retries must not hold the
partition behind it (every later event would wait), and must not be lost either. It
goes here, one JSON line per rejection: where the refused record was, why, and the
encoded rejection itself, which the worker produces again later, byte for byte, and
removes from the file once the broker has acknowledged it. A person can read the file
(``jq . dead-letter-*.jsonl``); nothing else reads it.

A rejection re-sent from here may reach the topic twice (an attempt that timed out may
still have landed): rejections are an audit record, and a reader counts them by
position, so a duplicate changes no count.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from schemas.events import ReleaseRejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """One rejection not yet recorded: its Kafka key and encoded value, and why."""

    key: bytes
    value: bytes
    error: str

    def to_line(self) -> bytes:
        rejection = ReleaseRejected.from_bytes(self.value)
        return orjson.dumps(
            {
                "topic": rejection.topic,
                "partition": rejection.partition,
                "offset": rejection.offset,
                "reason": rejection.reason,
                "record_size": rejection.record_size,
                "record_sha256": rejection.record_sha256,
                "rejected_at": rejection.rejected_at.isoformat(),
                "not_recorded_because": self.error,
                "key": base64.b64encode(self.key).decode(),
                "rejection": base64.b64encode(self.value).decode(),
            }
        )

    @classmethod
    def from_line(cls, line: bytes) -> DeadLetter:
        """Raises ``ValueError`` (or a subclass) for a line this module did not write."""
        fields = orjson.loads(line)
        return cls(
            key=base64.b64decode(fields["key"], validate=True),
            value=base64.b64decode(fields["rejection"], validate=True),
            error=str(fields["not_recorded_because"]),
        )


class DeadLetterFile:
    """The dead-letter file of one worker (never shared: each worker re-sends its own)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, letter: DeadLetter) -> None:
        """Add one rejection, durably (fsync): the partition moves on once this returns."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as file:
            file.write(letter.to_line() + b"\n")
            file.flush()
            os.fsync(file.fileno())

    def letters(self) -> list[DeadLetter]:
        """The rejections waiting (a line that cannot be read is logged and skipped)."""
        return self._read()[0]

    def _read(self) -> tuple[list[DeadLetter], list[bytes]]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return [], []
        found: list[DeadLetter] = []
        unreadable: list[bytes] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                found.append(DeadLetter.from_line(line))
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "%s line %d is not a dead letter this node wrote: %s", self.path, number, exc
                )
                unreadable.append(line)
        return found, unreadable

    def waiting(self) -> int:
        """How many rejections wait to be recorded."""
        return len(self.letters())

    async def resend(self, send: Callable[[bytes, bytes], Awaitable[bool]]) -> tuple[int, int]:
        """Offer each waiting rejection to ``send`` (True: acknowledged); keep the others.

        Returns (recorded, still waiting). The caller must not ``append`` meanwhile."""
        waiting, unreadable = self._read()
        if unreadable:  # set aside once, for a person to look at; never re-sent
            with self.path.with_suffix(".bad").open("ab") as bad:
                bad.write(b"".join(line + b"\n" for line in unreadable))
        if not waiting and not unreadable:
            return 0, 0
        kept: list[DeadLetter] = []
        for letter in waiting:
            if not kept and await send(letter.key, letter.value):
                continue
            kept.append(letter)  # in order: once one fails, the rest wait for the next round
        if kept:
            temporary = self.path.with_name(f".{self.path.name}.tmp")
            temporary.write_bytes(b"".join(letter.to_line() + b"\n" for letter in kept))
            os.replace(temporary, self.path)
        else:
            self.path.unlink()
        return len(waiting) - len(kept), len(kept)
