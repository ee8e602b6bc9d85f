"""Kafka through confluent-kafka: broker URLs, topic creation, the idempotent producer, group offsets."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from connectors.store import redact_url
from schemas.errors import BrokerUnavailableError, ConfigurationError, RejectedError
from schemas.events import ReleasePublished, decode_package_event
from schemas.federation import PartitionSync
from schemas.signing import SignedEvent

log = logging.getLogger(__name__)


#: An example of each broker URL form, by librdkafka's ``security.protocol``.
BROKER_URL_EXAMPLES = {
    "plaintext": "kafka://kafka-1:9092,kafka-2:9092",
    "ssl": "kafka+ssl://kafka-1:9093,kafka-2:9093?ca=/etc/fairstream/kafka-ca.pem",
    "sasl_ssl": "kafka+sasl-ssl://fairstream-eu:PASSWORD@kafka-1:9093,kafka-2:9093"
    "?mechanism=SCRAM-SHA-512&ca=/etc/fairstream/kafka-ca.pem",
}
#: librdkafka settings, as confluent-kafka's clients take them.
ClientConfig = dict[str, str | int | float | bool | logging.Logger]
#: How long a librdkafka log line, once shown, is held back when it comes again.
LOG_REPEAT_WINDOW = 60.0
#: The SASL mechanisms a ``kafka+sasl-ssl://`` URL may name.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# Scheme → librdkafka's security.protocol, and the query keys each scheme takes.
_SECURITY = {"kafka": "plaintext", "kafka+ssl": "ssl", "kafka+sasl-ssl": "sasl_ssl"}
_QUERY_KEYS = {"plaintext": (), "ssl": ("ca",), "sasl_ssl": ("mechanism", "ca")}
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class BrokerLocation:
    """A Kafka cluster and how to reach it, parsed from a broker URL whose scheme says the
    security: ``kafka://`` plaintext, ``kafka+ssl://`` TLS, ``kafka+sasl-ssl://`` SCRAM over TLS.

    ``ca_file`` is the PEM bundle that verifies the brokers' certificates (None: the
    system's CAs). The password is percent-decoded and kept out of ``repr``.
    """

    servers: tuple[str, ...]
    #: librdkafka's ``security.protocol``: ``plaintext``, ``ssl`` or ``sasl_ssl``.
    security: str = "plaintext"
    ca_file: str | None = None
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, broker_url: str) -> BrokerLocation:
        """Parse a broker URL without touching the network or the disk.

        Raises ``ConfigurationError`` saying what is wrong and showing the right forms.
        """
        shown = redact_url(broker_url)
        scheme, separator, rest = broker_url.strip().partition("://")
        security = _SECURITY.get(scheme.lower()) if separator else None
        if security is None:
            examples = " or ".join(BROKER_URL_EXAMPLES.values())
            hint = "" if separator else " (or start the embedded one with `fairstream dev up`)"
            raise ConfigurationError(
                f"broker URL {shown!r} is not kafka://, kafka+ssl:// (TLS) or kafka+sasl-ssl:// "
                f"(SCRAM over TLS); write it like {examples}{hint}"
            )

        def wrong(problem: str) -> ConfigurationError:
            return ConfigurationError(
                f"broker URL {shown!r} {problem}; write it like {BROKER_URL_EXAMPLES[security]}"
            )

        netloc, _, query = rest.partition("?")
        netloc, slash, path = netloc.partition("/")
        if slash and path:
            raise wrong(f"has a path ({'/' + path!r}), which a broker URL never has")
        userinfo, at, hosts = netloc.rpartition("@")
        if not hosts:
            raise wrong("names no HOST:PORT")
        servers = tuple(_server(host, wrong) for host in hosts.split(","))
        options = _query_options(query, _QUERY_KEYS[security], wrong)
        ca_file = options.get("ca")
        if security != "sasl_ssl":
            if at:
                raise wrong("carries a user name or password, which only kafka+sasl-ssl:// uses")
            return cls(servers, security, ca_file)
        user, colon, password = userinfo.partition(":")
        if not at or not colon or not user or not password:
            raise wrong("has no USER:PASSWORD@ before the hosts (percent-encode @ : / ? in them)")
        mechanism = options.get("mechanism")
        if mechanism is None or mechanism.upper() not in SCRAM_MECHANISMS:
            named = "names no mechanism" if mechanism is None else f"names mechanism {mechanism!r}"
            raise wrong(f"{named}, not mechanism=SCRAM-SHA-512 or mechanism=SCRAM-SHA-256")
        return cls(servers, security, ca_file, mechanism.upper(), unquote(user), unquote(password))

    @property
    def bootstrap_servers(self) -> str:
        """librdkafka's ``host:port,host:port``."""
        return ",".join(self.servers)

    def client_config(self) -> ClientConfig:
        """The librdkafka settings that reach and authenticate to the cluster."""
        config: ClientConfig = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security,
        }
        if self.security != "plaintext":
            # "probe": the system's CA bundle, as Python's default SSL context uses.
            config["ssl.ca.location"] = self.ca_file or "probe"
            config["ssl.endpoint.identification.algorithm"] = "https"
        if self.security == "sasl_ssl":
            assert self.mechanism and self.username and self.password is not None
            config["sasl.mechanism"] = self.mechanism
            config["sasl.username"] = self.username
            config["sasl.password"] = self.password
        return config


