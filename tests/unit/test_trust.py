"""The trust root (schemas.trust): its format, the pinned root, rotations and key revocation."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import codec
from schemas.errors import (
    MalformedEventError,
    RootExpiredError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    UndelegatedKeyError,
    UnknownSchemaError,
)
from schemas.event_verification import (
    RefreshTrust,
    Reject,
    WaitForRoot,
    on_rejection,
    verify_event,
    verify_event_signers,
)
from schemas.events import Artifact, ReleasePublished
from schemas.signing import PublicKey, Signature, SignedEvent, SigningKey
from schemas.trust import (
    Delegation,
    TrustRoot,
    delegation_problem,
    follow_rotations,
    load_pinned_root,
    verify_root_update,
)


def fixed_key(n: int) -> SigningKey:
    return SigningKey(seed=bytes([n]) * 32)


ROOT_A, ROOT_B, ROOT_C, ROOT_D = (fixed_key(n) for n in (1, 2, 3, 4))
PUB_A, PUB_B = fixed_key(11), fixed_key(12)
OUTSIDER = fixed_key(66)
NOW = datetime(2025, 6, 1, tzinfo=UTC)
EXPIRES = datetime(2026, 1, 1, tzinfo=UTC)


def keyid(key: SigningKey) -> str:
    return key.public_key.keyid


def make_root(
    version: int = 1,
    root_keys: tuple[SigningKey, ...] = (ROOT_A, ROOT_B),
    root_threshold: int = 2,
    publisher_keys: tuple[SigningKey, ...] = (PUB_A, PUB_B),
    publisher_threshold: int = 1,
    expires: datetime = EXPIRES,
) -> TrustRoot:
    return TrustRoot(
        version=version,
        expires=expires,
        keys={keyid(k): k.public_key for k in (*root_keys, *publisher_keys)},
        root_keyids=tuple(keyid(k) for k in root_keys),
        root_threshold=root_threshold,
        delegations=(
            Delegation(
                "drupal/*",
                "drupal.org",
                tuple(keyid(k) for k in publisher_keys),
                publisher_threshold,
            ),
        ),
    )


V1 = make_root()


def signed_release(*keys: SigningKey) -> bytes:
    payload = ReleasePublished(
        package="drupal/token",
        drupal_version="8.x-1.9",
        version="1.9.0",
        published_at=datetime(2025, 5, 1, tzinfo=UTC),
        artifact=Artifact(
            sha256=hashlib.sha256(b"zip").hexdigest(),
            sha1=hashlib.sha1(b"zip").hexdigest(),
            size=3,
            origin_url="https://ftp.drupal.org/files/projects/token-8.x-1.9.zip",
        ),
        composer={"name": "drupal/token", "version": "1.9.0"},
        sequence=1,
    ).to_bytes()
    return SignedEvent(payload, tuple(k.sign(payload) for k in keys)).to_bytes()


def raw_root(**changes: Any) -> bytes:
    """V1 as an Avro record with ``changes``, encoded without TrustRoot's checks."""
    record: dict[str, Any] = {
        "version": 1,
        "expires": EXPIRES,
        "keys": [
            {"keyid": keyid(k), "keytype": "ed25519", "public": k.public_key.raw}
            for k in (ROOT_A, ROOT_B, PUB_A, PUB_B)
        ],
        "root_keyids": [keyid(ROOT_A), keyid(ROOT_B)],
        "root_threshold": 2,
        "delegations": [
            {
                "namespace": "drupal/*",
                "publisher": "drupal.org",
                "keyids": [keyid(PUB_A), keyid(PUB_B)],
                "threshold": 1,
            }
        ],
    }
    record.update(changes)
    return codec.encode(codec.load_schema("trust_root"), record)


# ---------------------------------------------------------------------------
# The format
# ---------------------------------------------------------------------------


def test_a_root_round_trips_through_its_bytes() -> None:
    data = V1.to_bytes()

    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.schema_family("trust_root").latest.fingerprint
    assert TrustRoot.from_bytes(data) == V1
    assert TrustRoot.from_bytes(data).to_bytes() == data


