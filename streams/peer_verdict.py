"""What one verified record of a peer network may do here (``decide``, pure): be applied as
canonical for a namespace we accept from that peer, only lend its artifact URL as one more
download source (whatever a source delivers is checked against our own signed sha256), or be
refused and recorded on our rejected topic, with one of the ``PEER_*`` reasons. No peer ever
speaks for ``drupal/*`` or for any namespace our own root delegates.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import StrEnum

from schemas.trust import TrustRoot, namespace_of
from streams.peer_config import PROTECTED_NAMESPACES, PeerPolicy, PeerSettings

#: Reasons recorded on the rejected topic for a peer's record.
PEER_REFUSED = "peer-refused"
PEER_NAMESPACE_FORBIDDEN = "peer-namespace-forbidden"
PEER_NAMESPACE_NOT_ACCEPTED = "peer-namespace-not-accepted"


class PeerUse(StrEnum):
    """What one verified record of a peer may do here."""

    CANONICAL = "canonical"
    SOURCE = "source"
    REFUSED = "refused"


@dataclass(frozen=True)
class PeerDecision:
    """The use of a peer's record; a refusal carries a stable ``reason`` and a ``detail``."""

    use: PeerUse
    reason: str = ""
    detail: str = ""


def decide(
    peer: PeerSettings, our_root: TrustRoot, peer_root: TrustRoot | None, package: str
) -> PeerDecision:
    """What a record of ``package`` from ``peer`` may do here, under our root in force.

    Pure. In order: a refused peer is refused (``peer-refused``); a package our
    root delegates, or in a protected namespace (``drupal/*``), is refused
    (``peer-namespace-forbidden``) whatever the policy, so a peer never speaks
    for it, even when its own root delegates it; a source peer's record is a
    source; a canonical peer's record is canonical when the package matches a
    namespace accepted from the peer and the peer's root delegates it, else
    refused (``peer-namespace-not-accepted``).
    """
    if peer.policy is PeerPolicy.REFUSE:
        return PeerDecision(
            PeerUse.REFUSED,
            PEER_REFUSED,
            f"peer {peer.name} is refused by this node (--peer {peer.name}:policy=refuse); "
            "its records are recorded, never used",
        )
    ours = our_root.delegation_for(package)
    namespace = namespace_of(package)
    if ours is not None or any(fnmatch.fnmatchcase(package, p) for p in PROTECTED_NAMESPACES):
        if ours is not None:
            owner = f"our trust root v{our_root.version} delegates it to {ours.publisher}"
        else:
            owner = f"{namespace} is only ever published by its own publishers"
        return PeerDecision(
            PeerUse.REFUSED,
            PEER_NAMESPACE_FORBIDDEN,
            f"{package}: peer {peer.name} published in {namespace}, which no peer can speak "
            f"for ({owner}); the record is refused, our own publishers' events are unaffected",
        )
    if peer.policy is PeerPolicy.SOURCE:
        return PeerDecision(PeerUse.SOURCE)
    accepted = any(fnmatch.fnmatchcase(package, p) for p in peer.namespaces)
    delegated = peer_root is not None and peer_root.delegation_for(package) is not None
    if accepted and delegated:
        return PeerDecision(PeerUse.CANONICAL)
    why = (
        f"this node accepts only {', '.join(peer.namespaces)} from it"
        if not accepted
        else "the peer's own trust root does not delegate it"
    )
    return PeerDecision(
        PeerUse.REFUSED,
        PEER_NAMESPACE_NOT_ACCEPTED,
        f"{package}: not accepted as canonical from peer {peer.name} ({why}); add "
        f"namespace={namespace} to its --peer option if the peer owns it",
    )
