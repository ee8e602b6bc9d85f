"""The composition root of the publishing service: ``fairstream publishing serve``'s options
made into a running service.

``build_publishing`` checks the options and wires the service (the trust root in force, the
publisher's keys, the topics) without serving anything; ``run_publishing`` says what it
serves and serves it. The click command (``services.publishing.cli``) only turns its
options into ``PublishingServeOptions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from connectors.kafka_topics import Topics, ensure_topics
from schemas.errors import ConfigurationError
from schemas.trust import short_ids
from services.cli.options import broker_url as resolve_broker
from services.cli.options import listen_address, log_settings, pinned_root
from services.publishing.http_app import PublishingService, PublishingSettings
from services.publishing.request_auth import signers_by_namespace
from services.publishing.trust_admin import signing_keys
from services.shared.serving import serve_app


@dataclass(frozen=True)
class PublishingServeOptions:
    """The options of ``fairstream publishing serve``, as click parses them: one field per
    parameter of the command, with its name and type (``--config`` is not one: it only
    supplies the others). Their meaning is the command's ``--help``."""

    root_path: Path
    key_paths: tuple[Path, ...]
    listen: str
    broker: str | None
    topic_prefix: str
    partitions: int
    max_artifact_size: int
    data_dir: Path


@dataclass(frozen=True)
class BuiltPublishing:
    """The publishing service wired and ready to serve, where it listens, and the line that
    says what it serves."""

    service: PublishingService
    host: str
    port: int
    banner: str


def build_publishing(options: PublishingServeOptions) -> BuiltPublishing:
    """Check ``options`` (an expired trust root is refused), then make sure the topics exist
    and wire the service; serves nothing.

    Raises ``ConfigurationError`` for a mistake in the options.
    """
    host, port = listen_address(options.listen)
    root = pinned_root(options.root_path)
    if root.expires <= datetime.now(UTC):
        raise ConfigurationError(
            f"trust root {options.root_path} (v{root.version}) expired at "
            f"{root.expires:%Y-%m-%d %H:%M} UTC; pin the newest root before starting the service"
        )
    keys = signing_keys(options.key_paths)
    namespaces = sorted(signers_by_namespace(root, keys))
    broker_url = resolve_broker(options.data_dir, options.broker)
    topics = Topics.with_prefix(options.topic_prefix)
    ensure_topics(broker_url, topics.partitions(options.partitions))
    service = PublishingService(
        PublishingSettings(
            broker_url=broker_url, topics=topics, max_artifact_size=options.max_artifact_size
        ),
        root,
        keys,
    )
    banner = (
        f"publishing service for {', '.join(namespaces)} on http://{options.listen} (keys "
        f"{short_ids(k.public_key.keyid for k in keys)}, trust root v{root.version}) → "
        f"{topics.releases}"
    )
    return BuiltPublishing(service=service, host=host, port=port, banner=banner)


def run_publishing(built: BuiltPublishing, console: Console) -> None:
    """Say on ``console`` what the service serves, then serve it until SIGTERM or Ctrl-C."""
    console.print(built.banner, markup=False, highlight=False)
    serve_app(built.service.app, built.host, built.port, logs=log_settings())