@given(
    version=st.integers(min_value=1, max_value=2**62),
    millis=st.integers(min_value=0, max_value=4_000_000_000_000),
    root_count=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_any_valid_root_round_trips(
    version: int, millis: int, root_count: int, data: st.DataObject
) -> None:
    root_keys = (ROOT_A, ROOT_B, ROOT_C, ROOT_D)[:root_count]
    threshold = data.draw(st.integers(min_value=1, max_value=root_count), label="threshold")
    root = make_root(
        version=version,
        root_keys=root_keys,
        root_threshold=threshold,
        expires=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis),
    )

    assert TrustRoot.from_bytes(root.to_bytes()) == root


def test_a_third_party_reads_a_root_with_the_avsc_alone() -> None:
    with open("schemas/avro/trust_root/v1.avsc", "rb") as handle:
        schema = fastavro.parse_schema(orjson.loads(handle.read()))
    record = fastavro.schemaless_reader(io.BytesIO(V1.to_bytes()[10:]), schema, schema)

    assert isinstance(record, dict)
    assert record["version"] == 1
    for entry in record["keys"]:
        assert entry["keyid"] == hashlib.sha256(entry["public"]).hexdigest()
    assert record["delegations"][0]["namespace"] == "drupal/*"


def test_the_schema_documents_every_field() -> None:
    with open("schemas/avro/trust_root/v1.avsc", "rb") as handle:
        schema = orjson.loads(handle.read())
    assert schema["namespace"] == "org.fairstream.v1"
    assert schema["name"] == "TrustRoot"

    def fields(record: dict[str, Any]) -> list[dict[str, Any]]:
        found = list(record["fields"])
        for item in record["fields"]:
            kind = item["type"]
            if isinstance(kind, dict) and kind.get("type") == "array":
                kind = kind["items"]
            if isinstance(kind, dict) and kind.get("type") == "record":
                found += fields(kind)
        return found

    undocumented = [f["name"] for f in fields(schema) if not f.get("doc")]
    assert undocumented == []


def test_a_roots_keys_cannot_be_changed_after_construction() -> None:
    with pytest.raises(TypeError):
        V1.keys[keyid(OUTSIDER)] = OUTSIDER.public_key  # type: ignore[index]


def test_delegation_for_finds_the_namespace_of_a_package() -> None:
    drupal = V1.delegations[0]

    assert V1.delegation_for("drupal/token") is drupal
    assert V1.delegation_for("drupal/core-recommended") is drupal
    assert V1.delegation_for("drupalx/token") is None
    assert V1.delegation_for("acme/token") is None
    assert V1.delegation_for("drupal") is None


