"""Attacks on the signed stream, python-tuf simulator style: one tampered event per attack.

Each test feeds ``verify_event`` an attack and asserts the exact rejected-error
type, and feeds it the same event without the attack and asserts it passes: a
test fails if its defence is removed, not only if it breaks.
Rollback and replay need per-package state and are tested where the node keeps it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.errors import (
    ArtifactTooLargeError,
    MalformedEventError,
    RejectedError,
    RootExpiredError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    UndelegatedKeyError,
    UnknownSchemaError,
    UnsafeNameError,
    WrongPackageError,
)
from schemas.event_verification import verify_event
from schemas.events import Artifact, PackageEvent, ReleasePublished
from schemas.signing import Signature, SignedEvent, SigningKey
from schemas.trust import Delegation, TrustRoot, verify_root_update


def fixed_key(n: int) -> SigningKey:
    # Fixed seeds: deterministic keys and bytes, so a failure reproduces.
    return SigningKey(seed=bytes([n]) * 32)


NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 1, 1, tzinfo=UTC)
ZIP = b"PK\x03\x04 token 8.x-1.9"


@dataclass
class Repository:
    """An in-memory publisher side: root keys, publisher keys, and the events they sign.

    Root v1: 2 root keys, threshold 2; ``drupal/*`` delegated to drupal.org's 2
    keys, threshold 2; ``acme/*`` delegated to acme's 1 key, threshold 1.
    """

    root_keys: tuple[SigningKey, ...] = (fixed_key(1), fixed_key(2))
    drupal_keys: tuple[SigningKey, ...] = (fixed_key(11), fixed_key(12))
    acme_keys: tuple[SigningKey, ...] = (fixed_key(21),)
    expires: datetime = EXPIRES
    extra_delegations: tuple[Delegation, ...] = field(default=())

    def root(self, version: int = 1) -> TrustRoot:
        every = (*self.root_keys, *self.drupal_keys, *self.acme_keys)
        return TrustRoot(
            version=version,
            expires=self.expires,
            keys={k.public_key.keyid: k.public_key for k in every},
            root_keyids=ids(self.root_keys),
            root_threshold=2,
            delegations=(
                Delegation("drupal/*", "drupal.org", ids(self.drupal_keys), 2),
                Delegation("acme/*", "acme.example", ids(self.acme_keys), 1),
                *self.extra_delegations,
            ),
        )

    def release(self, package: str = "drupal/token", **changes: Any) -> ReleasePublished:
        release = ReleasePublished(
            package=package,
            drupal_version="8.x-1.9",
            version="1.9.0",
            published_at=datetime(2025, 5, 1, 12, 0, tzinfo=UTC),
            artifact=Artifact(
                sha256=hashlib.sha256(ZIP).hexdigest(),
                sha1=hashlib.sha1(ZIP).hexdigest(),
                size=len(ZIP),
                origin_url=f"https://ftp.drupal.org/files/projects/{package.split('/')[1]}.zip",
            ),
            composer={"name": package, "version": "1.9.0"},
            sequence=1,
        )
        return replace(release, **changes)

    def raw_release(self, package: str = "drupal/token", version: str = "1.9.0") -> bytes:
        """A release payload written straight with the schema: no dataclass checks on the way."""
        return codec.encode(
            codec.load_schema("release_published"),
            {
                "package": package,
                "drupal_version": "8.x-1.9",
                "version": version,
                "sequence": 1,
                "published_at": datetime(2025, 5, 1, 12, 0, tzinfo=UTC),
                "artifact": {
                    "sha256": hashlib.sha256(ZIP).hexdigest(),
                    "sha1": hashlib.sha1(ZIP).hexdigest(),
                    "size": len(ZIP),
                    "origin_url": "https://ftp.drupal.org/files/projects/token.zip",
                },
                "composer": orjson.dumps({"name": package, "version": version}).decode(),
            },
        )

    def sign(self, payload: bytes, keys: tuple[SigningKey, ...] | None = None) -> bytes:
        """``payload`` in an envelope signed by ``keys`` (default: drupal.org's)."""
        signers = self.drupal_keys if keys is None else keys
        signatures = tuple(key.sign(payload) for key in signers)
        return SignedEvent(payload=payload, signatures=signatures).to_bytes()


def ids(keys: tuple[SigningKey, ...]) -> tuple[str, ...]:
    return tuple(k.public_key.keyid for k in keys)


REPO = Repository()
ROOT = REPO.root()
GOOD = REPO.sign(REPO.release().to_bytes())


def rejects(expected: type[RejectedError], data: bytes, root: TrustRoot = ROOT, **kw: Any) -> str:
    """Assert ``verify_event`` raises exactly ``expected`` (not a parent or a sibling); its message."""
    kw.setdefault("now", NOW)
    with pytest.raises(RejectedError) as raised:
        verify_event(data, root, **kw)
    assert type(raised.value) is expected, f"{type(raised.value).__name__}: {raised.value}"
    return str(raised.value)


def accepts(data: bytes, root: TrustRoot = ROOT, **kw: Any) -> PackageEvent:
    kw.setdefault("now", NOW)
    return verify_event(data, root, **kw)


def flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_the_untampered_event_is_accepted() -> None:
    assert accepts(GOOD) == REPO.release()


# --- bad and missing signatures ---------------------------------------------------


def test_a_bad_signature_is_refused() -> None:
    envelope = SignedEvent.from_bytes(GOOD)
    forged = tuple(Signature(s.keyid, flip(s.sig, 100)) for s in envelope.signatures)
    tampered = SignedEvent(payload=envelope.payload, signatures=forged).to_bytes()

    message = rejects(SignatureError, tampered)

    assert "no signature verifies" in message
    assert "drupal/token" in message
    assert REPO.drupal_keys[0].public_key.keyid[:16] in message
    accepts(SignedEvent(payload=envelope.payload, signatures=envelope.signatures).to_bytes())


def test_a_signature_over_other_bytes_is_refused() -> None:
    other = REPO.release(sequence=2).to_bytes()
    original = REPO.release().to_bytes()
    swapped = SignedEvent(
        payload=original, signatures=tuple(k.sign(other) for k in REPO.drupal_keys)
    ).to_bytes()

    rejects(SignatureError, swapped)
    accepts(REPO.sign(original))


def test_a_stolen_keyid_with_the_attackers_signature_is_refused() -> None:
    attacker = fixed_key(66)
    payload = REPO.release().to_bytes()
    claims = tuple(Signature(keyid, attacker.sign(payload).sig) for keyid in ids(REPO.drupal_keys))

    rejects(SignatureError, SignedEvent(payload=payload, signatures=claims).to_bytes())
    accepts(REPO.sign(payload))


def test_a_missing_signature_is_refused() -> None:
    payload = REPO.release().to_bytes()
    unsigned = SignedEvent(payload=payload, signatures=()).to_bytes()

    message = rejects(SignatureError, unsigned)

    assert "drupal/token: the event is unsigned" in message
    assert "drupal/* needs 2 of drupal.org's keys" in message
    accepts(REPO.sign(payload))


# --- namespace squatting, dependency confusion ---------------------------------------


def test_a_key_delegated_for_another_namespace_is_refused() -> None:
    payload = REPO.release("drupal/token").to_bytes()

    message = rejects(UndelegatedKeyError, REPO.sign(payload, REPO.acme_keys))

    assert "drupal/token: signed only by key ids" in message
    assert REPO.acme_keys[0].public_key.keyid[:16] in message
    assert "delegated for acme/*" in message
    assert "does not delegate for drupal/*" in message
    # The same key in its own namespace, and the right keys in this one, pass.
    accepts(REPO.sign(REPO.release("acme/token").to_bytes(), REPO.acme_keys))
    accepts(REPO.sign(payload))


def test_a_key_unknown_to_the_root_is_refused() -> None:
    payload = REPO.release().to_bytes()

    rejects(UndelegatedKeyError, REPO.sign(payload, (fixed_key(66), fixed_key(67))))
    accepts(REPO.sign(payload))


def test_root_keys_do_not_sign_package_events() -> None:
    payload = REPO.release().to_bytes()

    rejects(UndelegatedKeyError, REPO.sign(payload, REPO.root_keys))
    accepts(REPO.sign(payload))


def test_a_forged_signature_under_another_namespaces_key_is_a_bad_signature() -> None:
    # Not squatting: acme's key did not sign this; someone wrote its keyid on a forgery.
    payload = REPO.release().to_bytes()
    acme = REPO.acme_keys[0]
    forged = Signature(acme.public_key.keyid, fixed_key(66).sign(payload).sig)

    rejects(SignatureError, SignedEvent(payload=payload, signatures=(forged,)).to_bytes())
    rejects(UndelegatedKeyError, REPO.sign(payload, (acme,)))


def test_a_namespace_nobody_owns_is_refused() -> None:
    payload = REPO.release("evil/token").to_bytes()
    evil = Delegation("evil/*", "evil.example", ids(REPO.drupal_keys), 2)

    message = rejects(UndelegatedKeyError, REPO.sign(payload))

    assert "namespace evil/* is delegated to no publisher" in message
    accepts(REPO.sign(payload), Repository(extra_delegations=(evil,)).root())


# --- thresholds: distinct keys ----------------------------------------------------


def test_one_key_signing_twice_is_one_of_two_required_keys() -> None:
    payload = REPO.release().to_bytes()
    first = REPO.drupal_keys[0]
    twice = SignedEvent(payload=payload, signatures=(first.sign(payload),) * 2).to_bytes()

    message = rejects(ThresholdError, twice)

    assert "signed by 1 of 2 required keys" in message
    assert first.public_key.keyid[:16] in message
    accepts(REPO.sign(payload))


def test_a_key_listed_twice_in_the_delegation_counts_once() -> None:
    first, second = REPO.drupal_keys
    doubled = Delegation(
        "drupal/*", "drupal.org", (first.public_key.keyid, *ids(REPO.drupal_keys)), 2
    )
    root = replace(ROOT, delegations=(doubled, *ROOT.delegations[1:]))
    payload = REPO.release().to_bytes()

    rejects(ThresholdError, REPO.sign(payload, (first, first)), root)
    accepts(REPO.sign(payload, (first, second)), root)


def test_one_delegated_key_and_outsiders_do_not_meet_the_threshold() -> None:
    payload = REPO.release().to_bytes()
    first, second = REPO.drupal_keys
    forged_second = Signature(second.public_key.keyid, flip(second.sign(payload).sig, 7))
    signatures = (first.sign(payload), REPO.acme_keys[0].sign(payload), forged_second)

    rejects(ThresholdError, SignedEvent(payload=payload, signatures=signatures).to_bytes())
    accepts(REPO.sign(payload, (first, REPO.acme_keys[0], second)))


# --- freshness: an expired root fails closed --------------------------------------


@pytest.mark.parametrize(
    "now", [EXPIRES, EXPIRES + timedelta(seconds=1), EXPIRES + timedelta(days=400)]
)
def test_an_expired_root_refuses_every_event(now: datetime) -> None:
    message = rejects(RootExpiredError, GOOD, now=now)

    assert f"trust root v1 expired at {EXPIRES.isoformat()}" in message
    assert "waits for root v2 on fair.trust" in message
    accepts(GOOD, now=EXPIRES - timedelta(seconds=1))


def test_an_expired_root_is_checked_before_anything_is_decoded() -> None:
    rejects(RootExpiredError, b"not an event at all", now=EXPIRES)


def test_the_clock_must_have_a_time_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_event(GOOD, ROOT, now=datetime(2025, 6, 1))


# --- wrong software -----------------------------------------------------------------


def test_metadata_naming_another_package_is_refused() -> None:
    wrong = REPO.release(composer={"name": "drupal/ctools", "version": "1.9.0"})

    message = rejects(WrongPackageError, REPO.sign(wrong.to_bytes()))

    assert "drupal/ctools" in message
    accepts(REPO.sign(REPO.release().to_bytes()))


def test_a_publisher_cannot_ship_metadata_of_another_namespace() -> None:
    # acme signs acme/token, but its Composer metadata claims to be drupal/token.
    confused = REPO.release("acme/token", composer={"name": "drupal/token", "version": "1.9.0"})

    rejects(WrongPackageError, REPO.sign(confused.to_bytes(), REPO.acme_keys))
    accepts(REPO.sign(REPO.release("acme/token").to_bytes(), REPO.acme_keys))


# --- endless data --------------------------------------------------------------------


def test_an_artifact_over_the_policy_limit_is_refused() -> None:
    huge = REPO.release(artifact=replace(REPO.release().artifact, size=50_000_000_000))
    signed = REPO.sign(huge.to_bytes())

    message = rejects(ArtifactTooLargeError, signed, max_artifact_size=100_000_000)

    assert "50000000000 bytes" in message
    assert "limit of 100000000 bytes" in message
    accepts(signed, max_artifact_size=50_000_000_000)
    accepts(signed)


# --- names unsafe as object keys -------------------------------------------------------

UNSAFE = [
    pytest.param("drupal/../token", "1.9.0", id="dot-dot"),
    pytest.param("drupal/%2e%2e", "1.9.0", id="percent-encoded-dot-dot"),
    pytest.param("drupal//token", "1.9.0", id="empty-segment"),
    pytest.param("drupal/tok\x00en", "1.9.0", id="nul"),
    pytest.param("drupal/tok\nen", "1.9.0", id="newline"),
    pytest.param("drupal/t\u043eken", "1.9.0", id="cyrillic-o"),
    pytest.param("drupal/token", "../1.0.0", id="version-dot-dot"),
    pytest.param("drupal/token", "1.0.0/../../x", id="version-slash"),
]


@pytest.mark.parametrize(("package", "version"), UNSAFE)
def test_an_unsafe_name_is_refused_even_when_properly_signed(package: str, version: str) -> None:
    # Signed by the delegated keys: only the name check stands between it and the store.
    rejects(UnsafeNameError, REPO.sign(REPO.raw_release(package, version)))
    accepts(REPO.sign(REPO.raw_release()))


@pytest.mark.parametrize("package", ["drupal/con", "drupal/token.json"])
def test_a_name_composer_refuses_is_refused_even_when_properly_signed(package: str) -> None:
    # The pattern matches; Composer still refuses it, so no node could serve it: refused at
    # the event, as every other check of a name refuses it (schemas/names.py).
    rejects(MalformedEventError, REPO.sign(REPO.raw_release(package)))


# --- confusion between a root and an event ---------------------------------------------


def test_a_signed_root_is_not_a_package_event() -> None:
    signed_root = ROOT.sign(REPO.root_keys)

    rejects(UnknownSchemaError, signed_root)
    rejects(UnknownSchemaError, REPO.sign(ROOT.to_bytes()))


# --- root rotation ------------------------------------------------------------------------


def test_a_root_rotation_signed_only_by_the_new_keys_is_refused() -> None:
    new_keys = (fixed_key(31), fixed_key(32))
    attacker_root = Repository(root_keys=new_keys).root(version=2)

    with pytest.raises(RootRotationError) as raised:
        verify_root_update(ROOT, attacker_root.sign(new_keys))

    assert "root v2 is signed by 0 of the 2 required keys of root v1" in str(raised.value)
    assert "(rotation signed only by the new keys)" in str(raised.value)
    assert type(raised.value) is RootRotationError
    assert verify_root_update(ROOT, attacker_root.sign((*REPO.root_keys, *new_keys))) == (
        attacker_root
    )


def test_a_squatter_rotating_the_root_cannot_take_a_namespace() -> None:
    # The attacker's root delegates drupal/* to their own key; the node keeps root v1.
    attacker = fixed_key(66)
    hijacked = Repository(
        root_keys=(attacker, fixed_key(67)), drupal_keys=(attacker, fixed_key(68))
    )
    squatted = REPO.sign(REPO.release().to_bytes(), hijacked.drupal_keys)

    with pytest.raises(RootRotationError):
        verify_root_update(ROOT, hijacked.root(version=2).sign(hijacked.root_keys))
    rejects(UndelegatedKeyError, squatted)
    accepts(squatted, hijacked.root(version=2))


# --- any bit flip is rejected ----------------------------------------------------------------

SIGNED = REPO.sign(REPO.release().to_bytes())


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=len(SIGNED) * 8 - 1))
def test_any_single_bit_flip_is_rejected(bit: int) -> None:
    with pytest.raises(RejectedError):
        verify_event(flip(SIGNED, bit), ROOT, now=NOW, max_artifact_size=1_000_000)


def test_every_single_bit_flip_is_rejected() -> None:
    # Exhaustive, a few thousand flips: no position in the envelope is left unprotected.
    accepted = []
    for bit in range(len(SIGNED) * 8):
        try:
            verify_event(flip(SIGNED, bit), ROOT, now=NOW)
        except RejectedError:
            continue
        accepted.append(bit)
    assert accepted == []
    assert accepts(SIGNED) == REPO.release()
