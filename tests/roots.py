"""The trust root most tests and benchmarks start from: v1 delegating ``drupal/*`` to one key."""

from __future__ import annotations

from pathlib import Path

from schemas.signing import SigningKey
from schemas.trust import TrustRoot
from services.publishing.trust_admin import DelegationSpec, build_root


def write_drupal_root(path: Path, publisher: SigningKey, root_key: SigningKey) -> TrustRoot:
    """Write root v1, signed by ``root_key``, delegating ``drupal/*`` to ``publisher`` with
    threshold 1, to ``path`` (the file nodes pin); returns it."""
    root = build_root(
        version=1,
        root_keys=[root_key.public_key],
        root_threshold=1,
        delegations=[DelegationSpec("drupal/*", "drupal.org", (publisher.public_key,), 1)],
    )
    path.write_bytes(root.sign([root_key]))
    return root
