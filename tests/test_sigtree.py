"""Chunk signatures: one Ed25519 signature over a hash tree of records, a proof per record.

Oracles: the tree, the proofs and the root message are written out here by hand with
``hashlib`` and checked with the ``cryptography`` package directly, never with the module's
own builders; partitions are checked against aiokafka's own murmur2 and Kafka's test vectors.
The round trips through the embedded broker are in tests/test_sigtree_kafka.py.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta

import pytest
from aiokafka.partitioner import murmur2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from planr import merkle
from planr.batching import partition_hash
from planr.errors import UsageError
from planr.signing import (
    KeyRegistry,
    SignatureError,
    Signer,
    sign_chunk,
    sign_headers,
    verify_record,
)
from tests.signing_helpers import NOW, T0, T1, TOPIC, entry

KEY_ID = "vsse-2026-01"
OTHER_TOPIC = "planr.ingress.ocam"


def sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


SALT = 16  # bytes of salt at the head of every proof


def leaf(topic: str, value: bytes, salt: bytes, key_id: str = KEY_ID) -> bytes:
    """The leaf, spelled out: 0x00, the record's salt, then the single-record message."""
    return sha(b"\x00", salt, b"planr-bus/v1\x00", topic.encode(), b"\x00", key_id.encode(),
               b"\x00", value)


def node(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01", left, right)


def root_message(root: bytes, key_id: str = KEY_ID) -> bytes:
    return b"planr-bus/v1/root\x00" + key_id.encode() + b"\x00" + root


def values(n: int, tag: bytes = b"v") -> list[tuple[str, bytes]]:
    return [(TOPIC, tag + b"-%d" % i) for i in range(n)]


@pytest.fixture
def raw_keys():
    return {"vsse": Ed25519PrivateKey.generate(), "vsse2": Ed25519PrivateKey.generate(),
            "router": Ed25519PrivateKey.generate()}


@pytest.fixture
def registry(raw_keys):
    return KeyRegistry([entry(KEY_ID, "vsse", raw_keys["vsse"]),
                        entry("vsse-2026-02", "vsse", raw_keys["vsse2"]),
                        entry("router-2026-01", "router", raw_keys["router"])])


@pytest.fixture
def signer(raw_keys):
    return Signer(raw_keys["vsse"], key_id=KEY_ID, owner="vsse")


Hdrs = list[tuple[str, bytes]]


def header(headers: Hdrs, name: str) -> bytes:
    return dict(headers)[name]


def replace(headers: Hdrs, name: str, raw: bytes) -> Hdrs:
    return [(k, raw if k == name else v) for k, v in headers]


def refused(registry: KeyRegistry, topic: str, value: bytes, headers: Hdrs, *,
            at: datetime = NOW, owner: str | None = "vsse") -> str:
    with pytest.raises(SignatureError) as exc_info:
        verify_record(registry, topic, value, headers, at=at, expected_owner=owner)
    return exc_info.value.detail_reason


# --- the tree, against a hand-written oracle ---------------------------------------------


def test_five_records_give_the_hand_computed_root_proofs_and_signature(raw_keys, signer):
    records = values(5)
    signed = sign_chunk(signer, records)
    salts = [header(h, "planr-proof")[:SALT] for h in signed]
    assert len(set(salts)) == 5  # a fresh salt per record
    l0, l1, l2, l3, l4 = (leaf(t, v, salt) for (t, v), salt in zip(records, salts, strict=True))
    n01, n23 = node(l0, l1), node(l2, l3)
    n0123 = node(n01, n23)
    root = node(n0123, l4)  # l4 is carried up twice, unchanged
    expected = [
        b"R" + l1 + b"R" + n23 + b"R" + l4,
        b"L" + l0 + b"R" + n23 + b"R" + l4,
        b"R" + l3 + b"L" + n01 + b"R" + l4,
        b"L" + l2 + b"L" + n01 + b"R" + l4,
        b"L" + n0123,
    ]
    assert [header(h, "planr-proof")[SALT:] for h in signed] == expected
    signatures = {header(h, "planr-sig") for h in signed}
    assert len(signatures) == 1
    raw_keys["vsse"].public_key().verify(signatures.pop(), root_message(root))  # raises if not
    assert all(header(h, "planr-key-id") == KEY_ID.encode() for h in signed)
    assert all([k for k, _ in h] == ["planr-key-id", "planr-sig", "planr-proof"] for h in signed)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 9, 31, 32, 33, 63, 64, 65])