def _server(host: str, wrong: Callable[[str], ConfigurationError]) -> str:
    name, colon, port = host.strip().rpartition(":")
    if not colon or not name:
        raise wrong(f"names {host!r}, which has no port")
    if not _HOST.fullmatch(name):
        raise wrong(f"names {name!r}, which is not a host name or address")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise wrong(f"names {host!r}, whose port is not a number from 1 to 65535")
    return f"{name}:{int(port)}"


def _query_options(
    query: str, allowed: tuple[str, ...], wrong: Callable[[str], ConfigurationError]
) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            takes = (
                f"takes only {', '.join(allowed)}"
                if allowed
                else "takes none: TLS and SASL need kafka+ssl:// or kafka+sasl-ssl://"
            )
            raise wrong(f"has an unknown option {name!r} (this scheme {takes})")
        if name in options:
            raise wrong(f"gives {name}= twice")
        if not value:
            raise wrong(f"gives {name}= without a value")
        options[name] = value
    return options


def client_config(broker_url: str) -> ClientConfig:
    """The librdkafka configuration of every confluent-kafka client of ``broker_url``:
    servers and security (TLS, SASL/SCRAM) from the URL. Clients add their own keys.

    Raises ``ConfigurationError`` for a malformed URL or a CA file that does not exist.
    """
    location = BrokerLocation.from_url(broker_url)
    if location.ca_file is not None and not Path(location.ca_file).is_file():
        raise ConfigurationError(
            f"the CA file {location.ca_file} named in broker URL {redact_url(broker_url)!r} "
            "does not exist; give the PEM file of the CA that signed the brokers' certificates"
        )
    return {**location.client_config(), "logger": LIBRDKAFKA_LOG}


class LogRepeats(logging.Filter):
    """Lets each librdkafka line through once per ``window`` seconds.

    A broker that is down makes librdkafka log every reconnect (hundreds of lines a minute)
    before the caller's one sentence says what is wrong. The first line of each kind still
    shows (it names what failed: refused, TLS, SASL); a repeat says how many it stands for.
    """

    # Counts and timings in a line ("after 0ms", "12 requests") do not make it new.
    _NUMBERS = re.compile(r"\d+")

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self._NUMBERS.sub("#", _librdkafka_message(record))
        now = self._clock()
        with self._lock:
            shown, held = self._seen.get(kind, (float("-inf"), 0))
            if now - shown < self._window:
                self._seen[kind] = (shown, held + 1)
                return False
            self._seen[kind] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {now - shown:.0f} s)"
        return True


def _librdkafka_message(record: logging.LogRecord) -> str:
    # confluent-kafka logs ("%s [%s] %s", facility, client name, librdkafka's message).
    if isinstance(record.args, tuple) and len(record.args) == 3:
        return str(record.args[2])
    return record.getMessage()


