"""Ed25519 signatures over events: keys, key ids, the signing message, the signed envelope.

The byte format is specified in docs/signing.md so that anyone can verify an
event with any Ed25519 library and the ``.avsc`` files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property

import nacl.exceptions
import nacl.signing
import orjson

from schemas.codec import Decoder, encode, load_schema
from schemas.errors import (
    ConfigurationError,
    MalformedEventError,
    OversizedEventError,
    SignatureError,
)

#: Prefix of every signing message: a signature made for fairstream events can
#: never be replayed as a signature over anything else, and the reverse.
SIGNING_DOMAIN = b"fairstream/signed-event/v1\x00"

#: The largest signed event (envelope included) the contract allows: ``seal`` refuses to
#: make a larger one and every reader refuses a larger record before decoding it. Real
#: events are a few KiB (drupal/core's releases, the largest in the catalogue, about 4 KiB);
#: the topics' ``max.message.bytes`` (infra/production/kafka/init.sh) leaves room above it
#: for Kafka's batch overhead, and docs/threat-model.md says what happens to anything larger.
MAX_EVENT_BYTES = 256 * 1024


def key_id(public_key: bytes) -> str:
    """The id of an Ed25519 public key: lower-case hex sha256 of its 32 raw bytes."""
    return hashlib.sha256(public_key).hexdigest()


def signing_message(payload: bytes) -> bytes:
    """The exact bytes that are signed: the domain, then the whole single-object payload.

    The payload starts with ``C3 01`` and the writer schema's fingerprint, so the
    signature covers the schema as well as every byte of the event.
    """
    return SIGNING_DOMAIN + payload


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key of a publisher."""

    seed: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(seed=bytes(nacl.signing.SigningKey.generate()))

    @cached_property
    def _nacl(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @cached_property
    def public_key(self) -> PublicKey:
        return PublicKey(raw=bytes(self._nacl.verify_key))

    def sign(self, payload: bytes) -> Signature:
        signed = self._nacl.sign(signing_message(payload))
        return Signature(keyid=self.public_key.keyid, sig=signed.signature)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"keytype": "ed25519", "keyid": self.public_key.keyid, "seed": self.seed.hex()},
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "key file") -> SigningKey:
        """Parse a private key file; raises ``ConfigurationError`` saying what is wrong."""
        document = _parse_key_document(data, source, "seed")
        return cls(seed=document)


@dataclass(frozen=True)
class PublicKey:
    """A public Ed25519 key that verifies signatures."""

    raw: bytes

    @cached_property
    def keyid(self) -> str:
        return key_id(self.raw)

    @cached_property
    def _verify_key(self) -> nacl.signing.VerifyKey:
        return nacl.signing.VerifyKey(self.raw)

    def verifies(self, payload: bytes, sig: bytes) -> bool:
        try:
            self._verify_key.verify(signing_message(payload), sig)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"keytype": "ed25519", "keyid": self.keyid, "public": self.raw.hex()},
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "public key file") -> PublicKey:
        """Parse a public key file; raises ``ConfigurationError`` saying what is wrong."""
        return cls(raw=_parse_key_document(data, source, "public"))


def _parse_key_document(data: bytes, source: str, field: str) -> bytes:
    try:
        document = orjson.loads(data)
        if document.get("keytype") != "ed25519":
            raise ValueError(f"keytype is {document.get('keytype')!r}, expected 'ed25519'")
        raw = bytes.fromhex(document[field])
        if len(raw) != 32:
            raise ValueError(f"{field} is {len(raw)} bytes, expected 32")
    except (orjson.JSONDecodeError, AttributeError, KeyError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{source} is not a fairstream Ed25519 key with a {field!r} field ({exc}); "
            "create one with `fairstream keys generate`"
        ) from exc
    return raw


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@cache
def _envelope_decoder() -> Decoder:
    return Decoder(load_schema("signed_event"))


@dataclass(frozen=True)
class SignedEvent:
    """An event's single-object bytes and the signatures over them."""

    payload: bytes
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        return encode(
            load_schema("signed_event"),
            {
                "payload": self.payload,
                "signatures": [{"keyid": s.keyid, "sig": s.sig} for s in self.signatures],
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedEvent:
        """Decode an envelope; raises ``OversizedEventError`` (larger than ``MAX_EVENT_BYTES``,
        not decoded at all), ``MalformedEventError`` or ``UnknownSchemaError``."""
        check_event_size(len(data))
        _, record = _envelope_decoder().decode(data)
        return cls(
            payload=record["payload"],
            signatures=tuple(Signature(s["keyid"], s["sig"]) for s in record["signatures"]),
        )


def check_event_size(size: int) -> None:
    """Raise ``OversizedEventError`` for a record of ``size`` bytes above ``MAX_EVENT_BYTES``."""
    if size > MAX_EVENT_BYTES:
        raise OversizedEventError(
            f"the record is {size:,} bytes, above the largest signed event the contract allows "
            f"({MAX_EVENT_BYTES:,} bytes): not decoded; a publisher's tools refuse to make one, "
            "so it was produced by something else"
        )


def seal(payload: bytes, keys: Iterable[SigningKey]) -> bytes:
    """Sign ``payload`` with every key and return the encoded envelope.

    Raises ``OversizedEventError`` when the envelope would exceed ``MAX_EVENT_BYTES``:
    every node would refuse it."""
    signatures = tuple(key.sign(payload) for key in keys)
    if not signatures:
        raise ValueError("seal needs at least one signing key")
    envelope = SignedEvent(payload=payload, signatures=signatures).to_bytes()
    check_event_size(len(envelope))
    return envelope


def open_sealed(data: bytes, trusted: Mapping[str, PublicKey], *, threshold: int = 1) -> bytes:
    """Return the payload of an envelope signed by at least ``threshold`` distinct trusted keys.

    Raises ``MalformedEventError`` if ``data`` is not an envelope and
    ``SignatureError`` naming the key ids when too few trusted keys signed.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    event = SignedEvent.from_bytes(data)
    if not event.payload:
        raise MalformedEventError("signed event has an empty payload")
    # Count distinct public keys, not ids: a trust map listing one key under two
    # ids must not let that key meet a threshold of two.
    valid = {
        trusted[s.keyid].raw
        for s in event.signatures
        if s.keyid in trusted
        and trusted[s.keyid].keyid == s.keyid
        and trusted[s.keyid].verifies(event.payload, s.sig)
    }
    if len(valid) < threshold:
        claimed = ", ".join(s.keyid[:16] for s in event.signatures) or "none"
        trusted_ids = ", ".join(k[:16] for k in trusted) or "none"
        raise SignatureError(
            f"{len(valid)} valid signature(s) from trusted keys, {threshold} required "
            f"(signed by key ids {claimed}; trusted: {trusted_ids}); the event was altered "
            "or signed by a key this node does not trust"
        )
    return event.payload
