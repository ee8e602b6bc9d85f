"""Where things live in a region's bucket: one layout shared by the writer and the server.

The bucket alone is a complete static Composer repository (packages.json, p2/),
plus content-addressed artifacts and each package's derived state.
"""

from __future__ import annotations

import re

PACKAGES_JSON = "packages.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def artifact_key(sha256: str) -> str:
    """Content address of a zip: ``artifacts/sha256/ab/abcdef....zip``."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a lower-case hex sha256")
    return f"artifacts/sha256/{sha256[:2]}/{sha256}.zip"


def state_prefix(package: str) -> str:
    """Where the versions of a package's derived state live: ``state/drupal/token/``."""
    return f"state/{package}/"


def state_key(package: str, sequence: int) -> str:
    """The derived state of a package after its event ``sequence`` was applied.

    ``state/drupal/token/00001732100000000000.json``: one object per sequence,
    never overwritten, so the newest is the one with the largest name. A worker
    that lost its partition and writes late can only add an older object, never
    replace a newer one (the store has no conditional writes).
    """
    if sequence < 0:
        raise ValueError(f"sequence {sequence} is negative: nothing was applied")
    return f"{state_prefix(package)}{sequence:020d}.json"


def state_sequence(key: str) -> int | None:
    """The sequence in a ``state_key``, or None for any other key."""
    name = key.rsplit("/", 1)[-1]
    stem = name.removesuffix(".json")
    return int(stem) if stem != name and len(stem) == 20 and stem.isdigit() else None


def region_bucket(region: str) -> str:
    """The bucket a region's nodes share unless told another (``--bucket``)."""
    return f"fairstream-{region}"


def pending_key(sha256: str) -> str:
    """A release whose zip no source delivered yet, retried later:
    ``pending/<first two hex digits>/<sha256>.json``. Sharded as the zips are: an origin
    down during a bootstrap parks every release, and the embedded store's writes slow down
    with the number of keys in one directory (3 ms a PUT at 36,000, measured)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a lower-case hex sha256")
    return f"pending/{sha256[:2]}/{sha256}.json"


def pending_keys(sha256: str) -> tuple[str, str]:
    """Where a parked fetch of ``sha256`` may be: ``pending_key``, then the flat
    ``pending/<sha256>.json`` that buckets written before the sharding hold. Both are looked
    at and deleted; new parked fetches go to the first."""
    return pending_key(sha256), f"pending/{sha256}.json"


def provenance_key(sha256: str) -> str:
    """Where the region's copy of a zip came from (``streams.artifact_fetch.provenance``):
    ``provenance/<first two hex digits>/<sha256>.json``, beside the zip and deleted with it."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a lower-case hex sha256")
    return f"provenance/{sha256[:2]}/{sha256}.json"


PENDING_PREFIX = "pending/"
ARTIFACT_PREFIX = "artifacts/sha256/"


def artifact_sha256(key: str) -> str | None:
    """The sha256 an ``artifact_key`` addresses, or None for any other key."""
    name = key.rsplit("/", 1)[-1].removesuffix(".zip")
    return name if key.startswith(ARTIFACT_PREFIX) and _SHA256.fullmatch(name) else None


def p2_key(package: str, *, dev: bool = False) -> str:
    """The Composer v2 metadata document: ``p2/drupal/token.json`` or ``p2/drupal/token~dev.json``."""
    return f"p2/{package}{'~dev' if dev else ''}.json"


def dist_path(package: str, version: str, sha256: str) -> str:
    """The path a node serves a zip under (answered by a redirect to the store)."""
    return f"/dist/{package}/{version}/{sha256}.zip"


TRUST_POSITION = "trust/position.json"

#: The region's one public URL, recorded by its first worker: every worker renders its
#: documents with it, so a document never points clients at a worker scaled away.
REGION_JSON = "region.json"


def trust_root_key(version: int) -> str:
    """A trust root the node has verified and follows: ``trust/roots/v000002.avro``."""
    return f"trust/roots/v{version:06d}.avro"
