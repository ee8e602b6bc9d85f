"""Kafka security in one place: the broker URL's scheme says how every client connects."""

from __future__ import annotations

import ast
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from connectors.kafka_connection import (
    LIBRDKAFKA_LOG,
    BrokerLocation,
    ClientConfig,
    LogRepeats,
    bootstrap_servers,
    client_config,
)
from schemas.errors import ConfigurationError
from streams.peer_config import parse_peer
from streams.worker_app import faust_broker

REPO = Path(__file__).resolve().parents[2]
SECRET = "pa:ss@w/rd"
# The password percent-encoded, as it has to be in a URL.
ENCODED = "pa%3Ass%40w%2Frd"


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A self-signed CA certificate in PEM, as an operator's kafka-ca.pem."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fairstream test CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "kafka-ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


# ---------------------------------------------------------------------------
# Each scheme gives librdkafka the right keys
# ---------------------------------------------------------------------------


def connection(config: ClientConfig) -> ClientConfig:
    """The keys that say where and how to connect (every client also gets our logger)."""
    assert config["logger"] is LIBRDKAFKA_LOG
    return {key: value for key, value in config.items() if key != "logger"}


def test_kafka_is_plaintext_as_before() -> None:
    assert connection(client_config("kafka://a.example:9092,b.example:9093")) == {
        "bootstrap.servers": "a.example:9092,b.example:9093",
        "security.protocol": "plaintext",
    }


def test_kafka_ssl_verifies_the_brokers_with_the_ca_file(ca_file: Path) -> None:
    assert connection(client_config(f"kafka+ssl://a.example:9093,b.example:9093?ca={ca_file}")) == {
        "bootstrap.servers": "a.example:9093,b.example:9093",
        "security.protocol": "ssl",
        "ssl.ca.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_kafka_ssl_without_a_ca_file_uses_the_systems_cas() -> None:
    config = client_config("kafka+ssl://kafka.example:9093")
    assert config["ssl.ca.location"] == "probe"
    assert config["security.protocol"] == "ssl"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "scram-sha-512"])
def test_kafka_sasl_ssl_is_scram_over_tls(ca_file: Path, mechanism: str) -> None:
    url = f"kafka+sasl-ssl://fair%2Beu:{ENCODED}@k1:9093,k2:9093?mechanism={mechanism}&ca={ca_file}"

    assert connection(client_config(url)) == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": mechanism.upper(),
        "sasl.username": "fair+eu",
        "sasl.password": SECRET,
        "ssl.ca.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }


def librdkafka_record(message: str) -> logging.LogRecord:
    """A log record as confluent-kafka makes one from a librdkafka line."""
    return logging.LogRecord(
        "connectors.kafka.librdkafka",
        logging.ERROR,
        "",
        0,
        "%s [%s] %s",
        ("FAIL", "rdkafka#producer-1", message),
        None,
    )


def test_librdkafka_repeats_are_held_back_and_counted() -> None:
    now = [0.0]
    repeats = LogRepeats(60.0, clock=lambda: now[0])
    refused = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {}ms in state CONNECT)"

    shown = []
    for step in range(300):  # a reconnect every 50 ms for 15 s, each with its own timing
        now[0] = step * 0.05
        record = librdkafka_record(refused.format(step % 7))
        if repeats.filter(record):
            shown.append(record)
    tls = librdkafka_record("SSL handshake failed: certificate verify failed")
    assert repeats.filter(tls), "a line of another kind shows at once"

    assert len(shown) == 1
    now[0] = 61.0
    again = librdkafka_record(refused.format(0))
    assert repeats.filter(again)
    assert "(and 299 more like it in the last 61 s)" in again.getMessage()


def test_the_password_stays_out_of_the_repr() -> None:
    location = BrokerLocation.from_url(
        f"kafka+sasl-ssl://u:{ENCODED}@k1:9093?mechanism=SCRAM-SHA-512"
    )
    assert location.password == SECRET
    assert SECRET not in repr(location) and ENCODED not in repr(location)


