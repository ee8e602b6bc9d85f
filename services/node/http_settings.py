"""How a node's HTTP face answers: its settings, shared by the app and the parts it routes to."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from aiohttp import web

from schemas.names import PACKAGE_NAME
from streams.policy import JurisdictionPolicy

#: How a node answers for a zip it holds: ``redirect`` (302 to a presigned URL of the
#: store, which clients must reach) or ``proxy`` (the bytes through the node, checked).
DistMode = Literal["redirect", "proxy"]
DIST_MODES: Final[tuple[DistMode, ...]] = ("redirect", "proxy")

#: The headers of a 503 answer: when the client may ask again.
RETRY_AFTER: Final = {"Retry-After": "5"}


@dataclass(frozen=True)
class NodeHttpSettings:
    """How one node answers.

    ``public_url`` is the node's base URL as clients see it (``https://eu.example``); when
    empty, each request's own scheme and host are used. ``mirror_artifacts`` false makes a
    metadata-only node: it never holds zips and always sends clients elsewhere. ``dist``
    says how a zip held here is answered (``DistMode``).
    """

    region: str
    patterns: tuple[str, ...] = ("drupal/*",)
    presign_expiry: timedelta = timedelta(minutes=15)
    public_url: str = ""
    mirror_artifacts: bool = True
    dist: DistMode = "redirect"
    #: The ``service`` label of its HTTP metrics: ``node``, ``frontend`` or ``directory``.
    service: str = "node"
    #: Where the region may send clients (``Purpose.REDIRECT``): a sovereign region's
    #: ``/dist`` and ``mirrors`` never name a node or an origin outside its list.
    jurisdictions: JurisdictionPolicy = JurisdictionPolicy()

    def public_base(self, request: web.Request) -> str:
        """The node's base URL, without a trailing '/': ``public_url``, else the request's."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    def serves(self, package: str) -> bool:
        """Whether ``package`` is in the node's ``patterns``."""
        return any(fnmatch.fnmatchcase(package, p) for p in self.patterns)

    def is_our_package(self, name: str) -> bool:
        """Whether ``name`` is a package name the node serves."""
        return PACKAGE_NAME.fullmatch(name) is not None and self.serves(name)