#: Every confluent-kafka client logs through this logger, not librdkafka's own stderr
#: writer: lines arrive through the client's poll() in Python's logging, repeats held back.
LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")
LIBRDKAFKA_LOG.addFilter(LogRepeats(LOG_REPEAT_WINDOW))


def admin_client(broker_url: str) -> AdminClient:
    """confluent-kafka's admin client of ``broker_url`` (its type stubs leave out the
    ``logger`` key that every client takes)."""
    return AdminClient(client_config(broker_url))  # type: ignore[arg-type]


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://host:port[,host:port]`` (any broker URL form) to librdkafka's ``host:port,...``,
    for tools that take only the servers (kcat in tests, the dev stack's probe).

    Raises ``ConfigurationError`` for a malformed URL.
    """
    return BrokerLocation.from_url(broker_url).bootstrap_servers


#: Partitions of the downloads topic. A region's counts go to one of them
#: (``schemas.partitioning.region_partition``) and its workers read that one only, so a
#: worker reads its own region's counts and those of the regions sharing its partition:
#: with N regions, (N - 1) / 64 others on average. A topic that already exists keeps its
#: count (``ensure_topics`` never repartitions); with one partition every worker reads all.
DOWNLOADS_PARTITIONS = 64


@dataclass(frozen=True)
class Topics:
    """The names of the topics a federation uses; tests give each run its own."""

    releases: str = "fair.releases"
    rejected: str = "fair.rejected"
    trust: str = "fair.trust"
    replicas: str = "fair.replicas"
    #: Each region's counts in one partition: ``schemas.partitioning.region_partition``.
    downloads: str = "fair.downloads"
    #: Compacted: each node's signed registration and latest heartbeat.
    status: str = "fair.status"
    #: Prefix of each region's view topic (``view``).
    view_prefix: str = "fair.view."

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(
            releases=f"{prefix}fair.releases",
            rejected=f"{prefix}fair.rejected",
            trust=f"{prefix}fair.trust",
            replicas=f"{prefix}fair.replicas",
            downloads=f"{prefix}fair.downloads",
            status=f"{prefix}fair.status",
            view_prefix=f"{prefix}fair.view.",
        )

    def view(self, region: str) -> str:
        """The region's view topic (compacted, key = package): every worker and frontend of
        the region follows it into its own local view."""
        return f"{self.view_prefix}{region}"

    def partitions(self, releases: int) -> dict[str, int]:
        """Partition counts to create: releases by package, download counts by region
        (``DOWNLOADS_PARTITIONS``), the others in one ordered log."""
        return {
            self.releases: releases,
            self.rejected: 1,
            self.trust: 1,
            self.replicas: 1,
            self.downloads: DOWNLOADS_PARTITIONS,
            self.status: 1,
        }

    @property
    def compacted(self) -> frozenset[str]:
        """Topics where only the last record of each key matters."""
        return frozenset({self.status})


def ensure_topics(
    broker_url: str,
    partitions: Mapping[str, int],
    *,
    compacted: Iterable[str] = (),
    timeout: float = 15.0,
) -> None:
    """Create the topics that do not exist yet (``compacted`` ones with
    ``cleanup.policy=compact``); existing ones are left as they are.

    Raises ``BrokerUnavailableError`` when the broker does not answer.
    """
    admin = admin_client(broker_url)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"broker {redact_url(broker_url)} did not list topics: {exc}"
        ) from exc
    compact = set(compacted)
    wanted = [
        NewTopic(
            name,
            num_partitions=count,
            replication_factor=1,
            config={"cleanup.policy": "compact"} if name in compact else {},
        )
        for name, count in partitions.items()
        if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BrokerUnavailableError(
                f"broker {redact_url(broker_url)} did not create {name}: {exc}"
            ) from exc


def ensure_region_topics(broker_url: str, topics: Topics, region: str, partitions: int) -> None:
    """The federation's topics and the region's view topic (compacted, as many partitions as
    the releases topic). Raises ``BrokerUnavailableError``."""
    view = topics.view(region)
    ensure_topics(
        broker_url,
        {**topics.partitions(partitions), view: partitions},
        compacted={*topics.compacted, view},
    )


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


@dataclass(frozen=True)
class PartitionPosition:
    """A consumer group's committed offset against the log end of one partition."""

    partition: int
    committed: int | None
    log_end: int

    @property
    def behind(self) -> int:
        """Events not yet committed; never negative (Tansu under-reports the log end)."""
        return max(0, self.log_end - (self.committed or 0))


def group_positions(
    broker_url: str, group: str, topic: str, *, timeout: float = 10.0
) -> list[PartitionPosition]:
    """Committed offsets of ``group`` and log ends of ``topic``, per partition.

    On Tansu the log end is approximate (DESIGN.md): it may lag the real one by
    the last batch. Raises ``BrokerUnavailableError``.
    """
    admin = admin_client(broker_url)
    try:
        metadata = admin.list_topics(timeout=timeout)
        partitions = sorted(metadata.topics[topic].partitions) if topic in metadata.topics else []
        if not partitions:
            return []
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in partitions]
        )
        result = admin.list_consumer_group_offsets([request])[group].result(timeout=timeout)
        committed = {tp.partition: tp.offset for tp in result.topic_partitions}
        probe = Consumer(
            {
                **client_config(broker_url),
                "group.id": f"{group}.probe",
                "log.connection.close": False,
            }
        )
        try:
            ends = {
                p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout)[1]
                for p in partitions
            }
        finally:
            probe.close()
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"broker {redact_url(broker_url)} did not report offsets: {exc}"
        ) from exc
    return [
        PartitionPosition(p, committed[p] if committed.get(p, -1) >= 0 else None, ends[p])
        for p in partitions
    ]