def test_every_record_of_a_chunk_verifies_with_a_proof_of_the_expected_depth(
    registry, signer, n
):
    records = values(n)
    signed = sign_chunk(signer, records)
    depth = (n - 1).bit_length()  # levels of a tree of n leaves
    for (topic, value), headers in zip(records, signed, strict=True):
        assert verify_record(registry, topic, value, headers, at=NOW, expected_owner="vsse")
        path = header(headers, "planr-proof")[SALT:]
        assert len(path) % 33 == 0
        assert len(path) // 33 <= depth
    assert len(header(signed[0], "planr-proof")[SALT:]) // 33 == depth


def test_a_chunk_of_one_is_signed_in_the_single_form(raw_keys, signer, registry):
    (headers,) = sign_chunk(signer, [(TOPIC, b"alone")])
    assert [k for k, _ in headers] == ["planr-key-id", "planr-sig"]
    message = b"planr-bus/v1\x00" + TOPIC.encode() + b"\x00" + KEY_ID.encode() + b"\x00alone"
    raw_keys["vsse"].public_key().verify(header(headers, "planr-sig"), message)
    assert verify_record(registry, TOPIC, b"alone", headers, at=NOW) == "vsse"


def test_a_proof_of_the_salt_alone_is_a_tree_of_one_leaf(raw_keys, registry):
    salt = bytes(range(SALT))
    signature = raw_keys["vsse"].sign(root_message(leaf(TOPIC, b"x", salt)))
    headers = [("planr-key-id", KEY_ID.encode()), ("planr-sig", signature), ("planr-proof", salt)]
    assert verify_record(registry, TOPIC, b"x", headers, at=NOW, expected_owner="vsse") == "vsse"
    other_salt = [*headers[:2], ("planr-proof", bytes(SALT))]
    assert refused(registry, TOPIC, b"x", other_salt) == "bad_signature"


def test_a_sibling_hash_does_not_confirm_a_guess_of_the_sibling_record(signer):
    """Need-to-know: a reader of record 0 holds record 1's leaf hash in its proof, but hashing
    a right guess of record 1 (its exact value) does not give that hash without record 1's
    salt, which only record 1 carries."""
    signed = sign_chunk(signer, values(2))
    sibling_hash = header(signed[0], "planr-proof")[SALT + 1 : SALT + 33]
    right_guess = b"planr-bus/v1\x00" + TOPIC.encode() + b"\x00" + KEY_ID.encode() + b"\x00v-1"
    assert sibling_hash not in {sha(b"\x00", right_guess), sha(b"\x00", bytes(SALT), right_guess)}
    assert sibling_hash == leaf(TOPIC, b"v-1", header(signed[1], "planr-proof")[:SALT])


def test_legacy_single_signatures_still_verify_next_to_chunks(raw_keys, registry, signer):
    message = b"planr-bus/v1\x00" + TOPIC.encode() + b"\x00" + KEY_ID.encode() + b"\x00old"
    legacy = [("planr-key-id", KEY_ID.encode()), ("planr-sig", raw_keys["vsse"].sign(message))]
    chunk = sign_chunk(signer, values(3))
    assert verify_record(registry, TOPIC, b"old", legacy, at=NOW) == "vsse"
    assert verify_record(registry, TOPIC, b"v-1", chunk[1], at=NOW) == "vsse"
    assert verify_record(registry, TOPIC, b"old", sign_headers(signer, TOPIC, b"old"), at=NOW)


# --- what is refused ---------------------------------------------------------------------


def test_tampered_value_of_one_record_is_refused_and_its_neighbours_still_verify(
    registry, signer
):
    records = values(8)
    signed = sign_chunk(signer, records)
    assert refused(registry, TOPIC, b"v-3!", signed[3]) == "bad_signature"
    for i in (2, 4):
        assert verify_record(registry, TOPIC, records[i][1], signed[i], at=NOW)


def test_record_moved_to_another_topic_is_refused(registry, signer):
    signed = sign_chunk(signer, values(4))
    assert refused(registry, OTHER_TOPIC, b"v-0", signed[0], owner=None) == "bad_signature"


def test_key_id_of_a_chunk_changed_to_another_key_of_the_owner_is_refused(registry, signer):
    signed = sign_chunk(signer, values(4))
    moved = replace(signed[0], "planr-key-id", b"vsse-2026-02")
    assert refused(registry, TOPIC, b"v-0", moved) == "bad_signature"


