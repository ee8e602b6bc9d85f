"""Publishing: batches of release events signed and produced, in order, to the releases topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol

from connectors.kafka_producers import Delivered
from schemas.errors import OversizedEventError
from schemas.events import ReleasePublished
from schemas.signing import seal
from services.importer.plan import Skipped, SkipReason
from services.importer.report import ImportObserver, ImportReport
from services.importer.settings import ImportSettings

__all__ = ["BatchPublisher", "ReleaseProducer"]


class ReleaseProducer(Protocol):
    """Where signed releases go: ``connectors.kafka_producers.EventProducer``."""

    def produce_many(
        self, topic: str, records: Iterable[tuple[bytes, bytes]]
    ) -> list[Delivered]: ...


class BatchPublisher:
    """Takes the package workers' events from the outbox, in batches of up to
    ``settings.batch_size`` records, until it takes ``None``; counts them in the report."""

    def __init__(
        self,
        settings: ImportSettings,
        producer: ReleaseProducer,
        outbox: asyncio.Queue[list[ReleasePublished] | None],
        report: ImportReport,
        observer: ImportObserver,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.outbox = outbox
        self.report = report
        self.observer = observer

    async def run(self) -> None:
        finished = False
        while not finished:
            item = await self.outbox.get()
            if item is None:
                return
            batch = list(item)
            while len(batch) < self.settings.batch_size and not self.outbox.empty():
                item = self.outbox.get_nowait()
                if item is None:
                    finished = True
                    break
                batch.extend(item)
            refused = await asyncio.to_thread(self._produce, batch)
            for skipped in refused:
                self.report.skip(skipped)
            self.report.published += len(batch) - len(refused)
            self.observer.published(len(batch) - len(refused))

    def _produce(self, batch: Sequence[ReleasePublished]) -> list[Skipped]:
        """Sign and produce a batch, in order, keyed by package (runs in a thread); returns
        the events not produced because every node would refuse them (``oversized``)."""
        keys = self.settings.keys
        records: list[tuple[bytes, bytes]] = []
        refused: list[Skipped] = []
        for event in batch:
            try:
                records.append((event.package.encode(), seal(event.to_bytes(), keys)))
            except OversizedEventError as exc:
                refused.append(
                    Skipped(event.package, event.version, SkipReason.OVERSIZED_EVENT, str(exc))
                )
        self.producer.produce_many(self.settings.topics.releases, records)
        return refused