# Long because one read loop: the assignment, each partition's end, the deadline of no progress.
def _iter_to_end(
    broker_url: str,
    topic: str,
    positions: Mapping[int, int],
    *,
    limit: int,
    timeout: float,
) -> Iterator[tuple[int, int, bytes, int, bytes | None]]:
    """Yield (partition, offset, value, timestamp in ms, key) of every record at or after
    ``positions[partition]``.

    Tansu under-reports the high watermark (DESIGN.md), so the end is where the
    broker answers a fetch with nothing more (partition EOF), not the
    watermark. A partition stops early at ``limit`` records. Raises
    ``BrokerUnavailableError`` if the partitions are not read to their end
    within ``timeout`` seconds of no progress: an unknown end is never
    reported as "nothing left".
    """
    consumer = Consumer(
        {
            **client_config(broker_url),
            "group.id": "fairstream-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # At a partition's end the broker holds a fetch this long before saying so.
            "fetch.wait.max.ms": 50,
            "log.connection.close": False,
        }
    )
    counts = dict.fromkeys(positions, 0)
    open_partitions = set(positions)
    # Where each partition's next record would be, and those whose end was checked twice.
    following = {p: max(o, 0) for p, o in positions.items()}
    rechecked: set[int] = set()
    last_progress = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, p, max(o, 0)) for p, o in positions.items()])
        while open_partitions:
            messages = consumer.consume(num_messages=1000, timeout=0.1)
            if not messages:
                if time.monotonic() - last_progress > timeout:
                    raise BrokerUnavailableError(
                        f"could not read {topic} partitions {sorted(open_partitions)} to their "
                        f"end within {timeout:.0f} s; the broker may be overloaded, try again"
                    )
                continue
            last_progress = time.monotonic()
            for message in messages:
                partition, offset = message.partition(), message.offset()
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                        if partition in rechecked or not _records_beyond(
                            consumer, topic, partition, following[partition]
                        ):
                            open_partitions.discard(partition)
                        else:
                            # The end came before the watermark (which Tansu under-reports,
                            # never over-reports): read on, once.
                            rechecked.add(partition)
                        continue
                    raise BrokerUnavailableError(f"reading {topic} failed: {error.str()}")
                if partition is None or offset is None or partition not in open_partitions:
                    continue
                following[partition] = max(following[partition], offset + 1)
                if offset >= positions[partition]:
                    yield (
                        partition,
                        offset,
                        message.value() or b"",
                        message.timestamp()[1],
                        message.key(),
                    )
                    counts[partition] += 1
                    if counts[partition] >= limit:
                        open_partitions.discard(partition)
                        consumer.pause([TopicPartition(topic, partition)])
    except KafkaException as exc:
        raise BrokerUnavailableError(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()


def _records_beyond(consumer: Consumer, topic: str, partition: int, offset: int) -> bool:
    """Whether the broker's high watermark says the partition holds records at ``offset`` or
    later (an under-reported watermark errs towards False: then the EOF is taken)."""
    try:
        _, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=5, cached=False
        )
    except KafkaException:
        return False
    return bool(high > offset)


