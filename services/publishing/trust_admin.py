"""Making trust roots: what Drupal.org's infrastructure team runs to start and rotate the trust chain."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from schemas.errors import ConfigurationError
from schemas.events import utc_now
from schemas.signing import PublicKey, SigningKey
from schemas.trust import Delegation, TrustRoot

_DELEGATION = re.compile(
    r"^(?P<ns>[^=]+)=(?P<publisher>[^:]+):(?P<keys>[^@]+)(@(?P<threshold>\d+))?$"
)


def write_key_pair(key: SigningKey, private_path: Path) -> Path:
    """Write ``NAME.key`` (mode 600) and ``NAME.pub`` beside it; returns the public key's path."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(key.to_json())
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(key.public_key.to_json())
    return public_path


def read_key(path: Path) -> SigningKey | PublicKey:
    """A key file: private (``.key``, has a seed) or public (``.pub``).

    Raises ``ConfigurationError`` naming the file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc.strerror}") from exc
    if b'"seed"' in data:
        return SigningKey.from_json(data, source=str(path))
    return PublicKey.from_json(data, source=str(path))


def public_of(key: SigningKey | PublicKey) -> PublicKey:
    return key.public_key if isinstance(key, SigningKey) else key


def signing_keys(paths: Sequence[Path]) -> list[SigningKey]:
    """Private keys to sign with; raises ``ConfigurationError`` for a public key file."""
    keys = []
    for path in paths:
        key = read_key(path)
        if not isinstance(key, SigningKey):
            raise ConfigurationError(
                f"{path} is a public key, not a private key; signing needs the private .key file"
            )
        keys.append(key)
    return keys


@dataclass(frozen=True)
class DelegationSpec:
    """A namespace handed to one publisher's keys: ``drupal/*=drupal.org:keys/a.pub,keys/b.pub@2``."""

    namespace: str
    publisher: str
    keys: tuple[PublicKey, ...]
    threshold: int

    @classmethod
    def parse(cls, text: str) -> DelegationSpec:
        """Raises ``ConfigurationError`` showing the expected form."""
        match = _DELEGATION.fullmatch(text.strip())
        if match is None:
            raise ConfigurationError(
                f"delegation {text!r} is not NAMESPACE=PUBLISHER:KEYFILE[,KEYFILE...][@THRESHOLD], "
                "e.g. 'drupal/*=drupal.org:keys/drupal.pub'"
            )
        keys = tuple(public_of(read_key(Path(p))) for p in match["keys"].split(","))
        return cls(match["ns"], match["publisher"], keys, int(match["threshold"] or 1))


def build_root(
    *,
    version: int,
    root_keys: Sequence[PublicKey],
    root_threshold: int,
    delegations: Sequence[DelegationSpec],
    expires: datetime | None = None,
    valid_for: timedelta = timedelta(days=365),
) -> TrustRoot:
    """A trust root from keys and delegations; raises ``MalformedEventError`` if inconsistent."""
    keys = {key.keyid: key for key in root_keys}
    for spec in delegations:
        keys.update({key.keyid: key for key in spec.keys})
    return TrustRoot(
        version=version,
        expires=expires or utc_now() + valid_for,
        keys=keys,
        root_keyids=tuple(key.keyid for key in root_keys),
        root_threshold=root_threshold,
        delegations=tuple(
            Delegation(
                namespace=spec.namespace,
                publisher=spec.publisher,
                keyids=tuple(key.keyid for key in spec.keys),
                threshold=spec.threshold,
            )
            for spec in delegations
        ),
    )
