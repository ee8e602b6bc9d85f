"""docs/signing.md as a contract: its "Verifying by hand" code, its reason codes, its byte facts.

The page's code block is extracted and run unchanged against events sealed by
fairstream, so the page cannot drift from what a node accepts.
"""

from __future__ import annotations

import re
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import fastavro.schema
import orjson
import pytest

from infra.devtools.sample_projects import sample_zip
from schemas import codec, errors
from schemas.errors import MalformedEventError, RejectedError
from schemas.event_verification import verify_event
from schemas.events import ReleasePublished, utc_now
from schemas.signing import Signature, SignedEvent, SigningKey, seal
from schemas.trust import TrustRoot
from services.publishing.publisher import build_release
from services.publishing.trust_admin import DelegationSpec, build_root
from streams import peer_verdict

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "signing.md"
SCHEMAS = REPO / "schemas" / "avro"
FILE_BLOCK = re.compile(r"<!-- file: (?P<name>\S+) -->\n```\w*\n(?P<code>.*?)\n```", re.S)


def by_hand() -> types.ModuleType:
    """The page's ``verify_by_hand.py`` block, as a module."""
    blocks = {m["name"]: m["code"] for m in FILE_BLOCK.finditer(PAGE.read_text())}
    module = types.ModuleType("verify_by_hand")
    exec(
        compile(blocks["verify_by_hand.py"], "docs/signing.md:verify_by_hand.py", "exec"),
        module.__dict__,
    )
    return module


@pytest.fixture(scope="module")
def hand() -> types.ModuleType:
    return by_hand()


@pytest.fixture(scope="module")
def schemas(hand: types.ModuleType) -> dict[bytes, Any]:
    found: dict[bytes, Any] = hand.load_schemas(SCHEMAS)
    return found


A, B, C, STRANGER, ROOT_KEY = (SigningKey.generate() for _ in range(5))


