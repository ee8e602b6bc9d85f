"""What an import is asked to do: the repository, the broker and topic, the keys, the limits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connectors.composer_repo import ArtifactDigest, SourceLimits
from connectors.kafka_topics import Topics
from schemas.errors import ConfigurationError
from schemas.signing import SigningKey
from services.importer.checksums import checksum_key

__all__ = ["ImportSettings"]


@dataclass(frozen=True)
class ImportSettings:
    """What to import from where into which topic, signed with which keys."""

    repository_url: str
    broker_url: str = field(repr=False)  # may carry SASL credentials
    keys: tuple[SigningKey, ...]
    topics: Topics = Topics()
    partitions: int = 4
    #: Package names to import; ``None``: the repository's ``available-packages``.
    packages: tuple[str, ...] | None = None
    #: sha256, sha1 and size per dist URL path (or URL); a zip not listed is downloaded.
    checksums: Mapping[str, ArtifactDigest] | None = None
    limits: SourceLimits = field(default_factory=SourceLimits)
    batch_size: int = 500
    #: Where zips are downloaded to be hashed (one at a time per request slot).
    work_dir: Path | None = None
    #: Raises ``ConfigurationError`` when the keys may not sign a package's events (the
    #: trust root given with ``--root`` does not delegate its namespace to them): checked
    #: before any event of the package is built.
    check_signers: Callable[[str], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigurationError("an import needs at least one signing key (--key FILE)")
        if self.batch_size < 1:
            raise ConfigurationError(f"batch size must be at least 1, not {self.batch_size}")
        if self.checksums is not None:
            # Looked up by checksum_key: "/files/x.zip", "files/x.zip" and a URL all match.
            keyed = {checksum_key(path): digest for path, digest in self.checksums.items()}
            object.__setattr__(self, "checksums", keyed)
