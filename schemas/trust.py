"""The trust root (TUF-style): who may sign what, the pinned root and root rotation.

Pure: every function works on bytes and already-trusted state; no IO, no clock. The rules
are specified in docs/signing.md, section "Trust root"; verifying package events under a
root is ``schemas.event_verification``'s.

A structurally invalid root (bad threshold, unknown keyid, a namespace
delegated twice, a keyid that is not the sha256 of its key) raises
``MalformedEventError``, whether it is built in code or decoded; a rotation
that is refused for any reason, a malformed new root included, raises
``RootRotationError``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from schemas.codec import decode, encode, schema_family
from schemas.errors import (
    MalformedEventError,
    RootRotationError,
    SignatureError,
    ThresholdError,
)
from schemas.names import VENDOR_PATTERN
from schemas.signing import PublicKey, Signature, SignedEvent, SigningKey, seal

#: A delegated namespace: a Composer vendor name followed by ``/*``.
NAMESPACE = re.compile(rf"{VENDOR_PATTERN}/\*")
_KEYID = re.compile(r"[0-9a-f]{64}")
_KEYTYPE = "ed25519"
_SCHEMA = "trust_root"


def short_ids(keyids: Iterable[str]) -> str:
    """Key ids as people read them in messages: the first 16 hex digits, comma separated."""
    shown = [keyid[:16] for keyid in keyids]
    return ", ".join(shown) if shown else "none"


def delegation_problem(root: TrustRoot, package: str, keyids: Iterable[str]) -> str | None:
    """Why every node would refuse events of ``package`` signed by the keys ``keyids`` under
    ``root`` (the namespace delegated to nobody, or to other keys, or to too few of them);
    None when they would pass the delegation check. For publishers' tools, before they sign."""
    namespace = namespace_of(package)
    delegation = root.delegation_for(package)
    signing = sorted(set(keyids))
    if delegation is None:
        return (
            f"trust root v{root.version} delegates {namespace} to no publisher: every node "
            f"would refuse events of {package} (undelegated-key)"
        )
    delegated = set(delegation.keyids) & set(signing)
    if len(delegated) >= delegation.threshold:
        return None
    return (
        f"trust root v{root.version} delegates {namespace} to {delegation.publisher} (keys "
        f"{short_ids(delegation.keyids)}, {delegation.threshold} needed); the keys given "
        f"({short_ids(signing)}) include {len(delegated)} of them: every node would refuse "
        f"these events ({'undelegated-key' if not delegated else 'threshold-not-met'})"
    )


def namespace_of(package: str) -> str:
    """The namespace a package falls in: ``drupal/token`` -> ``drupal/*``."""
    vendor, _, _ = package.partition("/")
    return f"{vendor}/*"


@dataclass(frozen=True)
class Delegation:
    """The publisher keys that may sign events of one namespace, and how many must.

    Raises ``MalformedEventError`` if the namespace is not ``vendor/*``, the
    publisher is empty, a keyid is not 64 lower-case hex digits or the
    threshold is not between 1 and the number of distinct keyids.
    """

    namespace: str
    publisher: str
    keyids: tuple[str, ...]
    threshold: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyids", tuple(self.keyids))
        problems = []
        if not NAMESPACE.fullmatch(self.namespace):
            problems.append(f"namespace {self.namespace!r} is not a vendor followed by /*")
        if not self.publisher.strip():
            problems.append("publisher is empty")
        malformed = [keyid for keyid in self.keyids if not _KEYID.fullmatch(keyid)]
        if malformed:
            problems.append(f"keyids {malformed!r} are not 64 lower-case hex digits")
        distinct = len(set(self.keyids))
        if not 1 <= self.threshold <= distinct:
            problems.append(
                f"threshold {self.threshold} is not between 1 and its {distinct} distinct keys"
            )
        if problems:
            raise MalformedEventError(
                f"delegation of {self.namespace!r} to {self.publisher!r} is invalid: "
                + "; ".join(problems)
                + "; fix the trust root before it is signed"
            )

    def covers(self, package: str) -> bool:
        """Whether ``package`` (``vendor/name``) is in this delegation's namespace."""
        return "/" in package and namespace_of(package) == self.namespace