INVALID_ROOTS = [
    pytest.param({"version": 0}, "version 0 is below 1", id="version-0"),
    pytest.param({"root_threshold": 0}, "root_threshold 0 is not between 1 and", id="threshold-0"),
    pytest.param({"root_threshold": 3}, "its 2 distinct root keys", id="threshold-over"),
    pytest.param(
        {"root_keyids": [keyid(ROOT_A), keyid(ROOT_A)]},
        "its 1 distinct root keys",
        id="root-key-listed-twice",
    ),
    pytest.param({"root_keyids": [keyid(ROOT_A), keyid(ROOT_C)]}, "not in keys", id="unknown-root"),
    pytest.param(
        {
            "delegations": [
                {
                    "namespace": "drupal/*",
                    "publisher": "drupal.org",
                    "keyids": [keyid(PUB_A)],
                    "threshold": 1,
                },
                {
                    "namespace": "drupal/*",
                    "publisher": "squatter",
                    "keyids": [keyid(PUB_B)],
                    "threshold": 1,
                },
            ]
        },
        "namespace drupal/* is delegated twice",
        id="namespace-twice",
    ),
    pytest.param(
        {
            "delegations": [
                {
                    "namespace": "drupal/*",
                    "publisher": "d",
                    "keyids": [keyid(OUTSIDER)],
                    "threshold": 1,
                }
            ]
        },
        "delegated drupal/* are not in keys",
        id="unknown-publisher-key",
    ),
    pytest.param(
        {
            "delegations": [
                {
                    "namespace": "drupal/*",
                    "publisher": "d",
                    "keyids": [keyid(PUB_A)],
                    "threshold": 2,
                }
            ]
        },
        "threshold 2 is not between 1 and its 1 distinct keys",
        id="delegation-threshold-over",
    ),
    pytest.param(
        {
            "delegations": [
                {
                    "namespace": "drupal/*",
                    "publisher": "d",
                    "keyids": [keyid(PUB_A)],
                    "threshold": 0,
                }
            ]
        },
        "threshold 0",
        id="delegation-threshold-0",
    ),
    pytest.param(
        {
            "delegations": [
                {
                    "namespace": "drupal/token",
                    "publisher": "d",
                    "keyids": [keyid(PUB_A)],
                    "threshold": 1,
                }
            ]
        },
        "is not a vendor followed by /*",
        id="namespace-not-vendor-star",
    ),
    pytest.param(
        {
            "delegations": [
                {"namespace": "*", "publisher": "d", "keyids": [keyid(PUB_A)], "threshold": 1}
            ]
        },
        "is not a vendor followed by /*",
        id="namespace-everything",
    ),
    pytest.param(
        {"keys": [{"keyid": keyid(ROOT_A), "keytype": "ed25519", "public": ROOT_B.public_key.raw}]},
        f"key listed as {keyid(ROOT_A)[:16]} has keyid {keyid(ROOT_B)[:16]}",
        id="keyid-not-sha256-of-key",
    ),
    pytest.param(
        {"keys": [{"keyid": keyid(ROOT_A), "keytype": "rsa", "public": ROOT_A.public_key.raw}]},
        "keytype 'rsa'",
        id="not-ed25519",
    ),
    pytest.param(
        {
            "keys": [
                {"keyid": keyid(ROOT_A), "keytype": "ed25519", "public": ROOT_A.public_key.raw}
            ]
            * 2
        },
        "is listed twice",
        id="key-listed-twice",
    ),
]


