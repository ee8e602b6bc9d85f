"""The Faust app a regional node's worker runs in (ADR 7): its producer, its timers and its
clean stop. The releases are read by the intake's own consumer (``streams.intake``), so the
app starts no consumer of its own.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import faust
from faust.app.base import BootStrategy
from faust.types.auth import CredentialsT

from connectors.kafka_connection import BrokerLocation, client_config
from schemas.errors import ConfigurationError
from streams.node_settings import NodeSettings


class _WorkerBoot(BootStrategy):
    """Faust runs the worker's app, timers and producer; the releases are read by the
    intake's own consumer (ADR 7), so Faust starts no consumer, no conductor and no table
    manager (whose recovery would wait for a rebalance that never comes)."""

    enable_kafka_consumer = False

    def tables(self) -> list[Any]:
        return []


class _WorkerApp(faust.App):
    BootStrategy = _WorkerBoot
    # Faust logs an app's lines under its class's module; these keep the node's name, as when
    # the class lived in streams/node.py ("streams.node: [^-_WorkerApp]: Starting...").
    logger = logging.getLogger("streams.node")


def worker_app(settings: NodeSettings) -> faust.App:
    """The Faust app of one worker of ``settings.region``, in the region's group.

    Raises ``ConfigurationError`` for a malformed broker URL or an unusable CA file.
    """
    broker, credentials = faust_broker(settings.broker_url)
    return _WorkerApp(
        settings.group_id,
        broker=broker,
        broker_credentials=credentials,
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        web_enabled=False,
        # Topics are created by the CLI with their partition counts; Faust must not guess.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )


def faust_broker(broker_url: str) -> tuple[list[str], CredentialsT | None]:
    """Faust's ``broker`` and ``broker_credentials`` for a broker URL: the same servers and
    security (TLS, SASL/SCRAM) as ``client_config`` gives the confluent-kafka clients.

    Faust picks its Kafka driver by the ``kafka://`` scheme; the security goes in the
    credentials. Raises ``ConfigurationError`` for a malformed URL or an unusable CA file.
    """
    client_config(broker_url)  # the same checks as every other client of this URL
    location = BrokerLocation.from_url(broker_url)
    servers = [f"kafka://{server}" for server in location.servers]
    if location.security == "plaintext":
        return servers, None
    try:
        context = ssl.create_default_context(cafile=location.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"the CA file {location.ca_file} of the broker URL is not a PEM certificate "
            f"bundle ({exc}); give the CA certificate that signed the brokers' certificates"
        ) from exc
    if location.security == "ssl":
        return servers, faust.SSLCredentials(context)
    return servers, faust.SASLCredentials(
        username=location.username,
        password=location.password,
        ssl_context=context,
        mechanism=location.mechanism,
    )