def _read_to_end(
    broker_url: str,
    topic: str,
    positions: Mapping[int, int],
    *,
    limit: int,
    timeout: float,
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record at or after each position, by partition (see ``_iter_to_end``)."""
    found: dict[int, list[tuple[int, bytes]]] = {p: [] for p in positions}
    for partition, offset, value, _, _ in _iter_to_end(
        broker_url, topic, positions, limit=limit, timeout=timeout
    ):
        found[partition].append((offset, value))
    return found


def records_after(
    broker_url: str,
    topic: str,
    positions: dict[int, int],
    *,
    limit: int = 10_000,
    timeout: float = 15.0,
) -> dict[int, int]:
    """Count the records at or after ``positions[partition]`` by reading them, up to ``limit``.

    Raises ``BrokerUnavailableError`` (see ``_read_to_end``).
    """
    found = _read_to_end(broker_url, topic, positions, limit=limit, timeout=timeout)
    return {partition: len(records) for partition, records in found.items()}


def read_partition(
    broker_url: str, topic: str, partition: int = 0, *, start: int = 0, timeout: float = 15.0
) -> list[tuple[int, bytes]]:
    """Every (offset, value) of one partition from ``start`` to its end, for small topics.

    Raises ``BrokerUnavailableError``.
    """
    found = _read_to_end(broker_url, topic, {partition: start}, limit=1_000_000, timeout=timeout)
    return found[partition]


def region_sync(
    broker_url: str, group: str, topic: str, *, limit: int = 1_000, timeout: float = 10.0
) -> list[PartitionSync]:
    """Per partition of ``topic``: ``group``'s committed offset (every event below it is
    applied), the log end, and the events at or after the committed offset with the
    publish time of the first of them.

    The count is the larger of the log end's difference (exact on Apache Kafka) and a
    count by reading up to ``limit`` records (exact on Tansu, whose log end is low), so a
    region is never reported in sync while an event waits. Raises ``BrokerUnavailableError``.
    """
    positions = group_positions(broker_url, group, topic, timeout=timeout)
    committed = {p.partition: p.committed or 0 for p in positions}
    counted = dict.fromkeys(committed, 0)
    oldest: dict[int, int] = {}
    for partition, _, _, timestamp, _ in _iter_to_end(
        broker_url, topic, committed, limit=limit, timeout=timeout
    ):
        counted[partition] += 1
        if partition not in oldest and timestamp > 0:
            oldest[partition] = timestamp
    found = []
    for position in positions:
        p = position.partition
        behind = max(position.behind, counted[p])
        first = oldest.get(p)
        found.append(
            PartitionSync(
                topic=topic,
                partition=p,
                applied_offset=committed[p],
                log_end=max(position.log_end, committed[p] + counted[p]),
                behind=behind,
                behind_is_lower_bound=counted[p] >= limit,
                oldest_unapplied_at=(
                    datetime.fromtimestamp(first / 1000, UTC)
                    if first is not None and behind
                    else None
                ),
            )
        )
    return found


@dataclass(frozen=True)
class PublishedBuild:
    """The newest release event of one (package, version) on the log: the build it names."""

    sha1: str
    sha256: str
    sequence: int


def published_builds(
    broker_url: str, topic: str, *, idle_timeout: float = 30.0
) -> dict[tuple[str, str], PublishedBuild]:
    """Every (package, version) released on ``topic``, with the build its newest event (the
    highest sequence) names: the log as the ledger.

    Reads every partition from its beginning to its end, keeping only these, so that a
    catalogue of any size fits in memory. Records are decoded (``decode_package_event``)
    but not verified: a release anyone produced counts as published (a tagged version is
    immutable; a dev version's next build names the one nodes hold). Records that do not
    decode as a package event are passed over. A topic that does not exist holds nothing.
    Raises ``BrokerUnavailableError``.
    """
    positions = dict.fromkeys(topic_partitions(broker_url, topic, timeout=idle_timeout), 0)
    if not positions:
        return {}
    found: dict[tuple[str, str], PublishedBuild] = {}
    for _, _, value, _, _ in _iter_to_end(
        broker_url, topic, positions, limit=1 << 62, timeout=idle_timeout
    ):
        try:
            event = decode_package_event(SignedEvent.from_bytes(value).payload)
        except RejectedError:
            continue
        if isinstance(event, ReleasePublished):
            key = (event.package, event.version)
            known = found.get(key)
            if known is None or event.sequence > known.sequence:
                artifact = event.artifact
                found[key] = PublishedBuild(artifact.sha1, artifact.sha256, event.sequence)
    return found


def published_releases(
    broker_url: str, topic: str, *, idle_timeout: float = 30.0
) -> set[tuple[str, str]]:
    """The (package, version) of every release event on ``topic`` (see ``published_builds``)."""
    return set(published_builds(broker_url, topic, idle_timeout=idle_timeout))


#: Which of a topic's partitions to follow, given all of them (sorted, once the topic exists).
PartitionChoice = Callable[[list[int]], Iterable[int]]


class TopicFollower:
    """Reads every partition of a topic (or those ``partitions`` chooses) from its
    beginning and keeps following them, in a thread.

    For state every worker needs whole (which nodes hold which replica, the
    region's download counts), so it reads outside the consumer group: no
    partition is shared out, nothing is committed. ``on_record(value)`` is
    called in the follower's thread, in log order per partition.

    ``partitions`` is asked once, when the topic's partitions are known; a choice of
    partitions the topic does not have is left out (and logged). ``followed`` is then
    the partitions followed.
    """

    def __init__(
        self,
        broker_url: str,
        topic: str,
        on_record: Callable[[bytes], None],
        *,
        name: str = "follower",
        partitions: PartitionChoice | None = None,
    ) -> None:
        self._broker_url = broker_url
        self._topic = topic
        self._on_record = on_record
        self._choose = partitions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}:{topic}", daemon=True)
        self.records = 0
        #: The partitions followed, once the topic's are known (None before).
        self.followed: list[int] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        consumer = Consumer(
            {
                **client_config(self._broker_url),
                "group.id": "fairstream-follower",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                "log.connection.close": False,
            }
        )
        try:
            partitions = self._partitions(consumer)
            if self._choose is not None and not self._stop.is_set():
                partitions = self._chosen(partitions)
            self.followed = partitions
            consumer.assign([TopicPartition(self._topic, p, 0) for p in partitions])
            while not self._stop.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.2):
                    if message.error() is not None:
                        continue
                    value = message.value()
                    if value is None:
                        continue
                    try:
                        self._on_record(value)
                    except Exception:  # one bad record must not stop the follower
                        log.exception("%s: record at %s not applied", self._topic, message.offset())
                    self.records += 1
        except KafkaException as exc:
            log.error("following %s stopped: %s", self._topic, exc)
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[int]:
        return wait_for_partitions(consumer, self._topic, self._stop)

    def _chosen(self, partitions: list[int]) -> list[int]:
        assert self._choose is not None
        wanted = set(self._choose(partitions))
        chosen = sorted(wanted.intersection(partitions))
        if wanted - set(chosen):
            log.warning(
                "%s has no partition %s (it has %d); not followed",
                self._topic,
                sorted(wanted - set(chosen)),
                len(partitions),
            )
        return chosen


def wait_for_partitions(
    consumer: Consumer, topic: str, stop: threading.Event, *, every: float = 1.0
) -> list[int]:
    """The partitions of ``topic``, once it exists (asking again every ``every`` seconds), or
    [] when ``stop`` is set first. Never raises."""
    while not stop.is_set():
        try:
            # All topics: asking about one by name makes Tansu create it.
            topics = consumer.list_topics(timeout=5.0).topics
        except KafkaException:
            time.sleep(every)
            continue
        if topic in topics and topics[topic].partitions:
            return sorted(topics[topic].partitions)
        time.sleep(every)
    return []


def topic_partitions(broker_url: str, topic: str, *, timeout: float = 15.0) -> list[int]:
    """The partitions of ``topic`` (empty when it does not exist; never creates it).

    Raises ``BrokerUnavailableError``.
    """
    admin = admin_client(broker_url)
    try:
        # Listing all topics: asking about one by name makes the broker create it.
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"broker {redact_url(broker_url)} did not list topics: {exc}"
        ) from exc
    found = metadata.topics.get(topic)
    return sorted(found.partitions) if found is not None else []


def iter_partition(
    broker_url: str, topic: str, partition: int, *, start: int = 0, timeout: float = 30.0
) -> Iterator[tuple[int, bytes]]:
    """(offset, value) of every record of one partition from ``start`` to its end, streamed.

    Raises ``BrokerUnavailableError`` (see ``_iter_to_end``).
    """
    for _, offset, value, _, _ in _iter_to_end(
        broker_url, topic, {partition: start}, limit=1 << 62, timeout=timeout
    ):
        yield offset, value


def iter_partition_records(
    broker_url: str, topic: str, partition: int, *, start: int = 0, timeout: float = 30.0
) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """(offset, timestamp in ms, key, value) of every record of one partition from
    ``start`` to its end, streamed: the records as they are, to carry them elsewhere.

    Raises ``BrokerUnavailableError`` (see ``_iter_to_end``).
    """
    for _, offset, value, timestamp, key in _iter_to_end(
        broker_url, topic, {partition: start}, limit=1 << 62, timeout=timeout
    ):
        yield offset, timestamp, key, value


@dataclass(frozen=True)
class ConsumedRecord:
    """One record read by a ``GroupConsumer``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def position(self) -> str:
        """``topic:partition:offset``, as a package state records where an event was."""
        return f"{self.topic}:{self.partition}:{self.offset}"


class GroupConsumer:
    """A member of a consumer group on one topic that commits only the offsets it is given.

    Blocking, and not safe for concurrent calls: drive it from one thread.
    Every method raises ``BrokerUnavailableError`` for a broker that does not
    answer or refuses; librdkafka reconnects by itself, so the caller may go
    on calling after a pause.
    """

    def __init__(
        self,
        broker_url: str,
        topic: str,
        group: str,
        *,
        session_timeout: float = 10.0,
        on_assign: Callable[[list[int]], None] = lambda partitions: None,
        on_revoke: Callable[[list[int]], None] = lambda partitions: None,
        fetch_wait: float = 0.1,
    ) -> None:
        """``on_assign`` and ``on_revoke`` are called with partition numbers, in the thread
        that calls ``poll``, inside it (so never while a polled batch is being handled by
        a caller that polls again only after handling). ``fetch_wait``: how long the
        broker may hold a fetch that finds nothing new (a release's latency floor on a
        broker that does not answer a waiting fetch early, the embedded Tansu)."""
        self._broker_url = broker_url
        self._topic = topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._consumer = Consumer(
            {
                **client_config(broker_url),
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Asking for a topic by name must not create it on someone else's cluster.
                "allow.auto.create.topics": False,
                "session.timeout.ms": int(session_timeout * 1000),
                "heartbeat.interval.ms": int(max(session_timeout / 6, 0.5) * 1000),
                "fetch.wait.max.ms": int(fetch_wait * 1000),
                # What librdkafka prefetches per partition (64 MB by default): a catch-up
                # of a large region would hold that much per partition in memory.
                "queued.max.messages.kbytes": 16384,
                "log.connection.close": False,
                # Connection failures come back from poll() and list_topics() and are
                # logged by the caller with its backoff; librdkafka would log each retry.
                "log_level": 2,
            }
        )
        self._subscribed = False
        self._session_timeout = session_timeout
        #: Whether the group's last word to this member was an assignment (not a revocation
        #: or nothing yet): see ``close``.
        self._settled = False

    def topic_exists(self, timeout: float = 5.0) -> bool:
        """Whether the topic exists (listing all topics: naming one may create it)."""
        try:
            return self._topic in self._consumer.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"broker {redact_url(self._broker_url)} did not list topics: {exc}"
            ) from exc

    def join(self) -> None:
        """Ask to join the group, once. The join goes on in librdkafka's threads (about 3 s
        on Tansu, which waits for more members), so a caller that joins before the rest of
        its start-up overlaps the two; the assignment is handed over in ``poll``. Raises
        ``BrokerUnavailableError``."""
        if self._subscribed:
            return
        try:
            self._consumer.subscribe(
                [self._topic],
                on_assign=lambda _, partitions: self._assigned(partitions),
                on_revoke=lambda _, partitions: self._revoked(partitions),
            )
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"joining the group of {self._topic} failed: {exc}"
            ) from exc
        self._subscribed = True

    def poll(self, max_records: int, timeout: float) -> list[ConsumedRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds; joins the
        group on the first call. Raises ``BrokerUnavailableError`` when nothing but errors came.
        """
        self.join()
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(f"reading {self._topic} failed: {exc}") from exc
        records: list[ConsumedRecord] = []
        errors: list[str] = []
        for message in messages:
            error = message.error()
            partition, offset = message.partition(), message.offset()
            if error is not None:
                errors.append(error.str())
            elif partition is not None and offset is not None:
                records.append(
                    ConsumedRecord(
                        self._topic, partition, offset, message.key(), message.value() or b""
                    )
                )
        if errors and not records:
            raise BrokerUnavailableError(
                f"reading {self._topic} on {redact_url(self._broker_url)} failed: "
                f"{'; '.join(errors[:3])}"
            )
        return records

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self._settled = True
        self._on_assign(sorted(tp.partition for tp in partitions))

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._settled = False
        self._on_revoke(sorted(tp.partition for tp in partitions))

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        """Commit, per partition, the offset of the next record to read (synchronously).

        Raises ``BrokerUnavailableError`` when the commit failed, for one
        partition or all (after a rebalance, say): the records are read again.
        """
        if not next_offsets:
            return
        offsets = [TopicPartition(self._topic, p, o) for p, o in sorted(next_offsets.items())]
        try:
            committed = self._consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exc:
            raise BrokerUnavailableError(f"committing {self._topic} offsets failed: {exc}") from exc
        failed = [tp for tp in committed if tp.error is not None]
        if failed:
            raise BrokerUnavailableError(
                f"committing {self._topic} offsets failed for partitions "
                f"{[tp.partition for tp in failed]}: {failed[0].error}"
            )

    def close(self) -> None:
        """Leave the group (its partitions go to the other members at once).

        A member in the middle of a rebalance (revoked, not yet assigned again) first
        waits for the rebalance to end, for at most twice the session timeout: the
        embedded broker (Tansu 0.6) keeps a group whose member left in the middle of a
        rebalance stuck for good, no member joins it again (measured: a third consumer
        had no partition after 60 s; after a settled leave it had all of them in 3.5 s).
        What is polled meanwhile is dropped, uncommitted: the next owner reads it.
        """
        deadline = time.monotonic() + 2 * self._session_timeout
        try:
            while self._subscribed and not self._settled and time.monotonic() < deadline:
                self._consumer.consume(num_messages=1000, timeout=0.2)
        except KafkaException as exc:
            log.debug("settling the consumer of %s before it leaves: %s", self._topic, exc)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("closing the consumer of %s: %s", self._topic, exc)
