"""Importing a Composer repository into the stream: one signed release event per version, resumable.

``import_repository`` wires the roles together: the ledger (``ledger``: what the releases
topic already holds is never published again, so an import that crashed is simply run again),
package workers that fetch and plan (``fetch``, over the pure ``plan`` and ``release``), and one
publisher that signs and produces their events in batches (``publish``).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from connectors.composer_repo import ComposerRepository, RepositoryIndex
from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import ensure_topics
from schemas.errors import ConfigurationError
from schemas.events import ReleasePublished
from services.importer.fetch import PackageFetcher
from services.importer.ledger import read_ledger
from services.importer.publish import BatchPublisher, ReleaseProducer
from services.importer.report import ImportObserver, ImportReport
from services.importer.settings import ImportSettings

__all__ = ["import_repository"]


class _Silent:
    def packages_found(self, total: int) -> None:
        pass

    def package_done(self, package: str, *, releases: int, skipped: int) -> None:
        pass

    def published(self, count: int) -> None:
        pass


async def import_repository(
    settings: ImportSettings,
    *,
    observer: ImportObserver | None = None,
    producer: ReleaseProducer | None = None,
) -> ImportReport:
    """Publish one signed release event per version of every package of a Composer repository.

    Reads the releases topic to its end first and publishes nothing it holds.
    Per package, versions go oldest first with increasing sequences, in
    batches of ``settings.batch_size`` records. A release that cannot be
    published is counted by reason in the report and the import goes on.
    Raises ``ConfigurationError`` when the repository does not list its
    packages and none are given, ``OriginUnavailableError`` /
    ``MalformedEventError`` when its ``packages.json`` cannot be read, and
    ``BrokerUnavailableError`` when the broker fails (run it again: it
    resumes).
    """
    observer = observer or _Silent()
    started = time.monotonic()
    report = ImportReport(repository=settings.repository_url)
    await asyncio.to_thread(
        ensure_topics, settings.broker_url, settings.topics.partitions(settings.partitions)
    )
    published = await read_ledger(settings.broker_url, settings.topics.releases)

    own_producer = None
    if producer is None:
        own_producer = producer = EventProducer(settings.broker_url)
    repository = ComposerRepository(settings.repository_url, limits=settings.limits)
    try:
        with tempfile.TemporaryDirectory(prefix="fairstream-import-", dir=settings.work_dir) as tmp:
            async with repository:
                index = await repository.index()
                packages = _package_list(settings.packages, index)
                report.packages = len(packages)
                observer.packages_found(len(packages))
                fetcher = PackageFetcher(settings, repository, index, published, Path(tmp))
                run = _ImportRun(settings, fetcher, report, observer, producer)
                await run.all(packages)
    finally:
        if own_producer is not None:
            await asyncio.to_thread(own_producer.close)
        report.requests = repository.counts.requests
        report.retries = repository.counts.retries
        report.downloads = repository.counts.downloads
        report.elapsed = time.monotonic() - started
    return report


def _package_list(given: Sequence[str] | None, index: RepositoryIndex) -> list[str]:
    names = given if given is not None else index.available_packages
    if names is None:
        patterns = ", ".join(index.available_package_patterns) or "none"
        raise ConfigurationError(
            f"{index.url} does not list its packages (available-package-patterns: {patterns}); "
            "give the names to import (--packages FILE, one per line)"
        )
    return list(dict.fromkeys(names))


class _ImportRun:
    """One import: package workers feed one producer task through a bounded queue."""

    def __init__(
        self,
        settings: ImportSettings,
        fetcher: PackageFetcher,
        report: ImportReport,
        observer: ImportObserver,
        producer: ReleaseProducer,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.report = report
        self.observer = observer
        # Bounded: when the broker is slower than the source, workers wait (backpressure).
        self.outbox: asyncio.Queue[list[ReleasePublished] | None] = asyncio.Queue(
            maxsize=2 * settings.limits.concurrency
        )
        self.publisher = BatchPublisher(settings, producer, self.outbox, report, observer)

    async def all(self, packages: Sequence[str]) -> None:
        pending = iter(packages)
        publisher = asyncio.create_task(self.publisher.run())
        workers = [
            asyncio.create_task(self._work(pending))
            for _ in range(self.settings.limits.concurrency)
        ]
        workers_done = asyncio.gather(*workers)
        try:
            either: list[asyncio.Future[Any]] = [workers_done, publisher]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if publisher.done():
                publisher.result()  # it only ends early by failing: raise that
            await workers_done
            await self.outbox.put(None)
            await publisher
        finally:
            for task in (*workers, publisher):
                task.cancel()
            await asyncio.gather(*workers, publisher, return_exceptions=True)

    async def _work(self, pending: Iterator[str]) -> None:
        for package in pending:
            events, skipped = await self.fetcher.releases(package)
            for item in skipped:
                self.report.skip(item)
            self.observer.package_done(package, releases=len(events), skipped=len(skipped))
            if events:
                await self.outbox.put(events)
