"""What a region replicates: its mode (full mirror or metadata only), which packages, how much disk."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from enum import StrEnum

from schemas.errors import ConfigurationError


class ReplicationMode(StrEnum):
    """How a region holds zips (AspireCloud's choice, per node)."""

    #: Zips are copied into the region's store; dist is served from there.
    FULL = "full"
    #: No zips: dist is a redirect to a node that announced a verified copy, or to the origin.
    METADATA_ONLY = "metadata-only"


@dataclass(frozen=True)
class ReplicationPolicy:
    """A region's replication choice; a partial mirror is a full or metadata-only one with
    an allow-list (``include``) or a deny-list (``exclude``) of package name patterns."""

    mode: ReplicationMode = ReplicationMode.FULL
    include: tuple[str, ...] = ("drupal/*",)
    exclude: tuple[str, ...] = ()
    #: Bytes of zips the region keeps at most; cold ones are evicted beyond it. None: no quota.
    quota_bytes: int | None = None

    def __post_init__(self) -> None:
        for pattern in (*self.include, *self.exclude):
            if not pattern or pattern != pattern.lower() or "/" not in pattern:
                raise ConfigurationError(
                    f"package pattern {pattern!r} is not a lower-case 'vendor/name' glob; "
                    "write it like 'drupal/*' or 'drupal/token'"
                )
        if not self.include:
            raise ConfigurationError(
                "the allow-list is empty, so the region would serve nothing; "
                "give at least one --include pattern such as 'drupal/*'"
            )
        if self.quota_bytes is not None and self.quota_bytes <= 0:
            raise ConfigurationError(
                f"disk quota {self.quota_bytes} is not a positive number of bytes; "
                "leave it out for no quota"
            )

    @property
    def mirrors_artifacts(self) -> bool:
        return self.mode is ReplicationMode.FULL

    def serves(self, package: str) -> bool:
        """Whether the region serves ``package`` at all (metadata and, in full mode, zips)."""
        return any(fnmatch.fnmatchcase(package, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(package, p) for p in self.exclude
        )


#: How a size is written, for messages.
SIZE_EXAMPLES = "500M, 20G, 20 GiB or 1073741824 (K, M, G, T: powers of 1024)"


def parse_size(text: str) -> int:
    """``"500M"``, ``"20G"``, ``"20 GiB"``, ``"500MB"``, ``"1048576"`` to bytes (binary units,
    with or without ``i`` and ``B``); raises ``ConfigurationError``."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = cleaned, ""
    if cleaned and cleaned[-1] in units:
        number, unit = cleaned[:-1], cleaned[-1]
    try:
        value = float(number)
    except ValueError:
        raise ConfigurationError(
            f"size {text!r} is not a number of bytes; write it like {SIZE_EXAMPLES}"
        ) from None
    if value <= 0:
        raise ConfigurationError(f"size {text!r} must be positive")
    size = value * units[unit]
    # float() also takes "inf", "nan" and "1e400"; int() of those would raise OverflowError.
    if not math.isfinite(size):
        raise ConfigurationError(
            f"size {text!r} is not a number of bytes; write it like {SIZE_EXAMPLES}"
        )
    if size < 1:
        raise ConfigurationError(f"size {text!r} is less than one byte; it must be positive")
    return int(size)
