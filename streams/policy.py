"""What a region replicates: its mode (full mirror or metadata only), which packages, how much
disk, and from where: the jurisdictions its bytes may come from and its clients be sent to."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from schemas.errors import ConfigurationError, MalformedEventError
from schemas.names import check_jurisdiction

#: How the log position of a record read from a peer network starts (``PeerSettings.position``).
PEER_POSITION_PREFIX = "peer/"


def peer_of_position(position: str) -> str | None:
    """The name of the peer network a record at ``position`` was read from (None: ours)."""
    if not position.startswith(PEER_POSITION_PREFIX):
        return None
    return position.removeprefix(PEER_POSITION_PREFIX).split("/", 1)[0]


class ReplicationMode(StrEnum):
    """How a region holds zips (AspireCloud's choice, per node)."""

    #: Zips are copied into the region's store; dist is served from there.
    FULL = "full"
    #: No zips: dist is a redirect to a node that announced a verified copy, or to the origin.
    METADATA_ONLY = "metadata-only"


class Purpose(StrEnum):
    """What a sovereign region's policy restricts, each to its own list of jurisdictions."""

    #: Where zips are fetched from: the signed origin, other regions' copies.
    FETCH = "fetch"
    #: Where clients are sent: ``/dist`` fallbacks to another region, ``mirrors``.
    REDIRECT = "redirect"
    #: Where the directory routes this region's clients.
    ROUTE = "route"


@dataclass(frozen=True)
class JurisdictionPolicy:
    """Which jurisdictions a region may use, per purpose (docs/sovereignty.md).

    A purpose without a list is unrestricted (every region today); a sovereign region lists
    the jurisdictions it allows for each, and a source or node whose jurisdiction is not
    declared is never allowed. ``own`` is what this region's nodes declare in their signed
    registrations and replica announcements; ``origin`` is the signed origin's jurisdiction
    as the operator knows it (the origin declares none). ``peer_origins`` is the same for
    each peer network the region follows (``--peer NAME:...,jurisdiction=CODE``): a release
    that came from a peer has its zip at that peer's origin, not ours (``origin_of``).
    """

    own: str | None = None
    origin: str | None = None
    #: (peer name, its origin's jurisdiction) for each peer that declared one.
    peer_origins: tuple[tuple[str, str], ...] = ()
    #: Per purpose, the jurisdictions allowed; None: unrestricted.
    fetch: frozenset[str] | None = None
    redirect: frozenset[str] | None = None
    route: frozenset[str] | None = None

    def __post_init__(self) -> None:
        try:
            for code in (self.own, self.origin, *(code for _, code in self.peer_origins)):
                if code is not None:
                    check_jurisdiction(code)
            for purpose in Purpose:
                for code in self._allowed(purpose) or ():
                    check_jurisdiction(code)
        except MalformedEventError as exc:
            raise ConfigurationError(str(exc)) from None
        for purpose in Purpose:
            if self._allowed(purpose) == frozenset():
                raise ConfigurationError(
                    f"the {purpose} list of jurisdictions is empty, so nothing could be "
                    f"{_DONE[purpose]}; name at least one, e.g. EU"
                )

    @classmethod
    def restricting(
        cls, codes: Iterable[str], *, own: str | None = None, origin: str | None = None
    ) -> JurisdictionPolicy:
        """A sovereign region's policy: the same jurisdictions ``codes`` for every purpose."""
        allowed = frozenset(codes)
        return cls(own=own, origin=origin, fetch=allowed, redirect=allowed, route=allowed)

    def origin_of(self, position: str) -> str | None:
        """The jurisdiction of the signed origin of the release applied at ``position``:
        ``origin`` for one of our own topics; for a peer's (``peer/NAME/TOPIC:P:O``, see
        ``PeerSettings.position``) the one declared for that peer, None when it declared none
        (a sovereign policy then never uses it, rather than taking it for ours)."""
        peer = peer_of_position(position)
        if peer is None:
            return self.origin
        return dict(self.peer_origins).get(peer)

    def _allowed(self, purpose: Purpose) -> frozenset[str] | None:
        allowed: frozenset[str] | None = getattr(self, purpose.value)
        return allowed

    def restricts(self, purpose: Purpose) -> bool:
        return self._allowed(purpose) is not None

    def allows(self, purpose: Purpose, jurisdiction: str | None) -> bool:
        """Whether a source, a node or a region in ``jurisdiction`` (None: undeclared) may be
        used for ``purpose``."""
        allowed = self._allowed(purpose)
        return allowed is None or (jurisdiction is not None and jurisdiction in allowed)

    def describe(self, purpose: Purpose) -> str:
        """The jurisdictions allowed for ``purpose``, for messages: ``DE, EU`` or ``any``."""
        allowed = self._allowed(purpose)
        return ", ".join(sorted(allowed)) if allowed is not None else "any"


def jurisdiction_policy(
    allow: Iterable[str], *, own: str | None = None, origin: str | None = None
) -> JurisdictionPolicy:
    """The policy ``--allow-jurisdiction`` specs give: ``EU`` (or ``EU,DE``) for every
    purpose, ``fetch=EU`` (``redirect=``, ``route=``) for one; a purpose no spec names stays
    unrestricted. Raises ``ConfigurationError`` saying which spec is wrong."""
    lists: dict[Purpose, set[str]] = {}
    for spec in allow:
        purpose_name, sep, codes = spec.rpartition("=")
        if sep:
            try:
                purposes: tuple[Purpose, ...] = (Purpose(purpose_name.strip()),)
            except ValueError:
                raise ConfigurationError(
                    f"--allow-jurisdiction {spec!r}: {purpose_name!r} is not a purpose; write "
                    f"CODE[,CODE] for every purpose or PURPOSE=CODE[,CODE] with PURPOSE one "
                    f"of {', '.join(Purpose)}"
                ) from None
        else:
            purposes = tuple(Purpose)
        named = [code.strip() for code in codes.split(",") if code.strip()]
        if not named:
            raise ConfigurationError(f"--allow-jurisdiction {spec!r} names no jurisdiction")
        for purpose in purposes:
            lists.setdefault(purpose, set()).update(named)
    allowed = {purpose: frozenset(codes) for purpose, codes in lists.items()}
    return JurisdictionPolicy(
        own=own,
        origin=origin,
        fetch=allowed.get(Purpose.FETCH),
        redirect=allowed.get(Purpose.REDIRECT),
        route=allowed.get(Purpose.ROUTE),
    )


_DONE = {Purpose.FETCH: "fetched", Purpose.REDIRECT: "redirected to", Purpose.ROUTE: "routed to"}


@dataclass(frozen=True)
class ReplicationPolicy:
    """A region's replication choice; a partial mirror is a full or metadata-only one with
    an allow-list (``include``) or a deny-list (``exclude``) of package name patterns."""

    mode: ReplicationMode = ReplicationMode.FULL
    include: tuple[str, ...] = ("drupal/*",)
    exclude: tuple[str, ...] = ()
    #: Bytes of zips the region keeps at most; cold ones are evicted beyond it. None: no quota.
    quota_bytes: int | None = None
    #: The jurisdictions the region may use (a sovereign region's), and its own.
    jurisdictions: JurisdictionPolicy = JurisdictionPolicy()

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