@pytest.mark.parametrize(("changes", "problem"), INVALID_ROOTS)
def test_an_invalid_root_is_malformed(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(MalformedEventError) as raised:
        TrustRoot.from_bytes(raw_root(**changes))

    assert problem in str(raised.value)
    assert type(raised.value) is MalformedEventError


def test_an_invalid_root_cannot_be_built_in_code_either() -> None:
    with pytest.raises(MalformedEventError, match="expires has no time zone"):
        replace(V1, expires=datetime(2026, 1, 1))
    with pytest.raises(MalformedEventError, match="finer than the millisecond"):
        replace(V1, expires=EXPIRES + timedelta(microseconds=1))
    with pytest.raises(MalformedEventError, match="keyid"):
        replace(V1, keys={**V1.keys, "ab" * 32: ROOT_C.public_key})
    with pytest.raises(MalformedEventError, match="not 32"):
        bad = PublicKey(raw=b"short")
        replace(V1, keys={**V1.keys, bad.keyid: bad})
    with pytest.raises(MalformedEventError, match="between 1 and its 1 distinct keys"):
        Delegation("drupal/*", "drupal.org", (keyid(PUB_A), keyid(PUB_A)), 2)
    with pytest.raises(MalformedEventError, match="publisher is empty"):
        Delegation("drupal/*", " ", (keyid(PUB_A),), 1)
    with pytest.raises(MalformedEventError, match="not 64 lower-case hex"):
        Delegation("drupal/*", "drupal.org", (keyid(PUB_A).upper(),), 1)


def test_other_bytes_are_not_a_root() -> None:
    with pytest.raises(UnknownSchemaError):
        TrustRoot.from_bytes(signed_release(PUB_A))
    with pytest.raises(MalformedEventError):
        TrustRoot.from_bytes(b"\xc3\x01")
    with pytest.raises(MalformedEventError, match="trailing"):
        TrustRoot.from_bytes(V1.to_bytes() + b"\x00")


# ---------------------------------------------------------------------------
# The pinned root
# ---------------------------------------------------------------------------


def test_a_pinned_root_signed_by_its_threshold_loads() -> None:
    assert load_pinned_root(V1.sign([ROOT_A, ROOT_B])) == V1


def test_a_pinned_root_below_its_threshold_is_refused() -> None:
    with pytest.raises(ThresholdError, match="signed by 1 of the 2 required keys"):
        load_pinned_root(V1.sign([ROOT_A]))
    with pytest.raises(ThresholdError, match="signed by 1 of the 2 required keys"):
        load_pinned_root(V1.sign([ROOT_A, ROOT_A]))
    # Publisher keys are not root keys, however many sign.
    with pytest.raises(ThresholdError, match="signed by 1 of the 2 required keys"):
        load_pinned_root(V1.sign([ROOT_A, PUB_A, PUB_B]))


def test_a_pinned_root_signed_by_no_root_key_is_refused() -> None:
    with pytest.raises(SignatureError) as raised:
        load_pinned_root(V1.sign([OUTSIDER]))

    assert type(raised.value) is SignatureError
    assert "signed by 0 of the 2 required keys" in str(raised.value)
    assert keyid(OUTSIDER)[:16] in str(raised.value)


def test_a_pinned_root_with_a_forged_signature_is_refused() -> None:
    payload = V1.to_bytes()
    forged = Signature(keyid(ROOT_B), OUTSIDER.sign(payload).sig)
    signed = SignedEvent(payload, (ROOT_A.sign(payload), forged)).to_bytes()

    with pytest.raises(ThresholdError):
        load_pinned_root(signed)


def test_an_expired_pinned_root_still_loads() -> None:
    old = make_root(expires=datetime(2020, 1, 1, tzinfo=UTC))

    assert load_pinned_root(old.sign([ROOT_A, ROOT_B])) == old


def test_a_pinned_file_that_is_no_signed_root_is_malformed() -> None:
    with pytest.raises(MalformedEventError):
        load_pinned_root(V1.to_bytes())  # not signed: the bare root
    with pytest.raises(UnknownSchemaError):
        load_pinned_root(signed_release(ROOT_A, ROOT_B))


# ---------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------

# v2 replaces ROOT_B by ROOT_C: ROOT_A signs for both roots.
V2 = make_root(version=2, root_keys=(ROOT_A, ROOT_C))


def test_a_rotation_signed_by_both_thresholds_is_accepted() -> None:
    assert verify_root_update(V1, V2.sign([ROOT_A, ROOT_B, ROOT_C])) == V2


def test_a_key_in_both_roots_counts_for_both() -> None:
    # ROOT_A + ROOT_B meet v1's 2; ROOT_A + ROOT_C meet v2's 2; three signatures in all.
    assert verify_root_update(V1, V2.sign([ROOT_C, ROOT_B, ROOT_A])) == V2
    with pytest.raises(RootRotationError, match="by 1 of the 2 required keys of its own"):
        verify_root_update(V1, V2.sign([ROOT_A, ROOT_B]))


def test_a_rotation_signed_only_by_the_new_keys_is_refused() -> None:
    new = make_root(version=2, root_keys=(ROOT_C, ROOT_D))

    with pytest.raises(RootRotationError) as raised:
        verify_root_update(V1, new.sign([ROOT_C, ROOT_D]))

    message = str(raised.value)
    assert message.startswith(
        "root v2 is signed by 0 of the 2 required keys of root v1 "
        "(rotation signed only by the new keys)"
    )
    assert keyid(ROOT_A)[:16] in message and keyid(ROOT_C)[:16] in message
    assert verify_root_update(V1, new.sign([ROOT_A, ROOT_B, ROOT_C, ROOT_D])) == new


def test_a_rotation_signed_only_by_the_old_keys_is_refused() -> None:
    new = make_root(version=2, root_keys=(ROOT_C, ROOT_D))

    with pytest.raises(RootRotationError) as raised:
        verify_root_update(V1, new.sign([ROOT_A, ROOT_B]))

    assert "signed by 0 of the 2 required keys of its own root keys" in str(raised.value)
    assert "(rotation signed only by the old keys)" in str(raised.value)


def test_a_rotation_below_the_old_threshold_is_refused() -> None:
    with pytest.raises(RootRotationError, match="by 1 of the 2 required keys of root v1"):
        verify_root_update(V1, V2.sign([ROOT_A, ROOT_C]))


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        pytest.param(1, "root v1 is not newer than root v1", id="repeat"),
        pytest.param(3, "root v3 skips v2", id="skip"),
    ],
)
def test_a_rotation_must_be_the_next_version(version: int, problem: str) -> None:
    offered = make_root(version=version)

    with pytest.raises(RootRotationError, match=problem):
        verify_root_update(V1, offered.sign([ROOT_A, ROOT_B]))


