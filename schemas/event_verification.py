"""The verification of package events under a trust root, and what a reader does about a refusal.

Pure: every function works on bytes and already-trusted state; no IO, no clock
(``now`` is always a parameter). The rules are specified in docs/signing.md,
section "How an event is accepted"; the order of the checks in ``verify_event`` is part
of it. The root itself, its loading and its rotations are ``schemas.trust``'s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from schemas.errors import (
    ArtifactTooLargeError,
    RejectedError,
    RootExpiredError,
    SignatureError,
    ThresholdError,
    UndelegatedKeyError,
)
from schemas.events import PackageEvent, ReleasePublished, check_consistency, decode_package_event
from schemas.signing import SignedEvent
from schemas.trust import Delegation, TrustRoot, namespace_of, short_ids, valid_signers


def verify_event(
    data: bytes,
    root: TrustRoot,
    *,
    now: datetime,
    max_artifact_size: int | None = None,
) -> PackageEvent:
    """The package event in ``data``; see ``verify_event_signers``, whose checks it makes."""
    return verify_event_signers(data, root, now=now, max_artifact_size=max_artifact_size)[0]


@dataclass(frozen=True)
class VerifiedEvent:
    """What verifying a signed record yields: the event, the delegated key ids whose
    signatures verified (sorted), and the sha256 of the signed payload (its identity for
    replay detection), from one decode of the envelope."""

    event: PackageEvent
    signed_by: tuple[str, ...]
    payload_sha256: str


@dataclass(frozen=True)
class WaitForRoot:
    """The root in force expired: apply nothing, and wait for a newer root (fail closed; the
    record is not refused, it may be fine under the next root)."""

    detail: str


@dataclass(frozen=True)
class RefreshTrust:
    """A rotation not read yet may delegate the signing key: read the trust topic, then
    verify the record again."""


@dataclass(frozen=True)
class Reject:
    """The record can never be applied: record it with ``reason`` and go on."""

    reason: str
    detail: str


OnRejection = WaitForRoot | RefreshTrust | Reject


def on_rejection(error: Exception, *, refreshed: bool) -> OnRejection:
    """What a reader of the log does about a record ``verify_signed`` refused with ``error``.

    ``refreshed``: the trust root was read again since the record was first refused (or
    cannot be: a peer network's root comes with that network). Verification is pure, so an
    error that is not a ``RejectedError`` would come again on a retry: the record is refused
    as ``internal-error`` (a bug to report), never retried forever.
    """
    if isinstance(error, RootExpiredError):
        return WaitForRoot(str(error))
    if isinstance(error, UndelegatedKeyError | ThresholdError) and not refreshed:
        return RefreshTrust()
    if isinstance(error, RejectedError):
        return Reject(error.reason, str(error))
    return Reject("internal-error", f"{type(error).__name__}: {error}; report this bug")


def verify_event_signers(
    data: bytes,
    root: TrustRoot,
    *,
    now: datetime,
    max_artifact_size: int | None = None,
) -> tuple[PackageEvent, tuple[str, ...]]:
    """The package event in ``data`` and the key ids that signed it; see ``verify_signed``."""
    verified = verify_signed(data, root, now=now, max_artifact_size=max_artifact_size)
    return verified.event, verified.signed_by


# Long because it is the order of checks the docstring lists, each refusal's message beside its check.
def verify_signed(
    data: bytes,
    root: TrustRoot,
    *,
    now: datetime,
    max_artifact_size: int | None = None,
) -> VerifiedEvent:
    """The package event in ``data`` (a SignedEvent), if ``root`` lets it be applied at ``now``,
    with the key ids of the delegated keys whose signatures verified (sorted) and the sha256
    of its payload.

    Checks, in this order, each raising its own ``RejectedError``:
    root expired (``RootExpiredError``); envelope and payload decode
    (``MalformedEventError``, ``UnknownSchemaError``, ``UnsafeNameError``);
    namespace delegated (``UndelegatedKeyError``); signatures: none
    (``SignatureError``), a threshold of distinct delegated keys verifies (ok),
    none of them but another key's does (``UndelegatedKeyError``), some but too
    few (``ThresholdError``), else ``SignatureError``; consistency of the event
    (``WrongPackageError``, ``MalformedEventError``, ``InvalidVersionError``);
    artifact size of a release over ``max_artifact_size`` (``ArtifactTooLargeError``).
    Rollback and replay are the caller's: they need per-package state.
    Raises ``ValueError`` if ``now`` has no time zone.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if root.expires <= now:
        # Fail closed: an attacker who can hold back new roots must not freeze a node forever.
        raise RootExpiredError(
            f"trust root v{root.version} expired at {root.expires.isoformat()} (now "
            f"{now.isoformat()}): the node accepts no event and waits for root "
            f"v{root.version + 1} on fair.trust; the root key holders "
            f"({short_ids(root.root_keyids)}) must sign and publish it"
        )
    envelope = SignedEvent.from_bytes(data)
    event = decode_package_event(envelope.payload)
    delegation = root.delegation_for(event.package)
    if delegation is None:
        signed_by = short_ids(s.keyid for s in envelope.signatures)
        delegated = ", ".join(d.namespace for d in root.delegations) or "none"
        raise UndelegatedKeyError(
            f"{event.package}: namespace {namespace_of(event.package)} is delegated to no "
            f"publisher by trust root v{root.version} (delegated: {delegated}; signed by key ids "
            f"{signed_by}); the event is refused: ask the root key holders to delegate the "
            "namespace if it is legitimate"
        )
    signers = _check_signatures(envelope, event.package, delegation, root)
    check_consistency(event)
    if (
        max_artifact_size is not None
        and isinstance(event, ReleasePublished)
        and event.artifact.size > max_artifact_size
    ):
        signed_by = short_ids(s.keyid for s in envelope.signatures)
        raise ArtifactTooLargeError(
            f"{event.package} {event.version}: the artifact is {event.artifact.size} bytes, over "
            f"this node's limit of {max_artifact_size} bytes (signed by key ids {signed_by}); it "
            "is refused without download: raise the node's max artifact size if the release "
            "is genuine"
        )
    return VerifiedEvent(
        event, tuple(sorted(signers)), hashlib.sha256(envelope.payload).hexdigest()
    )


# Long because each outcome of the count is refused with its own message where it is decided.
def _check_signatures(
    envelope: SignedEvent, package: str, delegation: Delegation, root: TrustRoot
) -> frozenset[str]:
    """The delegated key ids whose signatures verify, if they meet the threshold; raises
    otherwise."""
    namespace, publisher = delegation.namespace, delegation.publisher

    def needed() -> str:  # built only for a refusal, not for every event that verifies
        return (
            f"{namespace} needs {delegation.threshold} of {publisher}'s keys "
            f"({short_ids(delegation.keyids)})"
        )

    if not envelope.signatures:
        raise SignatureError(
            f"{package}: the event is unsigned; {needed()}: the publisher must sign it "
            "(`fairstream publish`)"
        )
    if len(envelope.signatures) > len(root.keys):
        # Each signature costs a verification: an envelope cannot need more
        # signatures than there are keys, so more is an attempt to waste CPU.
        raise SignatureError(
            f"{package}: the event carries {len(envelope.signatures)} signatures, more than the "
            f"{len(root.keys)} keys trust root v{root.version} knows; refused unverified"
        )
    payload = envelope.payload
    valid = valid_signers(payload, envelope.signatures, root.keys, delegation.keyids)
    if len(valid) >= delegation.threshold:
        return frozenset(valid)
    signed_by = short_ids(s.keyid for s in envelope.signatures)
    if valid:
        raise ThresholdError(
            f"{package}: signed by {len(valid)} of {delegation.threshold} required keys "
            f"(valid: {short_ids(sorted(valid))}; signed by key ids {signed_by}; a key signing "
            f"twice counts once); {needed()}: have another of the publisher's keys sign it"
        )
    # No delegated key signed. A key the root does not know, or a key it delegates
    # elsewhere with a genuine signature, is someone signing in a namespace they do
    # not own; a delegated keyid whose signature fails is tampering or forgery.
    delegated = set(delegation.keyids)
    outsiders = sorted(
        {
            s.keyid
            for s in envelope.signatures
            if s.keyid not in delegated
            and (s.keyid not in root.keys or root.keys[s.keyid].verifies(payload, s.sig))
        }
    )
    if outsiders:
        owners = sorted(
            {d.namespace for d in root.delegations if not set(d.keyids).isdisjoint(outsiders)}
        )
        elsewhere = f", delegated for {', '.join(owners)}" if owners else ""
        raise UndelegatedKeyError(
            f"{package}: signed only by key ids {short_ids(outsiders)}{elsewhere}, which trust "
            f"root v{root.version} does not delegate for {namespace} (namespace squatting or "
            f"dependency confusion); {needed()}: the event is refused, tell {publisher} if it is "
            "theirs"
        )
    raise SignatureError(
        f"{package}: no signature verifies (signed by key ids {signed_by}); {needed()}: the event "
        "was altered after signing or the signature forged; get it again from the publisher"
    )
