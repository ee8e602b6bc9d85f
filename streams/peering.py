"""Peering: following another network's releases topic under a per-peer policy (canonical, source, refuse).

A peer is an independently operated stream (another organisation's cluster,
its own trust root). Its records are verified against the peer's pinned root,
then ``decide`` says what each may do here: be applied to our metadata as
canonical for a namespace we accept from that peer, only lend its artifact URL
as one more download source (whatever a source delivers is checked against
our own signed sha256), or be refused and recorded on our rejected topic. No
peer ever speaks for ``drupal/*`` or for any namespace our own root delegates.

``PeerFollower`` is the loop: a confluent-kafka consumer in the region's group
on the peer's cluster, polled from one thread, that applies canonical records
through the node's ``ReleaseReplicator`` and commits the peer's offsets only
once their effects (or rejections) are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeVar

from connectors.kafka import (
    BrokerLocation,
    ConsumedRecord,
    GroupConsumer,
    iter_partition,
    topic_partitions,
)
from connectors.store import redact_url
from schemas.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    RejectedError,
)
from schemas.events import ReleasePublished
from schemas.names import VENDOR_PATTERN
from schemas.trust import (
    Reject,
    TrustRoot,
    WaitForRoot,
    load_pinned_root,
    namespace_of,
    on_rejection,
)
from streams.artifacts import ReplicaRegistry
from streams.outcomes import Abandoned, Applied, Refused, Skipped, Verified
from streams.policy import ReplicationPolicy
from streams.replication import ReleaseReplicator

log = logging.getLogger(__name__)

#: Namespaces no peer can ever be canonical for, whatever our root says.
PROTECTED_NAMESPACES = ("drupal/*",)
#: Reasons recorded on the rejected topic for a peer's record.
PEER_REFUSED = "peer-refused"
PEER_NAMESPACE_FORBIDDEN = "peer-namespace-forbidden"
PEER_NAMESPACE_NOT_ACCEPTED = "peer-namespace-not-accepted"

MAX_BACKOFF_SECONDS = 60.0
#: How long a follower waits for the peer's cluster to list its topics.
TOPIC_LOOKUP_TIMEOUT = 2.0
#: How long a follower whose pinned peer root expired waits before looking again.
EXPIRED_ROOT_WAIT_SECONDS = 60.0

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
# A literal vendor, then a glob of package names: ``typo3/*``, ``acme/intranet_*``.
_NAMESPACE_GLOB = re.compile(rf"(?P<vendor>{VENDOR_PATTERN})/[a-z0-9_.*?!\[\]-]+")
_EXAMPLE = (
    "typo3:policy=canonical,broker=kafka://kafka.typo3.example:9092,topic=fair.releases,"
    "root=peers/typo3-root.avro,namespace=typo3/*"
)
_KEYS = ("policy", "broker", "topic", "root", "namespace")
_KEY_WORD = re.compile(r"[A-Za-z_-]+")

T = TypeVar("T")


class PeerPolicy(StrEnum):
    """What a node makes of one peer's stream."""

    #: Applied to our metadata, for the namespaces we accept from the peer (its root delegates).
    CANONICAL = "canonical"
    #: Never applied; a release's artifact URL becomes one more download source for its sha256.
    SOURCE = "source"
    #: Nothing used; every record is recorded on our rejected topic.
    REFUSE = "refuse"


