"""The checksums file: the sha256, sha1 and size of zips, so that they need not be downloaded."""

from __future__ import annotations

from urllib.parse import urlsplit

import orjson

from connectors.composer_repo import ArtifactDigest
from schemas.errors import ConfigurationError
from schemas.events import HEX_SHA1, HEX_SHA256

__all__ = ["checksum_key", "load_checksums"]


def checksum_key(url: str) -> str:
    """How a dist URL is looked up in a checksums file: its path, without the leading ``/``."""
    return urlsplit(url).path.lstrip("/")


def load_checksums(data: bytes, *, source: str = "checksums file") -> dict[str, ArtifactDigest]:
    """Read a checksums file: ``{"<dist URL path>": {"sha256": ..., "sha1": ..., "size": ...}}``.

    Keys may be paths (with or without the leading ``/``) or whole URLs; the
    result is keyed by ``checksum_key``. Raises ``ConfigurationError`` naming
    the first entry that is wrong.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigurationError(
            f"{source} is not a JSON object mapping dist URL paths to sha256, sha1 and size"
        )
    checksums: dict[str, ArtifactDigest] = {}
    for key, value in document.items():
        if not (
            isinstance(value, dict)
            and isinstance(value.get("sha256"), str)
            and HEX_SHA256.fullmatch(value["sha256"])
            and isinstance(value.get("sha1"), str)
            and HEX_SHA1.fullmatch(value["sha1"])
            and type(value.get("size")) is int
            and value["size"] >= 0
        ):
            raise ConfigurationError(
                f"{source}: entry {key!r} is not {{'sha256': 64 hex, 'sha1': 40 hex, "
                f"'size': bytes}} (got {str(value)[:120]})"
            )
        checksums[checksum_key(key)] = ArtifactDigest(value["sha256"], value["sha1"], value["size"])
    return checksums