@dataclass(frozen=True)
class TrustRoot:
    """Version ``version`` of the trust root: keys, root keys and threshold, delegations, expiry.

    ``keys`` holds every key the root knows (root and publisher keys), by keyid.
    Construction raises ``MalformedEventError`` listing every structural
    problem: version below 1, ``expires`` without a time zone or finer than a
    millisecond, a keyid that is not the sha256 of its 32-byte key, a root or
    delegated keyid missing from ``keys``, a threshold outside 1 and the
    number of distinct keyids, a namespace delegated twice.
    """

    version: int
    expires: datetime
    keys: Mapping[str, PublicKey] = field(hash=False)
    root_keyids: tuple[str, ...]
    root_threshold: int
    delegations: tuple[Delegation, ...]

    def __post_init__(self) -> None:
        # Read-only copies: a root in force must not change behind the verifier's back.
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "root_keyids", tuple(self.root_keyids))
        object.__setattr__(self, "delegations", tuple(self.delegations))
        problems = []
        if self.version < 1:
            problems.append(f"version {self.version} is below 1")
        if self.expires.tzinfo is None:
            problems.append("expires has no time zone (use UTC)")
        elif self.expires.microsecond % 1000:
            problems.append("expires is finer than the millisecond a root carries")
        for keyid, key in self.keys.items():
            if len(key.raw) != 32:
                problems.append(f"key {keyid[:16]} is {len(key.raw)} bytes, not 32")
            elif key.keyid != keyid:
                problems.append(f"key listed as {keyid[:16]} has keyid {key.keyid[:16]}")
        unknown = [keyid for keyid in self.root_keyids if keyid not in self.keys]
        if unknown:
            problems.append(f"root keyids {short_ids(unknown)} are not in keys")
        distinct = len(set(self.root_keyids))
        if not 1 <= self.root_threshold <= distinct:
            problems.append(
                f"root_threshold {self.root_threshold} is not between 1 and "
                f"its {distinct} distinct root keys"
            )
        seen: dict[str, str] = {}
        for delegation in self.delegations:
            if delegation.namespace in seen:
                problems.append(
                    f"namespace {delegation.namespace} is delegated twice (to "
                    f"{seen[delegation.namespace]!r} and {delegation.publisher!r}); a namespace "
                    "belongs to exactly one publisher"
                )
            seen[delegation.namespace] = delegation.publisher
            unknown = [keyid for keyid in delegation.keyids if keyid not in self.keys]
            if unknown:
                problems.append(
                    f"keyids {short_ids(unknown)} delegated {delegation.namespace} are not in keys"
                )
        if problems:
            raise MalformedEventError(
                f"trust root v{self.version} is invalid: "
                + "; ".join(problems)
                + "; fix it before it is signed and published"
            )

    def delegation_for(self, package: str) -> Delegation | None:
        """The delegation whose namespace holds ``package``; None if nobody's does."""
        for delegation in self.delegations:
            if delegation.covers(package):
                return delegation
        return None

    def to_bytes(self) -> bytes:
        """The root as one Avro single object (``trust_root`` schema): what root keys sign."""
        return encode(
            schema_family(_SCHEMA).latest,
            {
                "version": self.version,
                "expires": self.expires,
                "keys": [
                    {"keyid": keyid, "keytype": _KEYTYPE, "public": self.keys[keyid].raw}
                    for keyid in sorted(self.keys)
                ],
                "root_keyids": list(self.root_keyids),
                "root_threshold": self.root_threshold,
                "delegations": [
                    {
                        "namespace": d.namespace,
                        "publisher": d.publisher,
                        "keyids": list(d.keyids),
                        "threshold": d.threshold,
                    }
                    for d in self.delegations
                ],
            },
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> TrustRoot:
        """Decode a root (any known schema version); raises ``MalformedEventError``.

        ``UnknownSchemaError`` (a ``MalformedEventError``) when the bytes are
        another record or a root version this reader does not know. This does
        not check any signature: use ``load_pinned_root`` or ``verify_root_update``.
        """
        _, record = decode(payload, schema_family(_SCHEMA))
        keys: dict[str, PublicKey] = {}
        problems = []
        for entry in record["keys"]:
            keyid = entry["keyid"]
            if entry["keytype"] != _KEYTYPE:
                problems.append(f"key {keyid[:16]} has keytype {entry['keytype']!r}, not ed25519")
            if keyid in keys:
                problems.append(f"key {keyid[:16]} is listed twice")
            keys[keyid] = PublicKey(raw=entry["public"])
        if problems:
            raise MalformedEventError(
                f"trust root v{record['version']} is invalid: " + "; ".join(problems)
            )
        return cls(
            version=record["version"],
            expires=record["expires"],
            keys=keys,
            root_keyids=tuple(record["root_keyids"]),
            root_threshold=record["root_threshold"],
            delegations=tuple(
                Delegation(
                    namespace=d["namespace"],
                    publisher=d["publisher"],
                    keyids=tuple(d["keyids"]),
                    threshold=d["threshold"],
                )
                for d in record["delegations"]
            ),
        )

    def sign(self, root_signing_keys: Iterable[SigningKey]) -> bytes:
        """The root in a SignedEvent envelope signed by every key given.

        It does not check that the keys are this root's root keys: the
        verifiers (``load_pinned_root``, ``verify_root_update``) do.
        Raises ``ValueError`` when no key is given.
        """
        return seal(self.to_bytes(), root_signing_keys)


def valid_signers(
    payload: bytes,
    signatures: Iterable[Signature],
    keys: Mapping[str, PublicKey],
    eligible: Collection[str],
) -> frozenset[str]:
    """The distinct eligible keyids with a signature over ``payload`` that verifies.

    Keyids are the sha256 of their key (``TrustRoot`` checks it), so distinct
    keyids are distinct keys: one key signing twice, or listed twice, counts once.
    """
    valid: set[str] = set()
    for signature in signatures:
        if signature.keyid in valid or signature.keyid not in eligible:
            continue
        key = keys.get(signature.keyid)
        if key is not None and key.verifies(payload, signature.sig):
            valid.add(signature.keyid)
    return frozenset(valid)


def _open_root(signed: bytes) -> tuple[SignedEvent, TrustRoot]:
    envelope = SignedEvent.from_bytes(signed)
    return envelope, TrustRoot.from_bytes(envelope.payload)


def load_pinned_root(signed: bytes) -> TrustRoot:
    """The root a node starts from: a signed root the operator pins, checked against itself.

    It must be signed by ``root_threshold`` distinct keys of its own
    ``root_keyids``. Expiry is not checked: an expired pinned root can still
    be rotated forward. Raises ``MalformedEventError`` if the bytes are not a
    valid signed root, ``ThresholdError`` if some but too few root keys
    signed, ``SignatureError`` if none did.
    """
    envelope, root = _open_root(signed)
    signers = valid_signers(envelope.payload, envelope.signatures, root.keys, root.root_keyids)
    if len(signers) < root.root_threshold:
        error = ThresholdError if signers else SignatureError
        raise error(
            f"pinned trust root v{root.version} is signed by {len(signers)} of the "
            f"{root.root_threshold} required keys of its own root keys "
            f"({short_ids(root.root_keyids)}; valid signatures by {short_ids(sorted(signers))}; "
            f"signed by key ids {short_ids(s.keyid for s in envelope.signatures)}); pin the root "
            "file as the root key holders published it"
        )
    return root


def verify_root_update(current: TrustRoot, signed_new: bytes) -> TrustRoot:
    """Root ``current.version + 1``, if a threshold of current and of new root keys signed it.

    Both thresholds count distinct keys; a key in both roots counts for both.
    Revoking a key is a rotation that drops it. Neither root's expiry is
    checked: an expired root can still be rotated forward. Raises
    ``RootRotationError`` saying which condition failed: malformed new root,
    wrong version, too few current root keys, too few new root keys.
    """
    try:
        envelope, new = _open_root(signed_new)
    except MalformedEventError as exc:
        raise RootRotationError(
            f"the root offered to follow trust root v{current.version} is malformed ({exc}); "
            f"the node keeps v{current.version}: publish a valid signed root v{current.version + 1}"
        ) from exc
    if new.version <= current.version:
        raise RootRotationError(
            f"root v{new.version} is not newer than root v{current.version} in force (an old "
            f"root replayed, or a rollback of the trust root); the next rotation is "
            f"v{current.version + 1}"
        )
    if new.version != current.version + 1:
        raise RootRotationError(
            f"root v{new.version} skips v{current.version + 1}: the node holds v{current.version} "
            f"and applies rotations one version at a time; publish the missing roots on fair.trust "
            "in order"
        )
    old_signers = valid_signers(
        envelope.payload, envelope.signatures, current.keys, current.root_keyids
    )
    new_signers = valid_signers(envelope.payload, envelope.signatures, new.keys, new.root_keyids)
    old_met = len(old_signers) >= current.root_threshold
    new_met = len(new_signers) >= new.root_threshold
    failures = []
    if not old_met:
        hint = " (rotation signed only by the new keys)" if new_signers and not old_signers else ""
        failures.append(
            f"root v{new.version} is signed by {len(old_signers)} of the "
            f"{current.root_threshold} required keys of root v{current.version}{hint}"
        )
    if not new_met:
        hint = " (rotation signed only by the old keys)" if old_signers and not new_signers else ""
        failures.append(
            f"root v{new.version} is signed by {len(new_signers)} of the "
            f"{new.root_threshold} required keys of its own root keys{hint}"
        )
    if failures:
        raise RootRotationError(
            "; ".join(failures)
            + f" (signed by key ids {short_ids(s.keyid for s in envelope.signatures)}); a "
            f"rotation needs {current.root_threshold} of root v{current.version}'s keys "
            f"({short_ids(current.root_keyids)}) and {new.root_threshold} of root "
            f"v{new.version}'s ({short_ids(new.root_keyids)}): collect the missing signatures "
            "and publish it again"
        )
    return new


def follow_rotations(current: TrustRoot, signed_roots: Iterable[bytes]) -> TrustRoot:
    """Apply signed roots in order: skip versions up to ``current``'s, verify each next one.

    Returns the newest root reached. Raises ``RootRotationError`` on the first
    root that is malformed, leaves a gap, or fails ``verify_root_update``.
    """
    for signed in signed_roots:
        try:
            _, offered = _open_root(signed)
        except MalformedEventError:
            offered = None
        # Already known: the node holds this version or a newer one, and never re-trusts it.
        if offered is not None and offered.version <= current.version:
            continue
        current = verify_root_update(current, signed)
    return current
