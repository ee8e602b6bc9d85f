"""The Faust app of a regional node: one consumer group per region, one agent per topic.

The agent is a thin loop: each record goes to ``ReleaseReplicator.apply``; a
rejected record goes to the rejected topic with its reason; a transient failure
is retried with backoff. The record's offset is acknowledged only when the loop
body returns, so Faust commits it only after its effects are durable.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import faust

from connectors.kafka import Topics, bootstrap_servers
from connectors.origin import FetchLimits
from connectors.store import ObjectStore, StoreLocation
from schemas.errors import (
    RejectedError,
    RootExpiredError,
    ThresholdError,
    TransientError,
    UndelegatedKeyError,
)
from schemas.events import ReleaseRejected, utc_now
from streams.replication import DEFAULT_MAX_ARTIFACT_SIZE, ReleaseReplicator
from streams.trust_keeper import RefusedRoot, TrustKeeper

log = logging.getLogger(__name__)

#: An unexpected error (a bug, not bad input) is retried this many times before the
#: record is set aside in the rejected topic, so one poison record cannot stall a partition.
MAX_UNEXPECTED_FAILURES = 5
MAX_BACKOFF_SECONDS = 60.0
#: How often a node looks for trust root rotations on the trust topic.
TRUST_REFRESH_SECONDS = 10.0
#: While the root in force is expired, how long to wait before looking for a newer one.
FROZEN_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class NodeSettings:
    """Everything a regional node's stream processing needs; built once by the CLI."""

    region: str
    broker_url: str
    store: StoreLocation
    bucket: str
    public_url: str
    pinned_root: bytes
    data_dir: Path
    topics: Topics = Topics()
    session_timeout: float = 10.0
    commit_interval: float = 1.0
    fetch_limits: FetchLimits = FetchLimits()
    max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE

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
        self.trust = TrustKeeper(
            settings.pinned_root,
            store=self.store,
            broker_url=settings.broker_url,
            topic=settings.topics.trust,
        )
        self._replicator: ReleaseReplicator | None = None
        self._session: aiohttp.ClientSession | None = None
        # Trust records refused before the producer runs, recorded on the first refresh.
        self._unrecorded: list[RefusedRoot] = []
        self.app.agent(self.releases, name=f"{settings.group_id}.replicate")(self._replicate)
        self.app.timer(TRUST_REFRESH_SECONDS)(self._refresh_trust)

    def prepare(self) -> None:
        """Blocking start-up work: the bucket, and the trust root from bucket and trust topic."""
        self.store.ensure_bucket()
        self.trust.load()
        for refused in self.trust.refresh():
            log.warning("trust topic offset %d refused: %s", refused.offset, refused.error)
            self._unrecorded.append(refused)
        root = self.trust.root
        log.info("trust root v%d in force, expires %s", root.version, root.expires.isoformat())

    async def _refresh_trust(self) -> None:
        refused, self._unrecorded = self._unrecorded, []
        try:
            refused += await asyncio.to_thread(self.trust.refresh)
        except TransientError as exc:
            log.warning("trust topic not read: %s", exc)
        for record in refused:
            await self._send_rejection(
                topic=self.settings.topics.trust,
                partition=0,
                offset=record.offset,
                key="trust-root",
                value=record.value,
                reason=record.error.reason,
                detail=str(record.error),
            )

    async def _replicator_for_loop(self) -> ReleaseReplicator:
        if self._replicator is None:
            self._session = aiohttp.ClientSession()
            work_dir = self.settings.data_dir / "downloads"
            work_dir.mkdir(parents=True, exist_ok=True)
            self._replicator = ReleaseReplicator(
                store=self.store,
                session=self._session,
                root=lambda: self.trust.root,
                public_url=self.settings.public_url,
                work_dir=work_dir,
                limits=self.settings.fetch_limits,
                max_artifact_size=self.settings.max_artifact_size,
            )
        return self._replicator

    async def _replicate(self, stream: faust.StreamT[Any]) -> None:
        replicator = await self._replicator_for_loop()
        async for event in stream.events():
            await self._handle(replicator, event)

    async def _handle(self, replicator: ReleaseReplicator, event: faust.EventT[Any]) -> None:
        message = event.message
        position = f"{message.topic}:{message.partition}:{message.offset}"
        value = message.value if isinstance(message.value, bytes) else b""
        unexpected = 0
        attempt = 0
        trust_refreshed = False
        while True:
            attempt += 1
            try:
                applied = await replicator.apply(value, position)
            except RootExpiredError as exc:
                # Fail closed, but do not reject: the event may be fine under the
                # next root. Nothing is applied until a newer root arrives.
                log.error("%s: %s; waiting", position, exc)
                await self._refresh_trust()
                await asyncio.sleep(FROZEN_RETRY_SECONDS)
                continue
            except (UndelegatedKeyError, ThresholdError) as exc:
                if not trust_refreshed:
                    # A rotation delegating the key may be on the trust topic and not
                    # read yet: read it, then decide.
                    trust_refreshed = True
                    await self._refresh_trust()
                    continue
                await self._record_rejection(event, exc.reason, str(exc))
                return
            except RejectedError as exc:
                await self._record_rejection(event, exc.reason, str(exc))
                return
            except TransientError as exc:
                delay = min(exc.retry_after * 2 ** min(attempt - 1, 6), MAX_BACKOFF_SECONDS)
                log.warning(
                    "%s: %s; retrying in %.1f s (attempt %d)", position, exc, delay, attempt
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                unexpected += 1
                log.exception(
                    "%s: unexpected failure %d/%d", position, unexpected, MAX_UNEXPECTED_FAILURES
                )
                if unexpected >= MAX_UNEXPECTED_FAILURES:
                    await self._record_rejection(
                        event, "internal-error", f"{type(exc).__name__}: {exc}; report this bug"
                    )
                    return
                await asyncio.sleep(min(2.0**unexpected, MAX_BACKOFF_SECONDS))
                continue
            log.info(
                "%s: %s %s #%d %s",
                position,
                applied.package,
                applied.kind,
                applied.sequence,
                ("applied" + (", artifact fetched" if applied.fetched else ""))
                if applied.changed
                else "already applied",
            )
            return

    async def _record_rejection(self, event: faust.EventT[Any], reason: str, detail: str) -> None:
        message = event.message
        await self._send_rejection(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None,
            value=message.value if isinstance(message.value, bytes) else b"",
            reason=reason,
            detail=detail,
        )

    async def _send_rejection(
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
        record = ReleaseRejected(
            region=self.settings.region,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            reason=reason,
            detail=detail,
            rejected_at=utc_now(),
            record=value,
        )
        log.warning("%s[%d]@%d rejected (%s): %s", topic, partition, offset, reason, detail)
        # Wait for the broker's acknowledgement: the offset of the refused record
        # must not be committed before its rejection is durable. Until the broker
        # takes it, the partition waits: an exception escaping here would crash the
        # agent, and Faust acknowledges the record that crashed it (faust #315).
        attempt = 0
        while True:
            try:
                pending = await self.rejected.send(
                    key=(key or "").encode(), value=record.to_bytes()
                )
                await pending
                return
            except Exception as exc:  # aiokafka's errors, whatever the broker's state
                attempt += 1
                delay = min(0.5 * 2**attempt, MAX_BACKOFF_SECONDS)
                log.warning(
                    "rejection of %s[%d]@%d not recorded yet (%s: %s); retrying in %.1f s",
                    topic,
                    partition,
                    offset,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
