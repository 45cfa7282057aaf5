"""Signing kernel: signed record headers, key registry, key files (pure logic, no broker).

The oracle for signatures is the ``cryptography`` package used directly on the message
layout written out in full here, not the module's own message builder.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from planr.errors import PlanrError, UsageError
from planr.keyfiles import (
    KeyEntry,
    generate_key,
    read_private_key,
)
from planr.signing import (
    KeyRegistry,
    SignatureError,
    Signer,
    sign_headers,
    verify_record,
)
from tests.signing_helpers import NOW, T0, T1, TOPIC, VALUE, entry, raw_public


@pytest.fixture
def keys():
    return {"vsse": Ed25519PrivateKey.generate(), "router": Ed25519PrivateKey.generate()}


@pytest.fixture
def registry(keys):
    return KeyRegistry([
        entry("vsse-2026-01", "vsse", keys["vsse"]),
        entry("router-2026-01", "router", keys["router"]),
    ])


@pytest.fixture
def signer(keys):
    return Signer(keys["vsse"], key_id="vsse-2026-01", owner="vsse")


def _detail(exc_info: pytest.ExceptionInfo[SignatureError]) -> str:
    return exc_info.value.detail_reason


# --- signing and verifying --------------------------------------------------------------


def test_signed_record_verifies_and_names_its_owner(registry, signer):
    headers = sign_headers(signer, TOPIC, VALUE)
    assert verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse") == "vsse"
    assert verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner=None) == "vsse"


def test_headers_carry_key_id_and_a_signature_over_domain_topic_key_id_and_value(keys, signer):
    headers = dict(sign_headers(signer, TOPIC, VALUE))
    assert set(headers) == {"planr-key-id", "planr-sig"}
    assert headers["planr-key-id"] == b"vsse-2026-01"
    message = b"planr-bus/v1\x00planr.ingress.vsse\x00vsse-2026-01\x00" + VALUE
    keys["vsse"].public_key().verify(headers["planr-sig"], message)  # raises if not
    assert len(headers["planr-sig"]) == 64


def test_record_signed_outside_the_module_verifies(registry, keys):
    message = b"planr-bus/v1\x00" + TOPIC.encode() + b"\x00router-2026-01\x00" + VALUE
    headers = [("planr-key-id", b"router-2026-01"), ("planr-sig", keys["router"].sign(message))]
    owner = verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="router")
    assert owner == "router"


def test_other_headers_are_ignored(registry, signer):
    headers = [("trace", b"x"), *sign_headers(signer, TOPIC, VALUE), ("other", b"")]
    assert verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse") == "vsse"


def test_tampered_value_is_a_bad_signature(registry, signer):
    headers = sign_headers(signer, TOPIC, VALUE)
    tampered = VALUE[:-1] + bytes([VALUE[-1] ^ 1])
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, TOPIC, tampered, headers, at=NOW, expected_owner="vsse")
    assert _detail(exc_info) == "bad_signature"
    assert exc_info.value.reason == "unauthenticated"


def test_value_replayed_on_another_topic_is_a_bad_signature(registry, signer):
    headers = sign_headers(signer, TOPIC, VALUE)
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, "planr.ingress.ocam", VALUE, headers, at=NOW, expected_owner=None)
    assert _detail(exc_info) == "bad_signature"


def test_signature_moved_to_another_key_id_of_the_same_owner_is_bad(keys, signer):
    other = Ed25519PrivateKey.generate()
    registry = KeyRegistry([
        entry("vsse-2026-01", "vsse", keys["vsse"]),
        entry("vsse-2026-02", "vsse", other),
    ])
    sig = dict(sign_headers(signer, TOPIC, VALUE))["planr-sig"]
    headers = [("planr-key-id", b"vsse-2026-02"), ("planr-sig", sig)]
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse")
    assert _detail(exc_info) == "bad_signature"


def test_truncated_or_repeated_signature_is_a_bad_signature(registry, signer):
    key_id, sig = sign_headers(signer, TOPIC, VALUE)
    for headers in ([key_id, (sig[0], sig[1][:63])], [key_id, sig, sig]):
        with pytest.raises(SignatureError) as exc_info:
            verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse")
        assert _detail(exc_info) == "bad_signature"


def test_unknown_key_id_is_refused(registry):
    stranger = Signer(Ed25519PrivateKey.generate(), key_id="vsse-9999", owner="vsse")
    headers = sign_headers(stranger, TOPIC, VALUE)
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse")
    assert _detail(exc_info) == "unknown_key"
    assert exc_info.value.key_id == "vsse-9999"
    assert exc_info.value.detail == "unknown_key key_id=vsse-9999"


def test_malformed_key_id_is_unknown_and_not_echoed(registry, signer):
    sig = dict(sign_headers(signer, TOPIC, VALUE))["planr-sig"]
    for raw in (b"\xff\xfe", b"evil\nlog-line", b""):
        headers = [("planr-key-id", raw), ("planr-sig", sig)]
        with pytest.raises(SignatureError) as exc_info:
            verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner=None)
        assert _detail(exc_info) == "unknown_key"
        assert exc_info.value.key_id is None
        assert "log-line" not in str(exc_info.value)


@pytest.mark.parametrize(
    "at",
    [T0 - timedelta(seconds=1), T1, T1 + timedelta(days=30)],
    ids=["before-valid-from", "at-valid-until", "after-valid-until"],
)
def test_key_outside_its_validity_is_expired(registry, signer, at):
    headers = sign_headers(signer, TOPIC, VALUE)
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, TOPIC, VALUE, headers, at=at, expected_owner="vsse")
    assert _detail(exc_info) == "expired_key"


def test_key_is_valid_from_its_first_instant_and_without_end_date(keys, signer):
    registry = KeyRegistry([
        KeyEntry(
            id="vsse-2026-01",
            owner="vsse",
            public_key=base64.b64encode(raw_public(keys["vsse"])).decode(),
            valid_from=T0,
        )
    ])
    headers = sign_headers(signer, TOPIC, VALUE)
    for at in (T0, T1 + timedelta(days=3650)):
        owner = verify_record(registry, TOPIC, VALUE, headers, at=at, expected_owner="vsse")
        assert owner == "vsse"


def test_rotation_overlap_accepts_old_and_new_key(keys):
    new = Ed25519PrivateKey.generate()
    registry = KeyRegistry([
        entry("vsse-2026-01", "vsse", keys["vsse"]),
        entry("vsse-2026-12", "vsse", new, valid_from=T1 - timedelta(days=31),
               valid_until=T1 + timedelta(days=365)),
    ])
    overlap = T1 - timedelta(days=10)
    for key, key_id in ((keys["vsse"], "vsse-2026-01"), (new, "vsse-2026-12")):
        headers = sign_headers(Signer(key, key_id=key_id, owner="vsse"), TOPIC, VALUE)
        assert verify_record(registry, TOPIC, VALUE, headers, at=overlap, expected_owner="vsse")


def test_key_of_another_owner_is_the_wrong_signer(registry, keys):
    router = Signer(keys["router"], key_id="router-2026-01", owner="router")
    headers = sign_headers(router, TOPIC, VALUE)
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse")
    assert _detail(exc_info) == "wrong_signer"


def test_signer_claiming_another_owner_does_not_change_the_registered_owner(registry, keys):
    impostor = Signer(keys["router"], key_id="router-2026-01", owner="vsse")
    headers = sign_headers(impostor, TOPIC, VALUE)
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse")
    assert _detail(exc_info) == "wrong_signer"


@pytest.mark.parametrize(
    "headers",
    [None, [], [("planr-key-id", b"vsse-2026-01")], [("planr-sig", b"x" * 64)],
     [("planr-key-id", None), ("planr-sig", b"x" * 64)]],
    ids=["none", "empty", "no-signature", "no-key-id", "null-key-id"],
)
def test_missing_headers_mean_unsigned(registry, headers):
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse")
    assert _detail(exc_info) == "unsigned"
    assert isinstance(exc_info.value, PlanrError)
    assert exc_info.value.reason == "unauthenticated"
    assert exc_info.value.retriable is False


def test_naive_time_is_a_usage_error(registry, signer):
    headers = sign_headers(signer, TOPIC, VALUE)
    with pytest.raises(UsageError, match="timezone"):
        verify_record(registry, TOPIC, VALUE, headers, at=datetime(2026, 6, 1),  # noqa: DTZ001
                      expected_owner="vsse")


def test_check_signer_refuses_a_key_that_does_not_match_the_registry(registry, keys, signer):
    registry.check_signer(signer, at=NOW)
    wrong_key = Signer(keys["router"], key_id="vsse-2026-01", owner="vsse")
    with pytest.raises(UsageError, match="does not match"):
        registry.check_signer(wrong_key, at=NOW)
    with pytest.raises(UsageError, match="not valid"):
        registry.check_signer(signer, at=T1)
    with pytest.raises(UsageError, match="registered for vsse"):
        registry.check_signer(Signer(keys["vsse"], key_id="vsse-2026-01", owner="ocam"), at=NOW)


# --- no key material in text ------------------------------------------------------------


def _renderings(key: Ed25519PrivateKey) -> list[str]:
    private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    public = raw_public(key)
    pem_body = "".join(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode().splitlines()[1:-1])
    out = [pem_body]
    for raw in (private, public):
        out += [base64.b64encode(raw).decode(), raw.hex(), raw.hex().upper(), repr(raw)[2:-1]]
    return out


def test_signer_and_errors_show_no_key_material(tmp_path):
    path, entry = generate_key("vsse", tmp_path / "k", key_id="vsse-2026-01", valid_from=T0)
    signer = Signer.from_file(path, owner="vsse")
    key = read_private_key(path)
    texts = [repr(signer), str(signer), f"{signer}", repr(KeyRegistry([entry]))]
    assert repr(signer) == "Signer(owner='vsse', key_id='vsse-2026-01')"
    headers = sign_headers(signer, TOPIC, VALUE)
    registry = KeyRegistry([entry])
    for at, owner in ((NOW, "vsse"), (T0 - timedelta(days=1), "vsse"), (NOW, "router")):
        with pytest.raises(SignatureError) as exc_info:
            verify_record(registry, TOPIC, VALUE + b"!", headers, at=at, expected_owner=owner)
        texts += [str(exc_info.value), repr(exc_info.value), exc_info.value.detail]
    path.chmod(0o644)
    with pytest.raises(UsageError) as usage:
        Signer.from_file(path, owner="vsse")
    texts += [str(usage.value)]
    for secret in _renderings(key):
        for text in texts:
            assert secret not in text


def test_signer_cannot_be_pickled(signer):
    import pickle  # noqa: PLC0415

    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(signer)


def test_public_key_objects_are_built_once_per_key_id(registry, signer, monkeypatch):
    calls = []
    real = Ed25519PublicKey.from_public_bytes

    def counting(data: bytes) -> Ed25519PublicKey:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(Ed25519PublicKey, "from_public_bytes", staticmethod(counting))
    headers = sign_headers(signer, TOPIC, VALUE)
    for _ in range(5):
        verify_record(registry, TOPIC, VALUE, headers, at=NOW, expected_owner="vsse")
    assert calls == []