def test_tampered_signature_is_refused(registry, signer):
    signed = sign_chunk(signer, values(4))
    sig = bytearray(header(signed[0], "planr-sig"))
    sig[10] ^= 1
    assert refused(registry, TOPIC, b"v-0", replace(signed[0], "planr-sig", bytes(sig))) == (
        "bad_signature")


def _proof_variants(whole: bytes) -> dict[str, bytes]:
    """Tampered audit paths (after the salt), and a tampered or missing salt."""
    salt, proof = whole[:SALT], whole[SALT:]
    steps = [proof[i : i + 33] for i in range(0, len(proof), 33)]
    flipped_hash = bytearray(proof)
    flipped_hash[5] ^= 0x80
    other_direction = bytes([0x4C if proof[0] == 0x52 else 0x52]) + proof[1:]
    variants = {
        "sibling-bit-flipped": bytes(flipped_hash),
        "direction-swapped": other_direction,
        "unknown-direction": b"X" + proof[1:],
        "steps-reordered": b"".join([steps[1], steps[0], *steps[2:]]),
        "last-step-dropped": b"".join(steps[:-1]),
        "first-step-dropped": b"".join(steps[1:]),
        "one-byte-short": proof[:-1],
        "one-byte-long": proof + b"\x00",
        "step-repeated": proof + steps[-1],
        "empty": b"",
        "too-deep": b"R" + b"\x00" * 32 + proof[33:] + (b"R" + b"\x00" * 32) * 16,
    }
    tampered = {name: salt + path for name, path in variants.items()}
    return tampered | {
        "salt-bit-flipped": bytes([salt[0] ^ 1]) + salt[1:] + proof,
        "salt-missing": proof,
        "salt-only": salt,
        "salt-one-byte-short": salt[1:],
        "nothing": b"",
    }


@pytest.mark.parametrize("variant", list(_proof_variants(b"s" * SALT + b"R" * 99)))
def test_tampered_or_truncated_proof_is_refused(registry, signer, variant):
    records = values(8)
    signed = sign_chunk(signer, records)
    assert verify_record(registry, TOPIC, b"v-5", signed[5], at=NOW)  # the root is now cached
    bad = _proof_variants(header(signed[5], "planr-proof"))[variant]
    assert refused(registry, TOPIC, b"v-5", replace(signed[5], "planr-proof", bad)) == (
        "bad_signature")


def test_proof_of_the_same_position_in_another_chunk_is_refused(registry, signer):
    first, second = sign_chunk(signer, values(8, b"a")), sign_chunk(signer, values(8, b"b"))
    assert verify_record(registry, TOPIC, b"b-2", second[2], at=NOW)
    foreign_proof = replace(first[2], "planr-proof", header(second[2], "planr-proof"))
    assert refused(registry, TOPIC, b"a-2", foreign_proof) == "bad_signature"
    foreign_sig = replace(first[2], "planr-sig", header(second[2], "planr-sig"))
    assert refused(registry, TOPIC, b"a-2", foreign_sig) == "bad_signature"


def test_proof_of_another_record_of_the_same_chunk_is_refused(registry, signer):
    signed = sign_chunk(signer, values(8))
    swapped = replace(signed[1], "planr-proof", header(signed[6], "planr-proof"))
    assert refused(registry, TOPIC, b"v-1", swapped) == "bad_signature"


def test_root_signature_never_passes_for_a_single_signature_nor_the_reverse(registry, signer):
    signed = sign_chunk(signer, values(2))
    without_proof = [(k, v) for k, v in signed[0] if k != "planr-proof"]
    assert refused(registry, TOPIC, b"v-0", without_proof) == "bad_signature"
    single = sign_headers(signer, TOPIC, b"v-0")
    assert refused(registry, TOPIC, b"v-0", [*single, ("planr-proof", b"")]) == "bad_signature"


@pytest.mark.parametrize("proofs", [[None], [b"", b""]], ids=["null", "repeated"])
def test_malformed_proof_header_is_a_bad_signature(registry, signer, proofs):
    single = sign_headers(signer, TOPIC, b"v")
    headers = [*single, *(("planr-proof", p) for p in proofs)]
    assert refused(registry, TOPIC, b"v", headers) == "bad_signature"


# --- the cache ---------------------------------------------------------------------------


def test_one_ed25519_check_serves_a_whole_chunk(registry, signer, ed25519_checks):
    records = values(32)
    signed = sign_chunk(signer, records)
    for (topic, value), headers in zip(records, signed, strict=True):
        verify_record(registry, topic, value, headers, at=NOW, expected_owner="vsse")
    assert len(ed25519_checks) == 1
    assert ed25519_checks[0].startswith(b"planr-bus/v1/root\x00")


