"""``fairstream trust`` (init, rotate, publish: the trust roots) and ``fairstream keys``
(publishers' key pairs).

``register(cli)`` adds both groups to the ``fairstream`` command.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console

from connectors.kafka_producers import EventProducer
from connectors.kafka_topics import Topics, ensure_topics
from schemas.errors import ConfigurationError
from schemas.signing import SigningKey
from schemas.trust import TrustRoot, load_pinned_root, verify_root_update
from services.cli.options import (
    BROKER_OPTION,
    DATA_DIR_OPTION,
    PARTITIONS_OPTION,
    TOPIC_PREFIX_OPTION,
    pinned_root,
    read_file,
    write_file,
)
from services.cli.options import broker_url as resolve_broker
from services.publishing.trust_admin import (
    DelegationSpec,
    build_root,
    public_of,
    read_key,
    signing_keys,
    write_key_pair,
)

console = Console(soft_wrap=True)


def register(group: click.Group) -> None:
    """Add ``keys`` (generate) and ``trust`` (init, rotate, publish) to ``group``."""
    group.add_command(keys)
    group.add_command(trust)


@click.group()
def keys() -> None:
    """Ed25519 keys of publishers.

    Example: fairstream keys generate keys/drupal
    """


@keys.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_generate(path: Path) -> None:
    """Write a new key pair: PATH.key (private, mode 600) and PATH.pub (public).

    Example: fairstream keys generate keys/drupal
    """
    private_path = path.with_suffix(".key")
    if private_path.exists() or private_path.with_suffix(".pub").exists():
        raise ConfigurationError(
            f"{private_path} or its .pub already exists; choose another name or remove them first"
        )
    key = SigningKey.generate()
    try:
        public_path = write_key_pair(key, private_path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write key file {private_path}: {exc.strerror} ({exc.filename}); choose a "
            "path in a directory you may write to"
        ) from exc
    console.print(f"key id {key.public_key.keyid}\nprivate {private_path}\npublic  {public_path}")


ROOT_KEY_OPTION = click.option(
    "--root-key",
    "root_key_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="A root key of the new root (.key or .pub file); repeat for each.",
)
THRESHOLD_OPTION = click.option(
    "--threshold",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="How many root keys must sign the next root.",
)
DELEGATE_OPTION = click.option(
    "--delegate",
    "delegations",
    multiple=True,
    metavar="NS=PUBLISHER:KEYS[@N]",
    help="Delegate a namespace, e.g. 'drupal/*=drupal.org:keys/drupal.pub'; repeatable.",
)
EXPIRES_OPTION = click.option(
    "--expires-days",
    type=click.IntRange(1),
    default=365,
    show_default=True,
    help="Days until the root expires (nodes then stop applying events until a newer root).",
)


@click.group()
def trust() -> None:
    """Trust roots: root keys, delegations of namespaces to publisher keys, rotations.

    \b
    Example: fairstream trust init root.avro --root-key keys/root.key \\
      --delegate 'drupal/*=drupal.org:keys/drupal.pub'
    """


@trust.command("init")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@ROOT_KEY_OPTION
@THRESHOLD_OPTION
@DELEGATE_OPTION
@EXPIRES_OPTION
def trust_init(
    out: Path,
    root_key_paths: tuple[Path, ...],
    threshold: int,
    delegations: tuple[str, ...],
    expires_days: int,
) -> None:
    """Write root v1, signed by its own root keys (give their private .key files): the file nodes pin.

    \b
    Example: fairstream trust init root.avro --root-key keys/root.key \\
      --delegate 'drupal/*=drupal.org:keys/drupal.pub'
    """
    keys = [read_key(p) for p in root_key_paths]
    signers = [k for k in keys if isinstance(k, SigningKey)]
    root = build_root(
        version=1,
        root_keys=[public_of(k) for k in keys],
        root_threshold=threshold,
        delegations=[DelegationSpec.parse(d) for d in delegations],
        valid_for=timedelta(days=expires_days),
    )
    if len(signers) < threshold:
        raise ConfigurationError(
            f"root v1 must be signed by {threshold} of its root keys; give their private "
            ".key files with --root-key"
        )
    signed = root.sign(signers)
    load_pinned_root(signed)  # refuses a root that does not sign itself with its threshold
    write_file(out, signed, "trust root file")
    console.print(
        f"trust root v1 ({len(root.delegations)} delegations, expires {root.expires:%Y-%m-%d}) → {out}"
    )


@trust.command("rotate")
@click.argument("previous", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@ROOT_KEY_OPTION
@THRESHOLD_OPTION
@DELEGATE_OPTION
@EXPIRES_OPTION
@click.option(
    "--sign",
    "sign_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Private keys signing the new root: a threshold of the previous root's and of the new.",
)
def trust_rotate(
    previous: Path,
    out: Path,
    root_key_paths: tuple[Path, ...],
    threshold: int,
    delegations: tuple[str, ...],
    expires_days: int,
    sign_paths: tuple[Path, ...],
) -> None:
    """Write root N+1 after PREVIOUS (root N); refused here if nodes would refuse it.

    \b
    Example: fairstream trust rotate root-v1.avro root-v2.avro \\
      --root-key keys/root.pub \\
      --delegate 'drupal/*=drupal.org:keys/drupal-2024.pub' --sign keys/root.key
    """
    current = _current_root(previous)
    root = build_root(
        version=current.version + 1,
        root_keys=[public_of(read_key(p)) for p in root_key_paths],
        root_threshold=threshold,
        delegations=[DelegationSpec.parse(d) for d in delegations],
        valid_for=timedelta(days=expires_days),
    )
    signed = root.sign(signing_keys(sign_paths))
    verify_root_update(current, signed)
    write_file(out, signed, "trust root file")
    console.print(f"trust root v{root.version} → {out}; publish it with `fairstream trust publish`")


def _current_root(path: Path) -> TrustRoot:
    """The root in a signed root file, checked against its own root keys' signatures."""
    return pinned_root(path)


@trust.command("publish")
@click.argument("root_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@BROKER_OPTION
@TOPIC_PREFIX_OPTION
@PARTITIONS_OPTION
@DATA_DIR_OPTION
def trust_publish(
    root_file: Path, broker: str | None, topic_prefix: str, partitions: int, data_dir: Path
) -> None:
    """Produce a signed root to the trust topic, where every node follows it.

    Example: fairstream trust publish root-v2.avro
    """
    broker_url = resolve_broker(data_dir, broker)
    topics = Topics.with_prefix(topic_prefix)
    ensure_topics(broker_url, topics.partitions(partitions))
    producer = EventProducer(broker_url)
    delivered = producer.produce(
        topics.trust, b"trust-root", read_file(root_file, "trust root file")
    )
    producer.close()
    console.print(
        f"published {root_file} to {delivered.topic}[{delivered.partition}]@{delivered.offset}"
    )
