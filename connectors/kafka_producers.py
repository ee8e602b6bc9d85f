"""Idempotent Kafka producers: one waits for each delivery report, one serves an asyncio loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka_connection import client_config
from connectors.store import redact_url
from schemas.errors import BrokerUnavailableError


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored a record: the exact offset, from the delivery report."""

    topic: str
    partition: int
    offset: int


def idempotent_producer_settings(delivery_timeout: float, linger_ms: int) -> dict[str, Any]:
    """Our producers' librdkafka settings beside ``client_config``'s: idempotent,
    acknowledged by every replica."""
    return {
        "enable.idempotence": True,
        "acks": "all",
        "delivery.timeout.ms": int(delivery_timeout * 1000),
        "linger.ms": linger_ms,
        # The demo and tests stop brokers under live clients: not worth a log line.
        "log.connection.close": False,
    }


class EventProducer:
    """An idempotent confluent-kafka producer that waits for each record's delivery report."""

    def __init__(self, broker_url: str, *, delivery_timeout: float = 30.0) -> None:
        self._broker_url = broker_url
        self._timeout = delivery_timeout
        self._producer = Producer(
            {**client_config(broker_url), **idempotent_producer_settings(delivery_timeout, 5)}
        )

    def produce(
        self, topic: str, key: bytes, value: bytes, *, partition: int | None = None
    ) -> Delivered:
        """Produce one record (to ``partition``, default: by key) and wait until the broker
        acknowledged it.

        Raises ``BrokerUnavailableError`` if it was not acknowledged in time.
        """
        return self.produce_many(topic, [(key, value)], partition=partition)[0]

    def produce_many(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes]],
        *,
        partition: int | None = None,
    ) -> list[Delivered]:
        """Produce records in order and wait for all of their delivery reports."""
        # librdkafka's "any partition" (RD_KAFKA_PARTITION_UA): chosen by key.
        where = -1 if partition is None else partition
        reports: list[tuple[int, KafkaError | None, Message]] = []

        def on_delivery(index: int) -> Callable[[KafkaError | None, Message], None]:
            return lambda err, msg: reports.append((index, err, msg))

        count = 0
        try:
            for count, (key, value) in enumerate(records, start=1):
                self._producer.produce(
                    topic, key=key, value=value, partition=where, on_delivery=on_delivery(count)
                )
                self._producer.poll(0)
        except (KafkaException, BufferError) as exc:
            raise BrokerUnavailableError(f"could not queue a record for {topic}: {exc}") from exc
        remaining = self._producer.flush(self._timeout)
        if remaining or len(reports) < count:
            raise BrokerUnavailableError(
                f"{count - len(reports)} record(s) to {topic} not acknowledged by "
                f"{redact_url(self._broker_url)} within {self._timeout:.0f} s; is the broker "
                "running?"
            )
        delivered: list[Delivered] = []
        for _, err, msg in sorted(reports, key=lambda report: report[0]):
            if err is not None:
                raise BrokerUnavailableError(f"broker refused a record for {topic}: {err.str()}")
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None:
                raise BrokerUnavailableError(
                    f"broker acknowledged a record for {topic} without an offset"
                )
            delivered.append(Delivered(topic, partition, offset))
        return delivered

    def close(self, *, discard: bool = False) -> None:
        """Deliver what is queued (``discard``: drop it), then release the connections."""
        if discard:
            self._producer.purge()
        self._producer.flush(0 if discard else self._timeout)
        self._producer.close()


class AsyncProducer:
    """An idempotent confluent-kafka producer for an asyncio loop.

    ``send`` queues a record and returns a future that its delivery report resolves:
    librdkafka does the I/O in its own threads and a thread of ours serves the reports, so
    the loop spends a few microseconds a record (Faust's aiokafka producer: ~100, measured
    in a worker under live load). Records of one partition are delivered in order.
    """

    def __init__(
        self, broker_url: str, *, name: str = "producer", delivery_timeout: float = 30.0
    ) -> None:
        # linger 1 ms: a lone view record waits for nothing; a batch's records go together.
        self._producer = Producer(
            {**client_config(broker_url), **idempotent_producer_settings(delivery_timeout, 1)}
        )
        self._stop = threading.Event()
        self._reports = threading.Thread(target=self._serve_reports, name=name, daemon=True)
        self._reports.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue a record; the future resolves once the broker acknowledged it, or fails with
        ``BrokerUnavailableError`` (not queued, or not acknowledged in time)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, topic, error)

        try:
            self._producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except (KafkaException, BufferError) as exc:
            future.set_exception(
                BrokerUnavailableError(f"could not queue a record for {topic}: {exc}")
            )
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds (a record left undelivered is
        one whose batch was never acknowledged: it is consumed again), then stop."""
        self._producer.flush(timeout)
        self._stop.set()
        self._reports.join(5)


def _settle(future: asyncio.Future[None], topic: str, error: KafkaError | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(
            BrokerUnavailableError(
                f"broker did not acknowledge a record for {topic}: {error.str()}"
            )
        )
