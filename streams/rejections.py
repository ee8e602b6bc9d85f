"""The worker's record of the records it refused: the rejected topic, else its dead letters.

A refused record is recorded bounded (``ReleaseRejected.refusing``: a prefix of its bytes,
their size and digest), so it is recordable whatever was sent. Its offset must not be
committed before its rejection is durable: on the topic after at most ``attempts``
writes, else in the worker's dead-letter file (``streams.dead_letter``), re-sent later.
Either way ``record`` returns and the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from connectors.metrics import REJECTED, REJECTIONS_DEAD_LETTERED
from schemas.events import ReleaseRejected
from streams.dead_letter import DeadLetter, DeadLetterFile
from streams.sinks import Record, Sink, deliver

log = logging.getLogger(__name__)

#: Writes of one rejection before it goes to the dead-letter file.
REJECTION_ATTEMPTS = 4
#: How long the dead-letter file waits after its last new letter before it is re-sent.
DEAD_LETTER_RETRY_SECONDS = 30.0


class RecordRejection(Protocol):
    """Records a refused record on our rejected topic; durable on return (the node's, which
    calls ``Rejections.record``: its intake and its peer followers are given it)."""

    async def __call__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        value: bytes,
        reason: str,
        detail: str,
    ) -> None: ...


class Rejections:
    """Records refused records on the rejected topic through ``sink``; durable on return."""

    def __init__(
        self,
        sink: Sink,
        dead_letters: DeadLetterFile,
        *,
        region: str,
        clock: Callable[[], datetime],
        attempts: int = REJECTION_ATTEMPTS,
        retry_after: float = DEAD_LETTER_RETRY_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.dead_letters = dead_letters
        self._region = region
        self._clock = clock
        self._attempts = attempts
        self._retry_after = retry_after
        self._sleep = sleep
        self._dead_lettered_at = 0.0
        #: Records refused since start (recorded or dead-lettered).
        self.total = 0
        #: Rejections waiting in the dead-letter file.
        self.unrecorded = dead_letters.waiting()

    async def record(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        value: bytes,
        reason: str,
        detail: str,
    ) -> None:
        """Record that the record at ``topic[partition]@offset`` was refused for ``reason``."""
        rejection = ReleaseRejected.refusing(
            value,
            region=self._region,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            reason=reason,
            detail=detail,
            rejected_at=self._clock(),
        )
        log.warning(
            "%s[%d]@%d rejected (%s, %d bytes): %s",
            topic,
            partition,
            offset,
            reason,
            rejection.record_size,
            rejection.detail,
        )
        self.total += 1
        REJECTED.labels(self._region, reason).inc()
        what = f"rejection of {topic}[{partition}]@{offset}"
        record = Record((rejection.key or "").encode(), rejection.to_bytes())
        error = await deliver(
            self.sink, [record], what=what, attempts=self._attempts, sleep=self._sleep
        )
        if error is None:
            return
        self.dead_letters.append(DeadLetter(record.key, record.value, error))
        self._dead_lettered_at = time.monotonic()
        self.unrecorded += 1
        REJECTIONS_DEAD_LETTERED.labels(self._region).inc()
        log.error(
            "%s not recorded after %d attempts (%s); kept in %s and re-sent every %.0f s; "
            "the partition goes on",
            what,
            self._attempts,
            error,
            self.dead_letters.path,
            self._retry_after,
        )

    async def resend(self) -> None:
        """Offer the dead-letter file's rejections to the sink again (one write each), at
        the earliest ``retry_after`` seconds after the last one was written there."""
        if time.monotonic() - self._dead_lettered_at < self._retry_after:
            return

        async def send(key: bytes, value: bytes) -> bool:
            written = await deliver(
                self.sink, [Record(key, value)], what="a dead-lettered rejection", attempts=1
            )
            return written is None

        recorded, waiting = await self.dead_letters.resend(send)
        self.unrecorded = waiting
        if recorded or waiting:
            log.log(
                logging.INFO if not waiting else logging.WARNING,
                "dead-letter file: %d rejections recorded now, %d still waiting",
                recorded,
                waiting,
            )
