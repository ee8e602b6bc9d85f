"""The Faust app of a regional node: one consumer group per region, one agent per topic.

The agent is a thin loop: each record goes to ``ReleaseReplicator.apply``; a
rejected record goes to the rejected topic with its reason; a transient failure
is retried with backoff. The record's offset is acknowledged only when the loop
body returns, so Faust commits it only after its effects are durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import faust

from connectors.kafka import Topics, bootstrap_servers
from connectors.origin import FetchLimits
from connectors.store import ObjectStore, StoreLocation
from schemas.errors import RejectedError, TransientError
from schemas.events import ReleaseRejected, utc_now
from schemas.signing import PublicKey
from streams.replication import ReleaseReplicator

log = logging.getLogger(__name__)

#: An unexpected error (a bug, not bad input) is retried this many times before the
#: record is set aside in the rejected topic, so one poison record cannot stall a partition.
MAX_UNEXPECTED_FAILURES = 5
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class NodeSettings:
    """Everything a regional node's stream processing needs; built once by the CLI."""

    region: str
    broker_url: str
    store: StoreLocation
    bucket: str
    public_url: str
    trusted: Mapping[str, PublicKey]
    data_dir: Path
    topics: Topics = Topics()
    session_timeout: float = 10.0
    commit_interval: float = 1.0
    fetch_limits: FetchLimits = FetchLimits()

    @property
    def group_id(self) -> str:
        return group_id(self.region)


def group_id(region: str) -> str:
    """The consumer group of a region: every worker of the region joins it."""
    return f"fairstream-node-{region}"


class NodeStream:
    """Builds the Faust app of one region and holds what its agent needs at run time."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.group_id,
            broker=f"kafka://{bootstrap_servers(settings.broker_url)}",
            datadir=str(settings.data_dir / "faust"),
            store="memory://",
            web_enabled=False,
            # Topics are created by the CLI with their partition counts; Faust must not guess.
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.session_timeout,
            broker_heartbeat_interval=max(settings.session_timeout / 6, 0.5),
            broker_commit_interval=settings.commit_interval,
            producer_acks=-1,
        )
        self.releases = self.app.topic(
            settings.topics.releases,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.rejected = self.app.topic(
            settings.topics.rejected,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.store = ObjectStore(settings.store, settings.bucket)
        self._replicator: ReleaseReplicator | None = None
        self._session: aiohttp.ClientSession | None = None
        self.app.agent(self.releases, name=f"{settings.group_id}.replicate")(self._replicate)

    async def _replicator_for_loop(self) -> ReleaseReplicator:
        if self._replicator is None:
            self._session = aiohttp.ClientSession()
            work_dir = self.settings.data_dir / "downloads"
            work_dir.mkdir(parents=True, exist_ok=True)
            self._replicator = ReleaseReplicator(
                store=self.store,
                session=self._session,
                trusted=self.settings.trusted,
                public_url=self.settings.public_url,
                work_dir=work_dir,
                limits=self.settings.fetch_limits,
            )
        return self._replicator

    async def _replicate(self, stream: faust.StreamT[Any]) -> None:
        replicator = await self._replicator_for_loop()
        async for event in stream.events():
            await self._handle(replicator, event)

    async def _handle(self, replicator: ReleaseReplicator, event: faust.EventT[Any]) -> None:
        message = event.message
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        value = message.value if isinstance(message.value, bytes) else b""
        unexpected = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                applied = await replicator.apply(value)
            except RejectedError as exc:
                await self._record_rejection(event, exc.reason, str(exc))
                return
            except TransientError as exc:
                delay = min(exc.retry_after * 2 ** min(attempt - 1, 6), MAX_BACKOFF_SECONDS)
                log.warning("%s: %s; retrying in %.1f s (attempt %d)", where, exc, delay, attempt)
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                unexpected += 1
                log.exception(
                    "%s: unexpected failure %d/%d", where, unexpected, MAX_UNEXPECTED_FAILURES
                )
                if unexpected >= MAX_UNEXPECTED_FAILURES:
                    await self._record_rejection(
                        event, "internal-error", f"{type(exc).__name__}: {exc}; report this bug"
                    )
                    return
                await asyncio.sleep(min(2.0**unexpected, MAX_BACKOFF_SECONDS))
                continue
            log.info(
                "%s: %s %s applied (%s%s)",
                where,
                applied.package,
                applied.version,
                "fetched" if applied.fetched else "artifact present",
                ", metadata written" if applied.changed else ", already applied",
            )
            return

    async def _record_rejection(self, event: faust.EventT[Any], reason: str, detail: str) -> None:
        message = event.message
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        record = ReleaseRejected(
            region=self.settings.region,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=key,
            reason=reason,
            detail=detail,
            rejected_at=utc_now(),
            record=message.value if isinstance(message.value, bytes) else b"",
        )
        log.warning(
            "%s[%d]@%d rejected (%s): %s",
            message.topic,
            message.partition,
            message.offset,
            reason,
            detail,
        )
        # Wait for the broker's acknowledgement: the offset of the refused record
        # must not be committed before its rejection is durable.
        pending = await self.rejected.send(key=(key or "").encode(), value=record.to_bytes())
        await pending

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