def test_a_cached_root_still_needs_the_key_valid_at_the_time_of_the_check(registry, signer):
    signed = sign_chunk(signer, values(4))
    assert verify_record(registry, TOPIC, b"v-0", signed[0], at=NOW)
    assert refused(registry, TOPIC, b"v-1", signed[1], at=T1) == "expired_key"
    assert refused(registry, TOPIC, b"v-0", signed[0], at=T0 - timedelta(seconds=1)) == (
        "expired_key")


def test_a_cached_root_still_needs_the_expected_owner(registry, signer):
    signed = sign_chunk(signer, values(4))
    assert verify_record(registry, TOPIC, b"v-0", signed[0], at=NOW, expected_owner="vsse")
    assert refused(registry, TOPIC, b"v-1", signed[1], owner="router") == "wrong_signer"


def test_a_failed_check_is_not_cached(registry, signer, ed25519_checks):
    signed = sign_chunk(signer, values(4))
    bad_sig = bytes(64)
    assert refused(registry, TOPIC, b"v-0", replace(signed[0], "planr-sig", bad_sig)) == (
        "bad_signature")
    assert refused(registry, TOPIC, b"v-1", replace(signed[1], "planr-sig", bad_sig)) == (
        "bad_signature")
    assert len(ed25519_checks) == 2


def test_the_cache_is_bounded_and_forgets_the_least_recently_used_root(raw_keys, signer,
                                                                       ed25519_checks):
    registry = KeyRegistry([entry(KEY_ID, "vsse", raw_keys["vsse"])], verified_roots=2)
    chunks = [sign_chunk(signer, values(2, tag)) for tag in (b"a", b"b", b"c")]
    for tag, chunk in zip((b"a", b"b", b"c"), chunks, strict=True):
        verify_record(registry, TOPIC, tag + b"-0", chunk[0], at=NOW)
    assert len(ed25519_checks) == 3
    verify_record(registry, TOPIC, b"c-1", chunks[2][1], at=NOW)  # still remembered
    assert len(ed25519_checks) == 3
    verify_record(registry, TOPIC, b"a-1", chunks[0][1], at=NOW)  # forgotten: checked again
    assert len(ed25519_checks) == 4


def test_a_registry_without_a_cache_checks_every_record(raw_keys, signer, ed25519_checks):
    registry = KeyRegistry([entry(KEY_ID, "vsse", raw_keys["vsse"])], verified_roots=0)
    signed = sign_chunk(signer, values(3))
    for i, headers in enumerate(signed):
        verify_record(registry, TOPIC, b"v-%d" % i, headers, at=NOW)
    assert len(ed25519_checks) == 3


def test_bad_tree_sizes_and_cache_sizes_are_usage_errors():
    with pytest.raises(UsageError, match="1 to 65536 leaves"):
        merkle.build([])
    with pytest.raises(UsageError, match="verified_roots"):
        KeyRegistry([], verified_roots=-1)


# --- partitioning ------------------------------------------------------------------------


def test_partition_hash_is_the_java_clients_murmur2():
    # Kafka's own test vectors (Utils.murmur2), as signed 32-bit ints
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829, b"abc": 479470107,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    for key, java in vectors.items():
        assert partition_hash(key) == java & 0x7FFFFFFF
    for size in range(70):
        key = os.urandom(size)
        assert partition_hash(key) == murmur2(key) & 0x7FFFFFFF


def test_a_leaf_from_a_shared_head_and_a_value_is_the_leaf_of_their_concatenation():
    salt = os.urandom(merkle.SALT_BYTES)
    head, tail = b"planr-bus/v1\x00topic\x00key\x00", b"value bytes"
    expected = hashlib.sha256(b"\x00" + salt + head + tail).digest()  # the documented leaf
    assert merkle.leaf_hash_parts(salt, head, tail) == expected
    assert merkle.leaf_hash(salt, head + tail) == expected
    with pytest.raises(UsageError):
        merkle.leaf_hash_parts(salt[:-1], head, tail)


def test_salts_drawn_in_one_call_are_as_many_distinct_full_length_salts():
    salts = merkle.new_salts(64)
    assert len(salts) == 64
    assert {len(s) for s in salts} == {merkle.SALT_BYTES}
    assert len(set(salts)) == 64
