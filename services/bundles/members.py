"""Reading a bundle's members: by name, bounded, with what is wrong said."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import IO

from schemas.bundle import BundleContentError

#: The manifest and its signature are small: a larger member is not one.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def member_stream(bundle: tarfile.TarFile, name: str, path: Path) -> tuple[IO[bytes], int]:
    """The member ``name`` of the bundle as a stream, and its size. Raises
    ``BundleContentError`` when there is none."""
    try:
        info = bundle.getmember(name)
    except KeyError:
        raise BundleContentError(f"{path} has no member {name}: it is not a whole bundle") from None
    stream = bundle.extractfile(info) if info.isfile() else None
    if stream is None:
        raise BundleContentError(f"{path}: {name} is not a file")
    return stream, info.size


def manifest_member(bundle: tarfile.TarFile, name: str, path: Path) -> bytes:
    """A small member's bytes (the manifest, its signature). Raises ``BundleContentError``."""
    stream, size = member_stream(bundle, name, path)
    if size > MAX_MANIFEST_BYTES:
        raise BundleContentError(f"{path}: {name} is {size} bytes, too large to be one")
    with stream:
        return stream.read()