def test_an_older_root_is_a_rollback() -> None:
    v3 = make_root(version=3)

    with pytest.raises(RootRotationError, match="rollback of the trust root"):
        verify_root_update(v3, make_root(version=2).sign([ROOT_A, ROOT_B]))


@pytest.mark.parametrize(
    "signed",
    [
        pytest.param(b"garbage", id="garbage"),
        pytest.param(make_root(version=2).to_bytes(), id="unsigned-root"),
        pytest.param(signed_release(ROOT_A, ROOT_B), id="a-release"),
        pytest.param(
            SignedEvent(
                raw_root(version=2, root_threshold=0),
                tuple(k.sign(raw_root(version=2, root_threshold=0)) for k in (ROOT_A, ROOT_B)),
            ).to_bytes(),
            id="invalid-root-signed-by-old-keys",
        ),
    ],
)
def test_a_malformed_new_root_is_refused(signed: bytes) -> None:
    with pytest.raises(RootRotationError) as raised:
        verify_root_update(V1, signed)

    assert "the root offered to follow trust root v1 is malformed" in str(raised.value)
    assert isinstance(raised.value.__cause__, MalformedEventError)


def test_an_expired_root_can_be_rotated_forward() -> None:
    expired = make_root(expires=datetime(2020, 1, 1, tzinfo=UTC))

    assert verify_root_update(expired, V2.sign([ROOT_A, ROOT_B, ROOT_C])) == V2


# ---------------------------------------------------------------------------
# Revocation: a rotation that drops a key
# ---------------------------------------------------------------------------


def test_a_publisher_key_dropped_by_a_rotation_no_longer_signs() -> None:
    event = signed_release(PUB_B)
    assert verify_event(event, V1, now=NOW).package == "drupal/token"

    revoked = make_root(version=2, publisher_keys=(PUB_A,))
    v2 = verify_root_update(V1, revoked.sign([ROOT_A, ROOT_B]))

    with pytest.raises(UndelegatedKeyError) as raised:
        verify_event(event, v2, now=NOW)
    assert keyid(PUB_B)[:16] in str(raised.value)
    assert verify_event(signed_release(PUB_A), v2, now=NOW).package == "drupal/token"


def test_a_root_key_dropped_by_a_rotation_no_longer_signs_roots() -> None:
    v2 = verify_root_update(V1, V2.sign([ROOT_A, ROOT_B, ROOT_C]))  # drops ROOT_B
    v3 = make_root(version=3, root_keys=(ROOT_A, ROOT_C))

    with pytest.raises(RootRotationError, match="by 1 of the 2 required keys of root v2"):
        verify_root_update(v2, v3.sign([ROOT_A, ROOT_B]))
    assert verify_root_update(v2, v3.sign([ROOT_A, ROOT_C])) == v3


# ---------------------------------------------------------------------------
# Following rotations
# ---------------------------------------------------------------------------

V3 = make_root(version=3, root_keys=(ROOT_C, ROOT_D))
SIGNED_V1 = V1.sign([ROOT_A, ROOT_B])
SIGNED_V2 = V2.sign([ROOT_A, ROOT_B, ROOT_C])
SIGNED_V3 = V3.sign([ROOT_A, ROOT_C, ROOT_D])


def test_follow_rotations_applies_each_in_order() -> None:
    assert follow_rotations(V1, [SIGNED_V2, SIGNED_V3]) == V3


def test_follow_rotations_skips_the_roots_already_known() -> None:
    assert follow_rotations(V1, [SIGNED_V1, SIGNED_V2, SIGNED_V3]) == V3
    assert follow_rotations(V3, [SIGNED_V1, SIGNED_V2, SIGNED_V3]) == V3
    assert follow_rotations(V1, []) == V1


def test_follow_rotations_does_not_check_the_roots_it_skips() -> None:
    # An old version, whoever signed it, is never trusted again: it is only skipped.
    assert follow_rotations(V2, [make_root(version=1).sign([OUTSIDER]), SIGNED_V3]) == V3


