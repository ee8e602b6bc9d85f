"""Where the worker's own records go: a small sink interface (after quix-streams' sinks).

A ``Sink`` writes records durably: once ``write`` returns, the broker has acknowledged every
one of them; when it raises a ``TransientError`` (whose ``retry_after`` says when to try
again) some may have landed, and writing them again may put a record on its topic twice.
The topics written through sinks (rejections, replica announcements, download counts) are
read by position, key, or sum over distinct periods, so a duplicate changes nothing.
Heartbeats are not written through a sink (``streams.sync.StatusReporter`` says why).

Quix's sinks buffer with ``add`` and make durable with ``flush``; here each writer hands
over a record (or a period's batch) and needs it durable before it goes on, from
coroutines that run concurrently (the intake's rejections and the dead-letter timer's): a
buffer shared between them would need to know whose records a bounded attempt that gives
up may drop. So ``write`` is add and flush in one call, and keeps nothing.

``deliver`` is the one retry policy over a sink: bounded (a rejection, whose partition must
move on) or until acknowledged (a replica announcement). ``TopicSink`` is the adapter on
the Faust app's producer; unit tests use a sink in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import faust

from connectors.kafka_producers import EventProducer
from schemas.errors import BrokerUnavailableError, TransientError

log = logging.getLogger(__name__)

#: The longest wait between two attempts of one record.
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes
    #: None: the producer's partitioner chooses (by key).
    partition: int | None = None


class Sink(Protocol):
    @property
    def name(self) -> str:
        """What the records are written to, for messages."""
        ...

    async def write(self, records: Sequence[Record]) -> None:
        """Durable on return: every record acknowledged. Raises ``TransientError``."""
        ...


class TopicSink:
    """A sink on a Faust topic (the app's aiokafka producer).

    Each write is bounded by ``attempt_seconds``: aiokafka waits for a topic the broker
    does not know for Faust's request timeout (20 minutes). ``before_send`` runs first on
    each write (the fault harness refuses sends there).
    """

    def __init__(
        self,
        topic: faust.TopicT,
        *,
        attempt_seconds: float = 10.0,
        before_send: Callable[[], None] = lambda: None,
    ) -> None:
        self.topic = topic
        self.name = topic.get_topic_name()
        self._attempt_seconds = attempt_seconds
        self._before_send = before_send

    async def write(self, records: Sequence[Record]) -> None:
        try:
            async with asyncio.timeout(self._attempt_seconds):
                self._before_send()
                pending: list[Awaitable[Any]] = [
                    await self.topic.send(
                        key=record.key, value=record.value, partition=record.partition
                    )
                    for record in records
                ]
                await asyncio.gather(*pending)
        except Exception as exc:  # aiokafka's errors, a timeout, whatever the broker says
            raise BrokerUnavailableError(f"{self.name}: {describe(exc)}", retry_after=0.5) from exc


class ProducerSink:
    """A sink on a confluent-kafka ``EventProducer`` (blocking: each write runs in a thread),
    for a process without a Faust app (the peer follower's tests, tools)."""

    def __init__(self, producer: EventProducer, topic: str) -> None:
        self.name = topic
        self._producer = producer

    async def write(self, records: Sequence[Record]) -> None:
        """Raises ``BrokerUnavailableError``."""
        for record in records:
            await asyncio.to_thread(
                self._producer.produce,
                self.name,
                record.key,
                record.value,
                partition=record.partition,
            )


async def deliver(
    sink: Sink,
    records: Sequence[Record],
    *,
    what: str,
    attempts: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str | None:
    """Write ``records`` to ``sink``, at most ``attempts`` times (None: until acknowledged),
    waiting longer after each failure: 1, 2, 4 ... seconds, at most ``MAX_BACKOFF_SECONDS``.
    Returns None once acknowledged, else the last error: the caller keeps the records."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await sink.write(records)
            return None
        except TransientError as exc:
            error = str(exc)
            if attempts is not None and attempt >= attempts:
                return error
            delay = min(max(exc.retry_after, 0.5) * 2.0 ** min(attempt, 10), MAX_BACKOFF_SECONDS)
            log.warning("%s not recorded yet (%s); retrying in %.1f s", what, error, delay)
            await sleep(delay)


def describe(exc: BaseException) -> str:
    """An exception as a log line's reason: its type, and its message if it has one."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
