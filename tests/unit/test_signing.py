"""Ed25519 envelopes (schemas.signing): seal, open, thresholds, key files, third-party checks."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import nacl.exceptions
import nacl.signing
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import (
    ConfigurationError,
    MalformedEventError,
    RejectedError,
    SignatureError,
)
from schemas.events import Artifact, ReleasePublished
from schemas.signing import (
    PublicKey,
    Signature,
    SignedEvent,
    SigningKey,
    key_id,
    open_sealed,
    seal,
)

# Fixed seeds: deterministic keys, so failures reproduce.
KEY_A = SigningKey(seed=bytes(range(32)))
KEY_B = SigningKey(seed=bytes(range(32, 64)))
KEY_C = SigningKey(seed=bytes(range(64, 96)))


def trust(*keys: SigningKey) -> dict[str, PublicKey]:
    return {key.public_key.keyid: key.public_key for key in keys}


def release_payload() -> bytes:
    return ReleasePublished(
        package="drupal/token",
        drupal_version="8.x-1.9",
        version="1.9.0",
        published_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        artifact=Artifact(
            sha256=hashlib.sha256(b"zip").hexdigest(),
            sha1=hashlib.sha1(b"zip").hexdigest(),
            size=3,
            origin_url="https://ftp.drupal.org/files/projects/token-8.x-1.9.zip",
        ),
        composer={"name": "drupal/token", "version": "1.9.0"},
    ).to_bytes()


PAYLOAD = release_payload()


def test_seal_then_open_returns_the_payload() -> None:
    sealed = seal(PAYLOAD, [KEY_A])

    assert open_sealed(sealed, trust(KEY_A)) == PAYLOAD


@given(st.binary(min_size=1, max_size=512))
def test_any_payload_round_trips(payload: bytes) -> None:
    assert open_sealed(seal(payload, [KEY_A, KEY_B]), trust(KEY_A, KEY_B), threshold=2) == payload


def test_key_id_is_sha256_of_the_raw_public_key() -> None:
    raw = bytes(nacl.signing.SigningKey(KEY_A.seed).verify_key)

    assert KEY_A.public_key.raw == raw
    assert KEY_A.public_key.keyid == hashlib.sha256(raw).hexdigest() == key_id(raw)


def test_generated_keys_differ_and_work() -> None:
    first, second = SigningKey.generate(), SigningKey.generate()

    assert first.seed != second.seed
    assert len(first.seed) == 32
    assert open_sealed(seal(b"x", [first]), trust(first)) == b"x"


# ---------------------------------------------------------------------------
# Tampering
# ---------------------------------------------------------------------------


def flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@given(st.integers(min_value=0, max_value=len(PAYLOAD) * 8 - 1))
def test_a_flipped_payload_bit_is_refused(bit: int) -> None:
    signature = KEY_A.sign(PAYLOAD)
    tampered = SignedEvent(payload=flip(PAYLOAD, bit), signatures=(signature,)).to_bytes()

    with pytest.raises(SignatureError, match="0 valid signature"):
        open_sealed(tampered, trust(KEY_A))


@given(st.integers(min_value=0, max_value=64 * 8 - 1))
def test_a_flipped_signature_bit_is_refused(bit: int) -> None:
    signature = KEY_A.sign(PAYLOAD)
    assert len(signature.sig) == 64
    forged = Signature(keyid=signature.keyid, sig=flip(signature.sig, bit))
    tampered = SignedEvent(payload=PAYLOAD, signatures=(forged,)).to_bytes()

    with pytest.raises(SignatureError, match="0 valid signature"):
        open_sealed(tampered, trust(KEY_A))


@settings(max_examples=300)
@given(st.data())
def test_a_flipped_envelope_bit_is_always_rejected(data: st.DataObject) -> None:
    sealed = seal(PAYLOAD, [KEY_A])
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1), label="bit")

    # Header, lengths, key id, payload or signature: whatever the bit, never a payload.
    with pytest.raises(RejectedError):
        open_sealed(flip(sealed, bit), trust(KEY_A))


def test_a_signature_by_an_untrusted_key_is_refused() -> None:
    sealed = seal(PAYLOAD, [KEY_C])

    with pytest.raises(SignatureError) as raised:
        open_sealed(sealed, trust(KEY_A, KEY_B))

    message = str(raised.value)
    assert "0 valid signature(s) from trusted keys, 1 required" in message
    assert KEY_C.public_key.keyid[:16] in message
    assert KEY_A.public_key.keyid[:16] in message
    assert raised.value.reason == "bad-signature"


def test_an_untrusted_key_claiming_a_trusted_key_id_is_refused() -> None:
    stolen_id = Signature(keyid=KEY_A.public_key.keyid, sig=KEY_C.sign(PAYLOAD).sig)
    sealed = SignedEvent(payload=PAYLOAD, signatures=(stolen_id,)).to_bytes()

    with pytest.raises(SignatureError):
        open_sealed(sealed, trust(KEY_A))


def test_no_signatures_are_refused() -> None:
    sealed = SignedEvent(payload=PAYLOAD, signatures=()).to_bytes()

    with pytest.raises(SignatureError, match="signed by key ids none"):
        open_sealed(sealed, trust(KEY_A))


def test_a_signature_over_another_payload_is_refused() -> None:
    other = KEY_A.sign(b"another event")
    sealed = SignedEvent(payload=PAYLOAD, signatures=(other,)).to_bytes()

    with pytest.raises(SignatureError):
        open_sealed(sealed, trust(KEY_A))


def test_an_empty_payload_is_malformed() -> None:
    sealed = SignedEvent(payload=b"", signatures=(KEY_A.sign(b""),)).to_bytes()

    with pytest.raises(MalformedEventError, match="empty payload"):
        open_sealed(sealed, trust(KEY_A))


def test_bytes_that_are_no_envelope_are_malformed() -> None:
    with pytest.raises(MalformedEventError):
        open_sealed(PAYLOAD, trust(KEY_A))  # a release, not its envelope
    with pytest.raises(MalformedEventError):
        open_sealed(b"hello", trust(KEY_A))


def test_seal_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one signing key"):
        seal(PAYLOAD, [])


# ---------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------


def test_threshold_two_accepts_two_distinct_trusted_keys() -> None:
    sealed = seal(PAYLOAD, [KEY_A, KEY_B])

    assert open_sealed(sealed, trust(KEY_A, KEY_B), threshold=2) == PAYLOAD


def test_threshold_two_counts_the_same_key_once() -> None:
    sealed = seal(PAYLOAD, [KEY_A, KEY_A])

    with pytest.raises(
        SignatureError, match="1 valid signature\\(s\\) from trusted keys, 2 required"
    ):
        open_sealed(sealed, trust(KEY_A, KEY_B), threshold=2)


def test_threshold_two_ignores_untrusted_and_invalid_signatures() -> None:
    bad_b = Signature(keyid=KEY_B.public_key.keyid, sig=flip(KEY_B.sign(PAYLOAD).sig, 3))
    signatures = (KEY_A.sign(PAYLOAD), KEY_C.sign(PAYLOAD), bad_b)
    sealed = SignedEvent(payload=PAYLOAD, signatures=signatures).to_bytes()

    with pytest.raises(SignatureError, match="1 valid signature"):
        open_sealed(sealed, trust(KEY_A, KEY_B), threshold=2)
    # The same envelope passes a threshold of one: the invalid ones are ignored, not fatal.
    assert open_sealed(sealed, trust(KEY_A, KEY_B)) == PAYLOAD


def test_threshold_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        open_sealed(seal(PAYLOAD, [KEY_A]), trust(KEY_A), threshold=0)


# ---------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------


def test_private_key_file_round_trips() -> None:
    document = KEY_A.to_json()

    assert SigningKey.from_json(document) == KEY_A
    parsed = orjson.loads(document)
    assert parsed == {
        "keytype": "ed25519",
        "keyid": KEY_A.public_key.keyid,
        "seed": KEY_A.seed.hex(),
    }


def test_public_key_file_round_trips() -> None:
    public = KEY_B.public_key
    document = public.to_json()

    assert PublicKey.from_json(document) == public
    assert orjson.loads(document) == {
        "keytype": "ed25519",
        "keyid": public.keyid,
        "public": public.raw.hex(),
    }
    assert "seed" not in document.decode()


CORRUPT_KEY_FILES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"[1, 2]", id="a-list"),
    pytest.param(b'"ed25519"', id="a-string"),
    pytest.param(b'{"keytype": "ed25519"}', id="no-key-field"),
    pytest.param(b'{"keytype": "rsa", "seed": "' + b"00" * 32 + b'"}', id="wrong-keytype"),
    pytest.param(b'{"seed": "' + b"00" * 32 + b'"}', id="no-keytype"),
    pytest.param(b'{"keytype": "ed25519", "seed": "' + b"00" * 31 + b'"}', id="31-bytes"),
    pytest.param(b'{"keytype": "ed25519", "seed": "' + b"00" * 33 + b'"}', id="33-bytes"),
    pytest.param(b'{"keytype": "ed25519", "seed": "zz' + b"00" * 31 + b'"}', id="not-hex"),
    pytest.param(b'{"keytype": "ed25519", "seed": 12345}', id="a-number"),
    pytest.param(b'{"keytype": "ed25519", "seed": null}', id="null"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
]


@pytest.mark.parametrize("data", CORRUPT_KEY_FILES)
def test_a_corrupt_private_key_file_is_a_configuration_error(data: bytes) -> None:
    with pytest.raises(ConfigurationError) as raised:
        SigningKey.from_json(data, source="/etc/fairstream/publisher.key")

    message = str(raised.value)
    assert "/etc/fairstream/publisher.key" in message
    assert "'seed'" in message
    assert "fairstream keys generate" in message


@pytest.mark.parametrize("data", CORRUPT_KEY_FILES)
def test_a_corrupt_public_key_file_is_a_configuration_error(data: bytes) -> None:
    data = data.replace(b'"seed"', b'"public"')

    with pytest.raises(ConfigurationError, match=re.escape("trusted.pub")):
        PublicKey.from_json(data, source="trusted.pub")


def test_a_public_key_file_is_not_a_private_key() -> None:
    with pytest.raises(ConfigurationError, match="'seed'"):
        SigningKey.from_json(KEY_A.public_key.to_json())


# ---------------------------------------------------------------------------
# A third party: fastavro, hashlib and PyNaCl only, as docs/signing.md promises
# ---------------------------------------------------------------------------

DOMAIN = b"fairstream/signed-event/v1\x00"


def parsed_avsc(name: str) -> Any:
    """The latest version of a schema family, read as a third party would: from the file."""
    versions = Path("schemas/avro", name).glob("v*.avsc")
    with max(versions, key=lambda path: int(path.stem[1:])).open("rb") as handle:
        return fastavro.parse_schema(orjson.loads(handle.read()))


def test_a_third_party_verifies_an_envelope_without_fairstream() -> None:
    sealed = seal(PAYLOAD, [KEY_A, KEY_B])
    envelope_schema = parsed_avsc("signed_event")
    canonical = fastavro.schema.to_parsing_canonical_form(envelope_schema)

    assert sealed[:2] == b"\xc3\x01"
    assert sealed[2:10].hex() == fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
    body = io.BytesIO(sealed[10:])
    envelope = fastavro.schemaless_reader(body, envelope_schema, envelope_schema)
    assert body.tell() == len(sealed) - 10
    assert isinstance(envelope, dict)
    assert len(DOMAIN) == 27  # docs/signing.md: 27 bytes, ending in NUL

    payload = envelope["payload"]
    assert payload == PAYLOAD
    trusted = {}
    for seed in (KEY_A.seed, KEY_B.seed):
        verify_key = nacl.signing.SigningKey(seed).verify_key
        trusted[hashlib.sha256(bytes(verify_key)).hexdigest()] = verify_key
    verified = set()
    for signature in envelope["signatures"]:
        verify_key = trusted[signature["keyid"]]
        assert verify_key.verify(DOMAIN + payload, signature["sig"]) == DOMAIN + payload
        verified.add(signature["keyid"])
    assert verified == set(trusted)

    # The signature covers the domain: over the bare payload it does not verify.
    first = envelope["signatures"][0]
    with pytest.raises(nacl.exceptions.BadSignatureError):
        trusted[first["keyid"]].verify(payload, first["sig"])

    # And the payload itself is a single object the third party decodes the same way.
    release_schema = parsed_avsc("release_published")
    release_canonical = fastavro.schema.to_parsing_canonical_form(release_schema)
    assert payload[2:10].hex() == fastavro.schema.fingerprint(release_canonical, "CRC-64-AVRO")
    record = fastavro.schemaless_reader(io.BytesIO(payload[10:]), release_schema, release_schema)
    assert isinstance(record, dict)
    assert record["package"] == "drupal/token"


def test_a_third_party_signature_is_accepted_by_fairstream() -> None:
    # Written by another implementation: PyNaCl directly, and fastavro for the envelope.
    signer = nacl.signing.SigningKey(KEY_C.seed)
    keyid = hashlib.sha256(bytes(signer.verify_key)).hexdigest()
    schema = parsed_avsc("signed_event")
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        schema,
        {
            "payload": PAYLOAD,
            "signatures": [{"keyid": keyid, "sig": signer.sign(DOMAIN + PAYLOAD).signature}],
        },
    )
    sealed = b"\xc3\x01" + bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    sealed += body.getvalue()

    assert open_sealed(sealed, trust(KEY_C)) == PAYLOAD
    assert sealed == seal(PAYLOAD, [KEY_C])
