"""Reaching a Kafka cluster: broker URLs and their security, every client's settings and log."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from confluent_kafka.admin import AdminClient

from connectors.store import redact_url
from schemas.errors import ConfigurationError

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
#: Named after the module the clients came from (connectors/kafka.py), not this one:
#: operators' filters and greps, and the tests, name it.
LIBRDKAFKA_LOG = logging.getLogger("connectors.kafka.librdkafka")
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