@dataclass(frozen=True)
class PeerSettings:
    """One peer network as the operator configured it (``--peer``).

    Construction raises ``ConfigurationError`` listing every problem: a name
    that is not a lower-case slug, a broker URL that is not ``kafka://``, a bad
    topic name, a missing or invalid pinned root (any policy but ``refuse``
    needs one), namespaces on a non-canonical peer or none on a canonical one,
    a namespace that is not ``vendor/glob``, is protected (``drupal/*``) or
    that the peer's root does not delegate.
    """

    name: str
    broker_url: str = field(repr=False)  # may carry SASL credentials
    topic: str
    #: The peer's own signed trust root, pinned like ours (empty for a refused peer).
    pinned_root: bytes
    policy: PeerPolicy
    #: Globs of the packages accepted from the peer as canonical (``typo3/*``).
    namespaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespaces", tuple(self.namespaces))
        problems: list[str] = []
        if not _NAME.fullmatch(self.name):
            problems.append("the name must be lower-case letters, digits and dashes (like 'typo3')")
        try:
            BrokerLocation.from_url(self.broker_url)
        except ConfigurationError as exc:
            problems.append(
                str(exc).split(";")[0] + "; write broker=kafka://HOST:PORT (or kafka+ssl://, "
                "kafka+sasl-ssl://USER:PASSWORD@HOST:PORT?mechanism=SCRAM-SHA-512)"
            )
        if not _TOPIC.fullmatch(self.topic):
            problems.append(f"topic {self.topic!r} is not a Kafka topic name")
        root = self._check_root(problems)
        problems += self._namespace_problems(root)
        if problems:
            raise ConfigurationError(f"peer {self.name!r}: " + "; ".join(problems))

    def _check_root(self, problems: list[str]) -> TrustRoot | None:
        if not self.pinned_root:
            if self.policy is not PeerPolicy.REFUSE:
                problems.append(
                    f"policy={self.policy} needs the peer's signed trust root: add root=FILE"
                )
            return None
        try:
            return load_pinned_root(self.pinned_root)
        except RejectedError as exc:
            problems.append(
                f"its pinned root is not a valid signed trust root ({exc}); pin the root file "
                "the peer's root key holders published"
            )
            return None

    def _namespace_problems(self, root: TrustRoot | None) -> list[str]:
        if self.policy is not PeerPolicy.CANONICAL:
            if self.namespaces:
                return [
                    f"namespace= is only used with policy=canonical (this peer is "
                    f"policy={self.policy}); drop it or make the peer canonical"
                ]
            return []
        if not self.namespaces:
            return [
                "policy=canonical needs the namespaces accepted from the peer: "
                "add namespace=VENDOR/* (e.g. namespace=typo3/*)"
            ]
        problems = []
        for pattern in self.namespaces:
            match = _NAMESPACE_GLOB.fullmatch(pattern)
            if match is None:
                problems.append(
                    f"namespace {pattern!r} is not a lower-case vendor followed by / and a "
                    "glob; write it like typo3/*"
                )
                continue
            namespace = f"{match['vendor']}/*"
            if namespace in PROTECTED_NAMESPACES:
                problems.append(
                    f"namespace {pattern!r}: no peer can be canonical for {namespace}; "
                    "only its own publishers are"
                )
            elif root is not None and all(d.namespace != namespace for d in root.delegations):
                delegated = ", ".join(d.namespace for d in root.delegations) or "none"
                problems.append(
                    f"namespace {pattern!r}: the peer's trust root v{root.version} delegates "
                    f"no {namespace} (it delegates: {delegated}), so nothing of it could verify"
                )
        return problems

    def root(self) -> TrustRoot:
        """The peer's pinned trust root; raises ``ConfigurationError`` for a refused peer
        configured without one."""
        if not self.pinned_root:
            raise ConfigurationError(f"peer {self.name!r} has no pinned trust root")
        return load_pinned_root(self.pinned_root)

    @property
    def source_label(self) -> str:
        """The name its download sources go under in the replica registry."""
        return f"peer:{self.name}"

    @property
    def rejected_topic(self) -> str:
        """The topic named in our rejection records of its records."""
        return f"peer:{self.name}/{self.topic}"

    def position(self, partition: int, offset: int) -> str:
        """A log position that never collides with one of our own topics."""
        return f"peer/{self.name}/{self.topic}:{partition}:{offset}"