def test_bootstrap_servers_reads_every_form() -> None:
    assert bootstrap_servers("kafka+sasl-ssl://u:p@k1:9093,k2:9094?mechanism=SCRAM-SHA-512") == (
        "k1:9093,k2:9094"
    )


# ---------------------------------------------------------------------------
# Bad URLs say what is wrong and show a right one
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem", "example"),
    [
        ("http://k1:9092", "is not kafka://, kafka+ssl://", "kafka+sasl-ssl://"),
        ("k1:9092", "is not kafka://", "fairstream dev up"),
        ("kafka://", "names no HOST:PORT", "kafka://kafka-1:9092"),
        ("kafka://k1:9092,k2", "'k2', which has no port", "kafka://kafka-1:9092"),
        ("kafka://k1:99999", "not a number from 1 to 65535", "kafka://kafka-1:9092"),
        ("kafka://k 1:9092", "not a host name", "kafka://kafka-1:9092"),
        ("kafka://k1:9092/fair", "has a path", "kafka://kafka-1:9092"),
        ("kafka://k1:9092?ca=/ca.pem", "TLS and SASL need kafka+ssl://", "kafka://kafka-1"),
        ("kafka://u:p@k1:9092", "only kafka+sasl-ssl:// uses", "kafka://kafka-1"),
        ("kafka+ssl://k1:9093?mechanism=PLAIN", "unknown option 'mechanism'", "?ca="),
        ("kafka+ssl://k1:9093?ca=", "ca= without a value", "?ca="),
        ("kafka+ssl://k1:9093?ca=/a&ca=/b", "gives ca= twice", "?ca="),
        ("kafka+sasl-ssl://k1:9093?mechanism=SCRAM-SHA-512", "no USER:PASSWORD@", "PASSWORD@"),
        ("kafka+sasl-ssl://u@k1:9093?mechanism=SCRAM-SHA-512", "no USER:PASSWORD@", "PASSWORD@"),
        ("kafka+sasl-ssl://u:p@k1:9093", "names no mechanism", "mechanism=SCRAM-SHA-512"),
        ("kafka+sasl-ssl://u:p@k1:9093?mechanism=PLAIN", "mechanism 'PLAIN'", "SCRAM-SHA-256"),
    ],
)
def test_a_bad_broker_url_says_what_is_wrong_and_shows_a_right_one(
    url: str, problem: str, example: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        client_config(url)
    message = str(raised.value)
    assert problem in message
    assert "write it like" in message and example in message


def test_an_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        client_config(f"kafka+sasl-ssl://u:{ENCODED}@k1:9093?mechanism=MD5")
    assert ENCODED not in str(raised.value) and SECRET not in str(raised.value)
    assert "u:***@k1" in str(raised.value)


def test_a_ca_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigurationError, match=r"CA file .*nope\.pem.* does not exist"):
        client_config(f"kafka+ssl://k1:9093?ca={missing}")


# ---------------------------------------------------------------------------
# Faust gets the same servers and security
# ---------------------------------------------------------------------------


def test_faust_gets_plaintext_servers_without_credentials() -> None:
    assert faust_broker("kafka://a:9092,b:9093") == (["kafka://a:9092", "kafka://b:9093"], None)


def test_faust_gets_tls_credentials_with_the_ca(ca_file: Path) -> None:
    servers, credentials = faust_broker(f"kafka+ssl://k1:9093?ca={ca_file}")

    assert servers == ["kafka://k1:9093"]
    assert isinstance(credentials, faust.SSLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SSL"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1


def test_faust_gets_scram_credentials_over_tls(ca_file: Path) -> None:
    url = f"kafka+sasl-ssl://fairstream-eu:{ENCODED}@k1:9093,k2:9093?mechanism=SCRAM-SHA-512&ca={ca_file}"

    servers, credentials = faust_broker(url)

    assert servers == ["kafka://k1:9093", "kafka://k2:9093"]
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "fairstream-eu"
    assert auth["sasl_plain_password"] == SECRET
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_faust_refuses_a_ca_file_that_is_no_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="not a PEM certificate bundle"):
        faust_broker(f"kafka+ssl://k1:9093?ca={junk}")


