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


def state_key(package: str) -> str:
    """The derived state of a package (its verified versions): ``state/drupal/token.json``."""
    return f"state/{package}.json"


def p2_key(package: str, *, dev: bool = False) -> str:
    """The Composer v2 metadata document: ``p2/drupal/token.json`` or ``p2/drupal/token~dev.json``."""
    return f"p2/{package}{'~dev' if dev else ''}.json"


def dist_path(package: str, version: str, sha256: str) -> str:
    """The path a node serves a zip under (answered by a redirect to the store)."""
    return f"/dist/{package}/{version}/{sha256}.zip"


TRUST_POSITION = "trust/position.json"


def trust_root_key(version: int) -> str:
    """A trust root the node has verified and follows: ``trust/roots/v000002.avro``."""
    return f"trust/roots/v{version:06d}.avro"