def test_follow_rotations_fails_on_a_gap() -> None:
    with pytest.raises(RootRotationError, match="root v3 skips v2"):
        follow_rotations(V1, [SIGNED_V1, SIGNED_V3])


def test_follow_rotations_fails_on_a_refused_rotation() -> None:
    forged_v2 = make_root(version=2, root_keys=(ROOT_C, ROOT_D)).sign([ROOT_C, ROOT_D])

    with pytest.raises(RootRotationError, match="rotation signed only by the new keys"):
        follow_rotations(V1, [forged_v2, SIGNED_V3])
    with pytest.raises(RootRotationError, match="malformed"):
        follow_rotations(V1, [b"garbage", SIGNED_V2])


# ---------------------------------------------------------------------------
# Who signed: kept with each version for the package page
# ---------------------------------------------------------------------------


def test_the_signers_are_the_delegated_keys_whose_signatures_verify() -> None:
    data = signed_release(PUB_B, PUB_A, OUTSIDER)
    event, signers = verify_event_signers(data, V1, now=NOW)
    assert event.package == "drupal/token"
    # The outsider's signature is genuine but not delegated: it is not a signer here.
    assert signers == tuple(sorted((keyid(PUB_A), keyid(PUB_B))))


def test_a_forged_second_signature_is_not_counted_as_a_signer() -> None:
    payload = SignedEvent.from_bytes(signed_release(PUB_A)).payload
    forged = Signature(keyid(PUB_B), PUB_A.sign(payload).sig)
    data = SignedEvent(payload, (PUB_A.sign(payload), forged)).to_bytes()
    assert verify_event_signers(data, V1, now=NOW)[1] == (keyid(PUB_A),)


def test_a_publishers_tools_learn_before_signing_whether_nodes_would_refuse_the_keys() -> None:
    two_needed = make_root(publisher_threshold=2)
    assert delegation_problem(two_needed, "drupal/token", [keyid(PUB_A), keyid(PUB_B)]) is None
    too_few = delegation_problem(two_needed, "drupal/token", [keyid(PUB_A), keyid(OUTSIDER)])
    assert too_few is not None and "2 needed" in too_few and "threshold-not-met" in too_few
    outsider = delegation_problem(V1, "drupal/token", [keyid(ROOT_A)])
    assert outsider is not None and "include 0 of them" in outsider
    assert "undelegated-key" in outsider
    nobody = delegation_problem(V1, "acme/widget", [keyid(PUB_A)])
    assert nobody is not None and "delegates acme/* to no publisher" in nobody


@pytest.mark.parametrize("refreshed", [False, True])
def test_an_expired_root_makes_a_reader_wait_never_refuse(refreshed: bool) -> None:
    error = RootExpiredError("trust root v3 expired")
    assert on_rejection(error, refreshed=refreshed) == WaitForRoot("trust root v3 expired")


@pytest.mark.parametrize("error", [UndelegatedKeyError("no delegation"), ThresholdError("1 of 2")])
def test_a_key_the_root_may_not_delegate_yet_is_judged_again_after_one_refresh(
    error: Exception,
) -> None:
    assert on_rejection(error, refreshed=False) == RefreshTrust()
    refused = on_rejection(error, refreshed=True)
    assert isinstance(refused, Reject) and refused.reason == error.reason  # type: ignore[attr-defined]
    assert refused.detail == str(error)


@pytest.mark.parametrize(
    "error",
    [SignatureError("forged"), MalformedEventError("not Avro"), UnknownSchemaError("fingerprint")],
)
def test_a_record_that_can_never_verify_is_refused_with_its_reason_at_once(
    error: Exception,
) -> None:
    expected = Reject(error.reason, str(error))  # type: ignore[attr-defined]
    assert on_rejection(error, refreshed=False) == expected
    assert on_rejection(error, refreshed=True) == expected


def test_an_unexpected_error_is_refused_as_an_internal_error_to_report_not_retried() -> None:
    action = on_rejection(KeyError("fingerprint"), refreshed=False)
    assert isinstance(action, Reject) and action.reason == "internal-error"
    assert "KeyError" in action.detail and "report this bug" in action.detail