def parse_peer(text: str, read_root: Callable[[Path], bytes]) -> PeerSettings:
    """A peer from its command-line form, ``NAME:policy=P,broker=URL,topic=T,root=FILE,namespace=GLOB``.

    ``topic`` defaults to ``fair.releases``; ``namespace`` may repeat. A part
    without ``=`` continues the value before it, so ``broker=kafka://a:9092,b:9092``
    and ``namespace=typo3/*,neos/*`` work. ``read_root`` reads the root file
    (the CLI's file reader). Raises ``ConfigurationError`` saying what was wrong
    and showing the expected form.
    """
    name, colon, rest = text.strip().partition(":")
    if not colon or "=" in name or not name:
        raise ConfigurationError(
            f"--peer {redact_url(text)!r} does not start with the peer's name and a colon; "
            f"write it like {_EXAMPLE}"
        )
    values: dict[str, list[str]] = {}
    key: str | None = None
    for part in rest.split(","):
        field, equals, value = part.partition("=")
        # A part that is no KEY=VALUE continues the value before it: the next host of a
        # broker list (``b:9093?ca=/ca.pem`` holds a ``=`` but no key), or a namespace.
        if not equals or not _KEY_WORD.fullmatch(field.strip()):
            if key is None or not part:
                raise ConfigurationError(
                    f"--peer {name}: {part!r} is not KEY=VALUE; write it like {_EXAMPLE}"
                )
            values[key][-1] += "," + part
            continue
        key = field.strip()
        if key not in _KEYS:
            raise ConfigurationError(
                f"--peer {name}: unknown key {key!r}; the keys are {', '.join(_KEYS)} "
                f"(e.g. {_EXAMPLE})"
            )
        if key in values and key != "namespace":
            raise ConfigurationError(f"--peer {name}: {key}= is given twice; give it once")
        values.setdefault(key, []).append(value.strip())
    for required in ("policy", "broker"):
        if required not in values:
            raise ConfigurationError(
                f"--peer {name}: {required}= is missing; write it like {_EXAMPLE}"
            )
    try:
        policy = PeerPolicy(values["policy"][0])
    except ValueError:
        choices = ", ".join(p.value for p in PeerPolicy)
        raise ConfigurationError(
            f"--peer {name}: policy={values['policy'][0]!r} is not one of {choices}"
        ) from None
    root = read_root(Path(values["root"][0])) if "root" in values else b""
    namespaces = tuple(
        pattern.strip()
        for value in values.get("namespace", [])
        for pattern in value.split(",")
        if pattern.strip()
    )
    return PeerSettings(
        name=name,
        broker_url=values["broker"][0],
        topic=values.get("topic", ["fair.releases"])[0],
        pinned_root=root,
        policy=policy,
        namespaces=namespaces,
    )


def with_peer_namespaces(
    policy: ReplicationPolicy, peers: Iterable[PeerSettings]
) -> ReplicationPolicy:
    """``policy`` also serving the namespaces accepted from canonical peers (their
    packages get metadata, and are not answered with a fast 404)."""
    extra = [
        pattern
        for peer in peers
        if peer.policy is PeerPolicy.CANONICAL
        for pattern in peer.namespaces
        if pattern not in policy.include
    ]
    if not extra:
        return policy
    return replace(policy, include=(*policy.include, *dict.fromkeys(extra)))


class PeerUse(StrEnum):
    """What one verified record of a peer may do here."""

    CANONICAL = "canonical"
    SOURCE = "source"
    REFUSED = "refused"


@dataclass(frozen=True)
class PeerDecision:
    """The use of a peer's record; a refusal carries a stable ``reason`` and a ``detail``."""

    use: PeerUse
    reason: str = ""
    detail: str = ""


def decide(
    peer: PeerSettings, our_root: TrustRoot, peer_root: TrustRoot | None, package: str
) -> PeerDecision:
    """What a record of ``package`` from ``peer`` may do here, under our root in force.

    Pure. In order: a refused peer is refused (``peer-refused``); a package our
    root delegates, or in a protected namespace (``drupal/*``), is refused
    (``peer-namespace-forbidden``) whatever the policy, so a peer never speaks
    for it, even when its own root delegates it; a source peer's record is a
    source; a canonical peer's record is canonical when the package matches a
    namespace accepted from the peer and the peer's root delegates it, else
    refused (``peer-namespace-not-accepted``).
    """
    if peer.policy is PeerPolicy.REFUSE:
        return PeerDecision(
            PeerUse.REFUSED,
            PEER_REFUSED,
            f"peer {peer.name} is refused by this node (--peer {peer.name}:policy=refuse); "
            "its records are recorded, never used",
        )
    ours = our_root.delegation_for(package)
    namespace = namespace_of(package)
    if ours is not None or any(fnmatch.fnmatchcase(package, p) for p in PROTECTED_NAMESPACES):
        if ours is not None:
            owner = f"our trust root v{our_root.version} delegates it to {ours.publisher}"
        else:
            owner = f"{namespace} is only ever published by its own publishers"
        return PeerDecision(
            PeerUse.REFUSED,
            PEER_NAMESPACE_FORBIDDEN,
            f"{package}: peer {peer.name} published in {namespace}, which no peer can speak "
            f"for ({owner}); the record is refused, our own publishers' events are unaffected",
        )
    if peer.policy is PeerPolicy.SOURCE:
        return PeerDecision(PeerUse.SOURCE)
    accepted = any(fnmatch.fnmatchcase(package, p) for p in peer.namespaces)
    delegated = peer_root is not None and peer_root.delegation_for(package) is not None
    if accepted and delegated:
        return PeerDecision(PeerUse.CANONICAL)
    why = (
        f"this node accepts only {', '.join(peer.namespaces)} from it"
        if not accepted
        else "the peer's own trust root does not delegate it"
    )
    return PeerDecision(
        PeerUse.REFUSED,
        PEER_NAMESPACE_NOT_ACCEPTED,
        f"{package}: not accepted as canonical from peer {peer.name} ({why}); add "
        f"namespace={namespace} to its --peer option if the peer owns it",
    )


