"""The rules of a node's dist answers, as plain functions over data: which version's zip a
request may have, and where else a client may be sent for it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.package_state import PackageState, VersionRecord, find_version
from streams.artifacts import Source
from streams.policy import JurisdictionPolicy, Purpose, peer_of_position

# The name of the module these rules were taken from: operators filter the node's log by
# logger name, and a replica URL ignored here was logged under it before.
log = logging.getLogger("services.node.http_app")


@dataclass(frozen=True)
class Servable:
    """The version's zip may be served: ``pretty`` is its version as published."""

    pretty: str
    record: VersionRecord


@dataclass(frozen=True)
class Gone:
    """The version or its bytes were expunged (410)."""

    detail: str


@dataclass(frozen=True)
class NotHere:
    """No such version here, or the sha256 asked is not the one signed for it (404)."""

    detail: str


DistVerdict = Servable | Gone | NotHere


def dist_verdict(
    state: PackageState | None, package: str, version: str, sha256: str
) -> DistVerdict:
    """What a request for ``package`` ``version`` by the zip's ``sha256`` may have, given the
    package's newest ``state`` (None: the package is unknown). Never raises."""
    # Bytes an expunged version shared with a kept one stay servable under the kept one.
    if state is not None and (
        version in state.expunged
        or (sha256 in state.expunged.values() and not state.references(sha256))
    ):
        return Gone(f"{package} {version} ({sha256}) was expunged")
    found = None if state is None else find_version(state, version)
    if found is None:
        return NotHere(f"{package} has no version {version} here")
    pretty, record = found
    if record.sha256 != sha256:
        # Only ever send a client to the bytes that were signed for this version.
        return NotHere(f"{package} {pretty} is sha256 {record.sha256}, not {sha256}")
    return Servable(pretty, record)


def redirect_urls(sources: Iterable[Source], policy: JurisdictionPolicy) -> list[str]:
    """The URLs of ``sources`` the region may send clients to. Never raises."""
    return [s.url for s in sources if policy.allows(Purpose.REDIRECT, s.jurisdiction)]


@dataclass(frozen=True)
class Withheld:
    """Other copies of the zip, and its origin, exist but outside the jurisdictions the
    region may send clients to: ``sources`` are those, the origin last."""

    sources: tuple[Source, ...]


def redirect_target(
    sha256: str,
    record: VersionRecord,
    replicas: Iterable[Source],
    *,
    own_url: str,
    policy: JurisdictionPolicy,
) -> str | Withheld | None:
    """Where else the zip of ``record`` is: another node's verified copy among ``replicas``
    (``sha256``'s), then its origin; None when it has no origin.

    Only where the region may send clients (``policy``): in a sovereign region, a copy or an
    origin outside its jurisdictions is never a target, and when no other one is left the
    answer is ``Withheld``. A replica URL that is not a dist URL of ``sha256``, or one back
    to ``own_url`` (this node), is ignored (logged). Never raises.
    """
    own = own_url.rstrip("/")
    withheld: list[Source] = []
    for source in replicas:
        url = source.url
        parts = urlsplit(url)
        # Another node's dist path names the sha256 and that node refuses any other
        # bytes under it; a URL that does not name it is not followed, nor one back here.
        if not (
            parts.scheme in ("http", "https")
            and parts.path.endswith(f"/{sha256}.zip")
            and not (own and url.startswith(own + "/"))
        ):
            log.warning("ignoring replica URL %r for sha256 %s: not a dist URL of it", url, sha256)
        elif policy.allows(Purpose.REDIRECT, source.jurisdiction):
            return url
        else:
            withheld.append(source)
    if not record.origin_url:
        return None
    # A release read from a peer network has its zip at that peer's origin, in the
    # jurisdiction declared for the peer (undeclared: never allowed by a sovereign list).
    jurisdiction = policy.origin_of(record.position)
    if policy.allows(Purpose.REDIRECT, jurisdiction):
        return record.origin_url
    peer = peer_of_position(record.position)
    holder = "origin" if peer is None else f"peer:{peer}"
    withheld.append(Source(record.origin_url, holder, jurisdiction))
    return Withheld(tuple(withheld))
