"""``fairstream publishing``: run the publishing service, and make its signed requests from a
shell; ``fairstream publish``: sign one release here and produce it to the releases topic.

``register(cli)`` adds both to the ``fairstream`` command. This module does not import
``services.cli.main`` (which imports it): the shared options come from
``services.cli.options``. ``publishing serve`` only turns its options into
``PublishingServeOptions``: ``services.publishing.build`` builds and runs the service.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console

from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics, ensure_topics
from schemas.errors import ConfigurationError
from schemas.events import DEFAULT_MAX_ARTIFACT_SIZE, AdvisorySource
from schemas.signing import SigningKey
from services.cli.options import (
    BROKER_OPTION,
    BYTE_SIZE,
    DATA_DIR_OPTION,
    PARTITIONS_OPTION,
    SIGNERS_ROOT_OPTION,
    SIGNING_KEY_OPTION,
    TOPIC_PREFIX_OPTION,
    check_signers,
    signers_root,
)
from services.cli.options import broker_url as resolve_broker
from services.node.config import configurable
from services.publishing.build import PublishingServeOptions, build_publishing, run_publishing
from services.publishing.client import PublishingClient, Receipt
from services.publishing.publisher import build_release, publish_release
from services.publishing.trust_admin import signing_keys

console = Console(soft_wrap=True)

URL_OPTION = click.option(
    "--url",
    required=True,
    envvar="FAIRSTREAM_PUBLISHING_URL",
    help="The publishing service, e.g. http://127.0.0.1:8090.",
)
CLIENT_KEY_OPTION = click.option(
    "--key",
    "key_path",
    required=True,
    envvar="FAIRSTREAM_PUBLISHING_KEY",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file that signs the request; the trust root must delegate it for the "
    "package's namespace.",
)


def register(group: click.Group) -> None:
    """Add ``publish`` and ``publishing`` (serve, release, yank, expunge, advisory) to
    ``group``."""
    group.add_command(publish)
    group.add_command(publishing)


@click.command()
@click.argument("package")
@click.argument("drupal_version")
@click.option(
    "--zip",
    "zip_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The release zip (one top directory).",
)
@click.option("--origin-url", required=True, help="Where nodes download the zip from.")
@SIGNING_KEY_OPTION
@click.option(
    "--require",
    "requires",
    multiple=True,
    metavar="NAME:CONSTRAINT",
    help="A Composer requirement, overriding the zip's composer.json; repeatable.",
)
@click.option(
    "--rebuild-of",
    default=None,
    metavar="SHA256",
    help="A new build of a dev version (1.x-dev): the sha256 of the build it replaces, the "
    "one nodes serve now (their /status/packages/NAME page shows it). Tagged versions are "
    "immutable: nodes refuse a rebuild of one.",
)
@SIGNERS_ROOT_OPTION
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@DATA_DIR_OPTION
# Long because click passes each of the command's options as a parameter.
def publish(
    package: str,
    drupal_version: str,
    zip_path: Path,
    origin_url: str,
    key_paths: tuple[Path, ...],
    requires: tuple[str, ...],
    rebuild_of: str | None,
    root_path: Path | None,
    broker: str | None,
    topic_prefix: str,
    partitions: int,
    data_dir: Path,
) -> None:
    """Sign one release and produce it to the releases topic; prints where it landed.

    \b
    Example: fairstream publish drupal/token 8.x-1.9 --zip token-8.x-1.9.zip \\
      --origin-url https://ftp.drupal.org/files/projects/token-8.x-1.9.zip \\
      --key keys/drupal.key
    """
    keys = signing_keys(key_paths)
    metadata: dict[str, object] = {}
    if requires:
        pairs = [r.split(":", 1) for r in requires]
        if any(len(pair) != 2 for pair in pairs):
            raise ConfigurationError("--require takes NAME:CONSTRAINT, e.g. drupal/token:^1.9")
        metadata["require"] = dict(pairs)
    root = signers_root(root_path)
    if root is not None:
        check_signers(keys, key_paths, root, package)
    broker_url = resolve_broker(data_dir, broker)
    topics = Topics.with_prefix(topic_prefix)
    release = build_release(
        package=package,
        drupal_version=drupal_version,
        zip_path=zip_path,
        origin_url=origin_url,
        metadata=metadata,
        rebuild_of=rebuild_of,
    )
    ensure_topics(broker_url, topics.partitions(partitions))
    producer = EventProducer(broker_url)
    delivered = publish_release(release, keys, producer, topics.releases)
    producer.close()
    console.print(
        f"published {release.package} {release.drupal_version} (Composer {release.version}, "
        f"sha256 {release.artifact.sha256[:16]}…) to "
        f"{delivered.topic}[{delivered.partition}]@{delivered.offset}"
    )


@click.group()
def publishing() -> None:
    """The publishing service: an HTTP API that signs and produces a namespace's events,
    and the signed requests of a release pipeline to it.

    \b
    Example: fairstream publishing serve --root root.avro --key keys/drupal.key \\
      --listen 127.0.0.1:8090
    """


@configurable
@publishing.command("serve")
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The pinned trust root (as nodes pin it): who may send requests, and for what.",
)
@click.option(
    "--key",
    "key_paths",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The publisher's private key(s) that sign the events; repeat to meet a threshold.",
)
@click.option(
    "--listen", default="127.0.0.1:8090", show_default=True, help="HOST:PORT to listen on."
)
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@click.option(
    "--max-artifact-size",
    type=BYTE_SIZE,
    default=DEFAULT_MAX_ARTIFACT_SIZE,
    show_default="1G",
    help="Refuse (413) release zips larger than this, downloaded or uploaded (1G, 500MB, "
    "2 GiB or bytes; K, M, G, T are powers of 1024).",
)
@DATA_DIR_OPTION
def serve(**options: Any) -> None:
    """Run the publishing service until Ctrl-C.

    \b
    Example: fairstream publishing serve --root root.avro --key keys/drupal.key \\
      --listen 127.0.0.1:8090
    """
    run_publishing(build_publishing(PublishingServeOptions(**options)), console)


@publishing.command("release")
@click.argument("package")
@click.argument("drupal_version")
@click.option("--origin-url", required=True, help="Where nodes download the zip from.")
@click.option(
    "--zip",
    "zip_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Upload this zip instead of letting the service download --origin-url.",
)
@click.option(
    "--require",
    "requires",
    multiple=True,
    metavar="NAME:CONSTRAINT",
    help="A Composer requirement, overriding the zip's composer.json; repeatable.",
)
@click.option(
    "--metadata",
    default=None,
    metavar="JSON",
    help='Composer fields overriding the zip\'s composer.json, e.g. \'{"description": "..."}\'.',
)
@click.option("--sha256", default=None, help="Refuse the release unless the zip has this sha256.")
@click.option("--sha1", default=None, help="Refuse the release unless the zip has this sha1.")
@click.option(
    "--size", type=click.IntRange(0), default=None, help="Refuse it unless the zip has this size."
)
@URL_OPTION
@CLIENT_KEY_OPTION
# Long because click passes each of the command's options as a parameter.
def release(
    package: str,
    drupal_version: str,
    origin_url: str,
    zip_path: Path | None,
    requires: tuple[str, ...],
    metadata: str | None,
    sha256: str | None,
    sha1: str | None,
    size: int | None,
    url: str,
    key_path: Path,
) -> None:
    """Publish a release through the service; prints where the event landed.

    \b
    Example: fairstream publishing release drupal/token 8.x-1.9 \\
      --origin-url https://ftp.drupal.org/files/projects/token-8.x-1.9.zip \\
      --url http://127.0.0.1:8090 --key keys/pipeline.key
    """
    fields = _metadata(metadata)
    if requires:
        pairs = [r.split(":", 1) for r in requires]
        if any(len(pair) != 2 for pair in pairs):
            raise ConfigurationError("--require takes NAME:CONSTRAINT, e.g. drupal/token:^1.9")
        fields["require"] = {**fields.get("require", {}), **dict(pairs)}
    receipt = _client(url, key_path).publish_release(
        package,
        drupal_version,
        origin_url,
        zip_path=zip_path,
        metadata=fields or None,
        sha256=sha256,
        sha1=sha1,
        size=size,
    )
    document = receipt.document
    _print_receipt(
        f"published {package} {drupal_version} (Composer {document.get('version')}, sha256 "
        f"{str(document.get('sha256'))[:16]}…)",
        receipt,
    )


@publishing.command("yank")
@click.argument("package")
@click.argument("version")
@click.option("--reason", required=True, help="Why the version is withdrawn (nodes keep it).")
@URL_OPTION
@CLIENT_KEY_OPTION
def yank(package: str, version: str, reason: str, url: str, key_path: Path) -> None:
    """Withdraw a Composer VERSION (1.9.0) from metadata; its zip stays for existing lock files.

    \b
    Example: fairstream publishing yank drupal/token 1.9.0 \\
      --reason "broken update hook" --url http://127.0.0.1:8090 \\
      --key keys/pipeline.key
    """
    receipt = _client(url, key_path).yank(package, version, reason)
    _print_receipt(f"yanked {package} {version}", receipt)


@publishing.command("expunge")
@click.argument("package")
@click.argument("version")
@click.option("--sha256", required=True, help="The sha256 of the version's zip, to delete.")
@click.option("--reason", required=True, help="Why the version is deleted everywhere.")
@URL_OPTION
@CLIENT_KEY_OPTION
def expunge(package: str, version: str, sha256: str, reason: str, url: str, key_path: Path) -> None:
    """Delete a Composer VERSION and its zip from every node.

    \b
    Example: fairstream publishing expunge drupal/token 1.9.0 \\
      --sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \\
      --reason "contains a leaked credential" --url http://127.0.0.1:8090 \\
      --key keys/pipeline.key
    """
    receipt = _client(url, key_path).expunge(package, version, sha256, reason)
    _print_receipt(f"expunged {package} {version}", receipt)


@publishing.command("advisory")
@click.argument("package")
@click.option("--advisory-id", required=True, help="e.g. SA-CONTRIB-2024-001")
@click.option("--affected-versions", required=True, help="Composer constraint, e.g. '<1.9.1'.")
@click.option("--title", required=True, help="The advisory's title.")
@click.option("--link", required=True, help="URL of the advisory text.")
@click.option(
    "--reported-at",
    default=None,
    help="'YYYY-MM-DD HH:MM:SS' UTC  [default: now]",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="NAME:REMOTE_ID",
    help="Where the advisory comes from, e.g. 'drupal.org:SA-CONTRIB-2024-001'; repeatable.",
)
@click.option("--cve", default=None, help="CVE id, if one was assigned.")
@click.option(
    "--severity",
    type=click.Choice(["low", "medium", "high", "critical"]),
    default=None,
    help="Severity, if rated.",
)
@URL_OPTION
@CLIENT_KEY_OPTION
# Long because click passes each of the command's options as a parameter.
def advisory(
    package: str,
    advisory_id: str,
    affected_versions: str,
    title: str,
    link: str,
    reported_at: str | None,
    sources: tuple[str, ...],
    cve: str | None,
    severity: str | None,
    url: str,
    key_path: Path,
) -> None:
    """Publish a security advisory for PACKAGE (Composer's security-advisories fields).

    \b
    Example: fairstream publishing advisory drupal/token \\
      --advisory-id SA-CONTRIB-2024-001 --affected-versions '<1.9.1' \\
      --title 'Access bypass' --link https://www.drupal.org/sa-contrib-2024-001 \\
      --source drupal.org:SA-CONTRIB-2024-001 --url http://127.0.0.1:8090 \\
      --key keys/pipeline.key
    """
    parsed = []
    for text in sources:
        name, colon, remote_id = text.partition(":")
        if not colon or not name or not remote_id:
            raise ConfigurationError(
                f"--source {text!r} is not NAME:REMOTE_ID, e.g. drupal.org:SA-CONTRIB-2024-001"
            )
        parsed.append(AdvisorySource(name=name, remote_id=remote_id))
    receipt = _client(url, key_path).advise(
        package,
        advisory_id=advisory_id,
        affected_versions=affected_versions,
        title=title,
        link=link,
        reported_at=reported_at or datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        sources=parsed,
        cve=cve,
        severity=severity,
    )
    _print_receipt(f"published advisory {advisory_id} for {package}", receipt)


def _client(url: str, key_path: Path) -> PublishingClient:
    key: SigningKey = signing_keys([key_path])[0]
    return PublishingClient(url, key)


def _print_receipt(what: str, receipt: Receipt) -> None:
    console.print(
        f"{what} → {receipt.topic}[{receipt.partition}]@{receipt.offset}",
        markup=False,
        highlight=False,
    )


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"--metadata is not JSON ({exc}); give a JSON object") from exc
    if not isinstance(document, dict):
        raise ConfigurationError(
            '--metadata must be a JSON object, e.g. \'{"description": "..."}\''
        )
    return document