def peer_group(region_group: str, peer: str) -> str:
    """The consumer group a region's workers share on a peer's cluster: distinct from the
    region's own group, which may live on the same cluster, and from other peers'."""
    return f"{region_group}.peer.{peer}"


class RecordRejection(Protocol):
    """Records a refused record on our rejected topic; durable on return (``NodeStream``)."""

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


class _PeerRootExpiredError(Exception):
    """The peer's pinned root expired: nothing of it is applied or refused until re-pinned."""


class PeerFollower:
    """Follows one peer's releases topic, for one worker of a region.

    ``run`` is meant to be an asyncio task in the node's loop; it never raises
    (a peer cluster that is down, or a record that fails, is logged and
    retried or recorded) and returns after ``stop``. The consumer is polled
    from one thread of its own. Offsets are committed once a batch's effects
    are durable: applied by ``replicator.apply_batch`` or recorded by
    ``reject``. Positions are ``PeerSettings.position``, which the replicator's
    ``owns`` guard must count as owned (the peer group owns them).

    A source peer's URLs are kept in memory, and the group's offsets are past
    them after a restart; so a source follower first reads the whole topic
    once (every partition, outside the group) to learn them again, without
    recording refusals twice. A source record read by another worker of the
    region reaches this one at its next start; meanwhile a zip this worker
    could not fetch is parked, and every worker retries parked fetches.
    """

    def __init__(
        self,
        peer: PeerSettings,
        *,
        group: str,
        replicator: ReleaseReplicator,
        our_root: Callable[[], TrustRoot],
        sources: ReplicaRegistry,
        reject: RecordRejection,
        session_timeout: float = 10.0,
        batch_size: int = 500,
        poll_timeout: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.peer = peer
        #: The region's consumer group on the peer's cluster.
        self.group = group
        self._replicator = replicator
        self._our_root = our_root
        self._sources = sources
        self._reject = reject
        self._session_timeout = session_timeout
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._clock = clock
        self._peer_root = peer.root() if peer.policy is not PeerPolicy.REFUSE else None
        self._stop = asyncio.Event()
        # Written by the consumer's thread (rebalance callback), read by the loop.
        self._revoked: set[int] = set()
        self._revoked_lock = threading.Lock()
        self._uncommitted: dict[int, int] = {}
        self._failures = 0
        self._executor: ThreadPoolExecutor | None = None
        self._sources_learned = False
        #: What the follower did: applied, skipped, sources, ignored, and each refusal reason.
        self.counts: Counter[str] = Counter()
        #: Per partition, the next offset committed on the peer's cluster.
        self.committed: dict[int, int] = {}

    def stop(self) -> None:
        """Make ``run`` return after the poll or pause under way."""
        self._stop.set()

    async def run(self) -> None:
        """Follow the peer until ``stop``; see the class docstring."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"peer-{self.peer.name}")
        self._executor = executor
        try:
            while not self._stop.is_set():
                if self._peer_root is not None and self._peer_root.expires <= self._clock():
                    await self._wait_for_new_root()
                    continue
                try:
                    await self._follow()
                except _PeerRootExpiredError:
                    await self._wait_for_new_root()
                except Exception as exc:  # whatever happened, a peer must not stop the node
                    self._failures += 1
                    delay = self._backoff()
                    log.warning(
                        "peer %s (%s %s): %s: %s; following again in %.1f s",
                        self.peer.name,
                        redact_url(self.peer.broker_url),
                        self.peer.topic,
                        type(exc).__name__,
                        exc,
                        delay,
                        exc_info=not isinstance(exc, BrokerUnavailableError),
                    )
                    await self._pause(delay)
        finally:
            executor.shutdown(wait=False)

    async def _wait_for_new_root(self) -> None:
        root = self._peer_root
        assert root is not None
        log.error(
            "peer %s: its pinned trust root v%d expired at %s; nothing of it is applied or "
            "refused until the node is restarted with its newer root pinned",
            self.peer.name,
            root.version,
            root.expires.isoformat(),
        )
        await self._pause(EXPIRED_ROOT_WAIT_SECONDS)

    def _backoff(self) -> float:
        return min(0.5 * 2.0 ** min(self._failures, 10), MAX_BACKOFF_SECONDS)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        """Run a blocking consumer call in the follower's own thread."""
        assert self._executor is not None, "only called while run() runs"
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _follow(self) -> None:
        call = self._call
        consumer = await call(self._consumer)
        try:
            while not await call(consumer.topic_exists, TOPIC_LOOKUP_TIMEOUT):
                self._failures += 1
                delay = self._backoff()
                log.warning(
                    "peer %s: no topic %s on %s yet; looking again in %.1f s",
                    self.peer.name,
                    self.peer.topic,
                    redact_url(self.peer.broker_url),
                    delay,
                )
                await self._pause(delay)
                if self._stop.is_set():
                    return
            if self.peer.policy is PeerPolicy.SOURCE and not self._sources_learned:
                learned = await call(self._learn_sources)
                self._sources_learned = True
                log.info("peer %s: %d download sources read back", self.peer.name, learned)
            while not self._stop.is_set():
                try:
                    records = await call(consumer.poll, self._batch_size, self._poll_timeout)
                except BrokerUnavailableError as exc:
                    # librdkafka reconnects by itself: keep the consumer, wait, poll again.
                    self._failures += 1
                    delay = self._backoff()
                    log.warning("peer %s: %s; polling again in %.1f s", self.peer.name, exc, delay)
                    await self._pause(delay)
                    continue
                self._failures = 0
                self._take_revocations()
                if records:
                    await self._handle(records)
                if self._uncommitted:
                    await self._commit(consumer)
        finally:
            # Queued behind any poll still running in the thread; not awaited, so a
            # cancelled task does not wait for it.
            if self._executor is not None:
                self._executor.submit(consumer.close)
            # A new consumer starts from the committed offsets: what was handled and not
            # committed is read again (harmless), never committed for another member.
            self._uncommitted.clear()

    def _learn_sources(self) -> int:
        """Blocking: read every partition of the peer's topic to its end and register the
        download sources it gives; returns how many. Refusals are not recorded (they were
        when the group first read them). Raises ``BrokerUnavailableError``."""
        learned = 0
        broker, topic = self.peer.broker_url, self.peer.topic
        for partition in topic_partitions(broker, topic):
            for offset, value in iter_partition(broker, topic, partition):
                try:
                    item = self._replicator.verify(
                        value, self.peer.position(partition, offset), root=self._peer_root
                    )
                except RejectedError:
                    continue
                learned += self._use_as_source(item)
        return learned

    def _use_as_source(self, item: Verified) -> bool:
        """Register a verified record's artifact URL if the peer may be a source of it."""
        event = item.event
        decision = decide(self.peer, self._our_root(), self._peer_root, event.package)
        if decision.use is not PeerUse.SOURCE or not isinstance(event, ReleasePublished):
            return False
        artifact = event.artifact
        self._sources.add_source(artifact.sha256, self.peer.source_label, artifact.origin_url)
        return True

    def _consumer(self) -> GroupConsumer:
        return GroupConsumer(
            self.peer.broker_url,
            self.peer.topic,
            self.group,
            session_timeout=self._session_timeout,
            on_revoke=self._on_revoke,
        )

    def _on_revoke(self, partitions: list[int]) -> None:
        with self._revoked_lock:
            self._revoked.update(partitions)

    def _take_revocations(self) -> None:
        with self._revoked_lock:
            revoked, self._revoked = self._revoked, set()
        if revoked:
            # Another worker of the region may now write newer states of these packages;
            # what was not committed is read again by the partitions' new owner.
            self._replicator.forget_cached_states()
            for partition in revoked:
                self._uncommitted.pop(partition, None)

    async def _commit(self, consumer: GroupConsumer) -> None:
        offsets = dict(self._uncommitted)
        try:
            await self._call(consumer.commit, offsets)
        except BrokerUnavailableError as exc:
            # Kept: committed with the next batch. Meanwhile a restart reads them again,
            # which changes nothing (effects are idempotent).
            log.warning("peer %s: offsets not committed yet: %s", self.peer.name, exc)
            return
        self.committed.update(offsets)
        for partition, offset in offsets.items():
            if self._uncommitted.get(partition) == offset:
                del self._uncommitted[partition]

    async def _handle(self, records: list[ConsumedRecord]) -> None:
        """Screen, apply and record one batch; durable on return."""
        verified: list[tuple[ConsumedRecord, Verified]] = []
        for record in records:
            item = await self._screen(record)
            if item is not None:
                verified.append((record, item))
        outcomes = await self._replicator.apply_batch([item for _, item in verified])
        for (record, item), outcome in zip(verified, outcomes, strict=True):
            if isinstance(outcome, Refused):
                await self._record(record, outcome.reason, outcome.detail)
            elif isinstance(outcome, Applied):
                self.counts["applied"] += 1
                log.info(
                    "%s: %s %s #%d applied from peer %s",
                    item.position,
                    outcome.package,
                    outcome.kind,
                    outcome.sequence,
                    self.peer.name,
                )
            elif isinstance(outcome, Skipped):
                self.counts["skipped"] += 1
                log.debug("%s: %s is outside this region's policy", item.position, outcome.package)
            elif isinstance(outcome, Abandoned):
                raise RuntimeError(
                    f"{item.position} was abandoned: the replicator's owns() must count "
                    "peer/ positions as owned"
                )
        for record in records:
            next_offset = record.offset + 1
            if next_offset > self._uncommitted.get(record.partition, -1):
                self._uncommitted[record.partition] = next_offset
        log.info(
            "peer %s: batch of %d records; so far %s",
            self.peer.name,
            len(records),
            ", ".join(f"{kind} {count}" for kind, count in sorted(self.counts.items())),
        )

    async def _screen(self, record: ConsumedRecord) -> Verified | None:
        """The record, verified, when it is to be applied; otherwise it is recorded as
        refused or used as a source here, and None is returned."""
        if self.peer.policy is PeerPolicy.REFUSE:
            decision = decide(self.peer, self._our_root(), None, "")
            await self._record(record, decision.reason, decision.detail)
            return None
        position = self.peer.position(record.partition, record.offset)
        try:
            item = self._replicator.verify(record.value, position, root=self._peer_root)
        except Exception as exc:
            # The peer's root comes with its network: there is nothing to refresh here.
            action = on_rejection(exc, refreshed=True)
            if isinstance(action, WaitForRoot):
                raise _PeerRootExpiredError(action.detail) from exc
            assert isinstance(action, Reject)  # refreshed: never RefreshTrust
            if isinstance(exc, RejectedError):
                detail = f"peer {self.peer.name}: {action.detail}"
            else:
                log.exception("%s: verification failed unexpectedly", position)
                detail = action.detail
            await self._record(record, action.reason, detail)
            return None
        event = item.event
        decision = decide(self.peer, self._our_root(), self._peer_root, event.package)
        if decision.use is PeerUse.REFUSED:
            await self._record(record, decision.reason, decision.detail)
            return None
        if decision.use is PeerUse.SOURCE:
            self.counts["sources" if self._use_as_source(item) else "ignored"] += 1
            return None
        return item

    async def _record(self, record: ConsumedRecord, reason: str, detail: str) -> None:
        await self._reject(
            topic=self.peer.rejected_topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            value=record.value,
            reason=reason,
            detail=detail,
        )
        self.counts[reason] += 1