# ---------------------------------------------------------------------------
# Peers: the same URLs, inside --peer
# ---------------------------------------------------------------------------


def test_a_peer_may_use_scram_over_tls_on_several_hosts(ca_file: Path) -> None:
    broker = f"kafka+sasl-ssl://fair:{ENCODED}@a.example:9093,b.example:9093?mechanism=SCRAM-SHA-512&ca={ca_file}"

    peer = parse_peer(f"hostile:policy=refuse,broker={broker}", lambda path: b"")

    assert peer.broker_url == broker
    assert client_config(peer.broker_url)["sasl.password"] == SECRET


def test_a_peer_with_a_bad_broker_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_peer(
            f"hostile:policy=refuse,broker=kafka+sasl-ssl://u:{ENCODED}@a:9093",
            lambda path: b"",
        )
    assert "names no mechanism" in str(raised.value)
    assert ENCODED not in str(raised.value)


# ---------------------------------------------------------------------------
# Every client is built by client_config: a check on the source itself
# ---------------------------------------------------------------------------

CLIENTS = {"Consumer", "Producer", "AdminClient"}


def _is_client_config(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "client_config"
    )


def clients_not_built_by_client_config(source: str, filename: str) -> list[str]:
    """Each ``Consumer(``/``Producer(``/``AdminClient(`` call whose configuration is not
    ``client_config(...)`` or a dict that starts with ``**client_config(...)``, and each
    ``faust.App(`` without ``broker_credentials``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        where = f"{filename}:{node.lineno}"
        if name == "App" and not any(k.arg == "broker_credentials" for k in node.keywords):
            found.append((node.lineno, f"{where}: faust.App( without broker_credentials"))
        if name not in CLIENTS:
            continue
        config = node.args[0] if node.args else None
        built = config is not None and (
            _is_client_config(config)
            or (
                isinstance(config, ast.Dict)
                and bool(config.keys)
                and config.keys[0] is None
                and _is_client_config(config.values[0])
            )
        )
        if not built:
            message = f"{where}: {name}( with a configuration not built by client_config"
            found.append((node.lineno, message))
    return [message for _, message in sorted(found)]


def test_every_kafka_client_in_the_code_is_built_by_client_config() -> None:
    found = []
    files = 0
    for package in ("connectors", "streams", "services"):
        for path in sorted((REPO / package).rglob("*.py")):
            files += 1
            found += clients_not_built_by_client_config(
                path.read_text(), str(path.relative_to(REPO))
            )
    assert files > 20
    assert found == []


def test_bootstrap_servers_is_named_only_where_client_config_builds_it() -> None:
    for package in ("connectors", "streams", "services"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.relative_to(REPO) == Path("connectors/kafka_connection.py"):
                continue
            assert '"bootstrap.servers"' not in path.read_text(), path


def test_the_source_check_finds_a_client_built_by_hand() -> None:
    source = (
        "admin = AdminClient({'bootstrap.servers': servers})\n"
        "probe = confluent_kafka.Consumer({'group.id': 'g', **client_config(url)})\n"
        "ok = Producer({**client_config(url), 'acks': 'all'})\n"
        "also_ok = AdminClient(client_config(url))\n"
        "app = faust.App('g', broker='kafka://a:9092')\n"
    )

    found = clients_not_built_by_client_config(source, "example.py")

    assert found == [
        "example.py:1: AdminClient( with a configuration not built by client_config",
        "example.py:2: Consumer( with a configuration not built by client_config",
        "example.py:5: faust.App( without broker_credentials",
    ]


def test_settings_never_show_credentials_in_their_repr() -> None:
    from connectors.store import StoreLocation
    from services.publishing.http_app import PublishingSettings

    store = StoreLocation.from_url("s3://access:s3cr3t-store@127.0.0.1:9000")
    publishing = PublishingSettings(
        broker_url="kafka+sasl-ssl://svc:s3cr3t-kafka@k:9093?mechanism=SCRAM-SHA-512"
    )
    assert "s3cr3t-store" not in repr(store)
    assert "s3cr3t-kafka" not in repr(publishing)
