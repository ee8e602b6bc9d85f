"""A worker's link to its region's view topic (ADR 5): the producer of its view records, and
its reads of the topic to its end through its view follower.

A worker reads the topic to its end before it serves after a start and before it applies
after an assignment (``streams.intake``): a marker is produced to every partition and must
be read back by the follower (``ViewFollower.catch_up``), exact on any broker.
"""

from __future__ import annotations

import asyncio
import logging

from connectors.kafka_producers import AsyncProducer, EventProducer
from connectors.view_store import ViewFollower
from schemas.errors import TransientError

# The node's logger name, as when this lived in streams/node.py: operators read its lines by it.
log = logging.getLogger("streams.node")

#: How long a worker waits for its view to catch up with the region's after an assignment
#: before it says so in the log (then it waits again: applying on a stale view is wrong).
VIEW_CATCH_UP_WARNING_SECONDS = 30.0


class ViewTopicLink:
    """One worker's producers on its region's view ``topic``, and its catch-up through
    ``follower`` (which the worker starts and stops)."""

    def __init__(
        self, broker_url: str, topic: str, follower: ViewFollower, *, worker_name: str
    ) -> None:
        self._broker_url = broker_url
        self._topic = topic
        self.follower = follower
        self._worker_name = worker_name
        self._marker_producer: EventProducer | None = None
        #: The view records' producer (confluent-kafka: a tenth of Faust's cost a record).
        self._view_producer: AsyncProducer | None = None

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Produce one view record; the future resolves once the broker acknowledged it."""
        return self.started_producer().send(self._topic, key, value)

    def started_producer(self) -> AsyncProducer:
        """The view records' producer, started at the latest here; the worker starts it
        before the first batch: an idempotent producer's first record waits about half a
        second for its producer id (measured on Tansu), which the first releases would."""
        if self._view_producer is None:
            self._view_producer = AsyncProducer(self._broker_url, name="view-producer")
        return self._view_producer

    async def catch_up(self) -> None:
        """Read the region's view topic to its end (the follower's marker barrier, exact on
        any broker), trying again until it is read: the intake asks for it before applying
        after an assignment, and applies nothing until then."""
        while True:
            try:
                await asyncio.to_thread(self.read_to_end, VIEW_CATCH_UP_WARNING_SECONDS)
                return
            except TransientError as exc:
                log.warning("%s; nothing is applied until it is", exc)

    def read_to_end(self, timeout: float) -> None:
        """Block until the view follower has read the region's view topic to its end.

        Raises ``BrokerUnavailableError`` after ``timeout`` seconds."""
        if self._marker_producer is None:
            # Kept for every later catch-up: an idempotent producer's first record waits
            # about half a second for its producer id (measured on Tansu), once per rebalance
            # otherwise.
            self._marker_producer = EventProducer(self._broker_url)
        self.follower.catch_up(self._marker_producer, self._worker_name, timeout=timeout)

    async def close(self) -> None:
        """Close the producers (the view records' first)."""
        if self._view_producer is not None:
            await asyncio.to_thread(self._view_producer.close)
        if self._marker_producer is not None:
            await asyncio.to_thread(self._marker_producer.close)
