"""The ledger: the releases topic says what is already published, so an import resumes."""

from __future__ import annotations

import asyncio

from connectors.kafka_reading import PublishedBuild, published_builds

__all__ = ["read_ledger"]


async def read_ledger(broker_url: str, topic: str) -> dict[str, dict[str, PublishedBuild]]:
    """The build of each version the releases ``topic`` holds, per package, read to its end.

    Raises ``BrokerUnavailableError`` when the broker fails.
    """
    ledger = await asyncio.to_thread(published_builds, broker_url, topic)
    published: dict[str, dict[str, PublishedBuild]] = {}
    for (package, version), build in ledger.items():
        published.setdefault(package, {})[version] = build
    return published