@pytest.fixture(scope="module")
def root() -> TrustRoot:
    """Delegates ``drupal/*`` to A, B and C with threshold 2, and ``acme/*`` to the stranger."""
    return build_root(
        version=1,
        root_keys=[ROOT_KEY.public_key],
        root_threshold=1,
        delegations=[
            DelegationSpec("drupal/*", "drupal.org", (A.public_key, B.public_key, C.public_key), 2),
            DelegationSpec("acme/*", "acme.example", (STRANGER.public_key,), 1),
        ],
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> ReleasePublished:
    work = tmp_path_factory.mktemp("signing-doc")
    zip_path = sample_zip(work, "token", "8.x-1.9")
    return build_release(
        package="drupal/token",
        drupal_version="8.x-1.9",
        zip_path=zip_path,
        origin_url=f"https://ftp.drupal.org/files/projects/{zip_path.name}",
        sequence=1,
    )


def envelope(payload: bytes, signatures: list[Signature]) -> bytes:
    return SignedEvent(payload=payload, signatures=tuple(signatures)).to_bytes()


def hand_root(hand: types.ModuleType, root: TrustRoot, schemas: dict[bytes, Any]) -> Any:
    """The root as the page's code reads it: from the signed file nodes pin."""
    _, family, record = hand.open_signed(root.sign([ROOT_KEY]), schemas)
    assert family == "trust_root"
    return record


def cases(release: ReleasePublished) -> dict[str, tuple[bytes, bool]]:
    """Records and whether a node accepts them (threshold 2 of A, B, C)."""
    payload = release.to_bytes()
    forged = Signature(B.public_key.keyid, bytes(64))
    return {
        "two signatures": (seal(payload, [A, B]), True),
        "three signatures": (seal(payload, [A, B, C]), True),
        "two delegated and a stranger": (seal(payload, [STRANGER, C, A]), True),
        "one signature": (seal(payload, [A]), False),
        "one key signing twice": (envelope(payload, [A.sign(payload), A.sign(payload)]), False),
        "a delegated key and a stranger": (seal(payload, [A, STRANGER]), False),
        "a delegated key and a forged signature": (
            envelope(payload, [A.sign(payload), forged]),
            False,
        ),
        "a key delegated another namespace only": (seal(payload, [STRANGER]), False),
        "tampered after signing": (seal(payload, [A, B]).replace(b"8.x-1.9", b"8.x-1.8", 1), False),
    }


def test_the_page_code_accepts_exactly_what_a_node_accepts(
    hand: types.ModuleType,
    schemas: dict[bytes, Any],
    root: TrustRoot,
    release: ReleasePublished,
) -> None:
    record_root = hand_root(hand, root, schemas)
    now = utc_now()
    for what, (value, accepted) in cases(release).items():
        try:
            verify_event(value, root, now=now)
            node_accepts = True
        except RejectedError:
            node_accepts = False
        assert node_accepts is accepted, what
        if accepted:
            event = hand.verify(value, record_root, schemas)
            assert (event["package"], event["version"]) == ("drupal/token", "1.9.0"), what
        else:
            with pytest.raises(ValueError):
                hand.verify(value, record_root, schemas)
                pytest.fail(f"the page's code accepted {what}")


def test_the_page_code_says_which_threshold_was_missed(
    hand: types.ModuleType, schemas: dict[bytes, Any], root: TrustRoot, release: ReleasePublished
) -> None:
    record_root = hand_root(hand, root, schemas)
    value = envelope(release.to_bytes(), [A.sign(release.to_bytes())] * 2)
    with pytest.raises(ValueError, match="threshold-not-met: 1 of 2 distinct keys"):
        hand.verify(value, record_root, schemas)


def test_the_page_code_fails_closed_on_an_expired_root(
    hand: types.ModuleType, schemas: dict[bytes, Any], root: TrustRoot, release: ReleasePublished
) -> None:
    record_root = hand_root(hand, root, schemas)
    later = root.expires + timedelta(seconds=1)
    with pytest.raises(ValueError, match="root-expired"):
        hand.verify(seal(release.to_bytes(), [A, B]), record_root, schemas, now=later)


def test_trailing_bytes_are_refused_after_the_envelope_and_after_the_payload(
    hand: types.ModuleType, schemas: dict[bytes, Any], root: TrustRoot, release: ReleasePublished
) -> None:
    record_root = hand_root(hand, root, schemas)
    padded_payload = release.to_bytes() + b"\x00"
    for what, value in {
        "after the envelope": seal(release.to_bytes(), [A, B]) + b"\x00",
        # Signed as it is, trailing byte included: the signatures verify, the record does not.
        "after the payload": seal(padded_payload, [A, B]),
    }.items():
        with pytest.raises(MalformedEventError, match="1 trailing bytes") as raised:
            verify_event(value, root, now=utc_now())
        assert raised.value.reason == "malformed", what
        with pytest.raises(ValueError, match="malformed: 1 trailing bytes"):
            hand.verify(value, record_root, schemas)
    assert (
        "a record with any byte\n  after its Avro body is refused as `malformed`"
        in PAGE.read_text()
    )


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification writes it, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprints_json_pins_the_wire_bytes_little_endian() -> None:
    pins: dict[str, str] = orjson.loads((SCHEMAS / "fingerprints.json").read_bytes())
    assert pins
    for name, pin in pins.items():
        family, version = name.split("/v")
        schema = next(s for s in codec.schema_family(family).versions if s.version == int(version))
        canonical = fastavro.schema.to_parsing_canonical_form(schema.parsed).encode()
        value = crc64_avro(canonical)
        assert bytes.fromhex(pin) == value.to_bytes(8, "little") == schema.fingerprint, name
    text = PAGE.read_text()
    signed = pins["signed_event/v1"]
    assert f"`signed_event/v1` is `{signed}`" in text
    wire = " ".join(signed[i : i + 2] for i in range(0, 16, 2)).upper()
    assert f"starts `C3 01 {wire}`" in text
    number = crc64_avro(
        fastavro.schema.to_parsing_canonical_form(
            codec.schema_family("signed_event").latest.parsed
        ).encode()
    )
    assert f"`0x{number:016X}`" in text


def documented_reasons() -> dict[str, str]:
    """The page's "Rejection reasons" table: code -> meaning."""
    section = PAGE.read_text().split("## Rejection reasons", 1)[1]
    rows = re.findall(r"^\| `([a-z-]+)` \| [^|]+ \| ([^|]+) \|$", section, re.M)
    return {code: meaning.strip() for code, meaning in rows}


def recordable_reasons() -> set[str]:
    """Every reason code a node can record: each rejected error's, and the peer decisions'."""
    found: set[str] = set()
    pending: list[type[RejectedError]] = list(RejectedError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.add(cls.reason)
        pending.extend(cls.__subclasses__())
    peer = {
        value
        for name, value in vars(peer_verdict).items()
        if name.startswith("PEER_") and isinstance(value, str)
    }
    assert peer, "streams.peer_verdict names its reasons PEER_*"
    return found | peer


def test_every_reason_code_is_listed_with_its_meaning() -> None:
    documented = documented_reasons()
    assert set(documented) == recordable_reasons()
    assert all(len(meaning) > 20 for meaning in documented.values()), documented
    section = PAGE.read_text().split("## Rejection reasons", 1)[1]
    for name, cls in vars(errors).items():
        rejected = isinstance(cls, type) and issubclass(cls, RejectedError)
        if rejected and cls is not RejectedError and name in section:
            assert f"| `{cls.reason}` | `{name}` |" in section, name
