"""Signed records: Ed25519 signatures in Kafka record headers.

A signed record carries ``planr-key-id`` (the UTF-8 key id) and ``planr-sig`` (a raw 64-byte
Ed25519 signature). Records carry key ids only, never key material. Every record is bound
to its topic, key id and value by its *record message*::

    b"planr-bus/v1\\x00" + topic + b"\\x00" + key_id + b"\\x00" + value

Key ids and topic names cannot contain NUL, which keeps the encoding unambiguous. A record
comes in one of two forms:

- **single**: no ``planr-proof`` header; ``planr-sig`` signs the record message itself.
- **chunk**: a producer signs up to a few dozen records with one signature
  (:func:`sign_chunk`). Each record message, salted, is a leaf of a hash tree
  (:mod:`planr.merkle`); ``planr-sig`` signs the *root message*
  ``b"planr-bus/v1/root\\x00" + key_id + b"\\x00" + root``, and ``planr-proof`` holds the
  record's salt and its audit path to the root. The two domains differ at their 13th byte,
  so a root signature can never pass for a single-record signature, nor the reverse. A
  chunk of one record is signed in the single form.

A reader recomputes the root from the record and its proof and checks the root signature;
:class:`KeyRegistry` remembers the roots it verified (bounded, least recently used first),
so one Ed25519 check serves a whole chunk. Only that cryptographic check is remembered: the
key's validity and owner are checked for every record.

A failed check raises :class:`SignatureError`: ``reason`` is always ``"unauthenticated"``
(the dead-letter reason and metric label), ``detail_reason`` says why.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from planr import merkle
from planr.errors import PlanrError, UsageError
from planr.keyfiles import (
    KEY_ID_PATTERN,
    OWNER_PATTERN,
    KeyEntry,
    load_registry,
    read_private_key,
    valid_key_id,
    valid_owner,
)

HEADER_KEY_ID: Final = "planr-key-id"
HEADER_SIGNATURE: Final = "planr-sig"
HEADER_PROOF: Final = "planr-proof"
DOMAIN: Final = b"planr-bus/v1\x00"
ROOT_DOMAIN: Final = b"planr-bus/v1/root\x00"
SIGNATURE_BYTES: Final = 64
#: How many verified (key id, root, signature) triples a registry remembers.
VERIFIED_ROOTS: Final = 4096

#: Key owners of the bus's own services; an agency's keys are owned by its agency id.
ROUTER: Final = "router"
PROJECTOR: Final = "projector"
INBOXES: Final = "inboxes"
AGGREGATOR: Final = "aggregator"
SERVICE_OWNERS: Final = (ROUTER, PROJECTOR, INBOXES, AGGREGATOR)

DetailReason = Literal["unsigned", "unknown_key", "expired_key", "bad_signature", "wrong_signer"]
Headers = Sequence[tuple[str, bytes | None]]


class SignatureError(PlanrError):
    """A record that is not authentically signed by an acceptable, valid key.

    ``reason`` is ``"unauthenticated"`` for every failure; ``detail_reason`` is one of
    ``unsigned``, ``unknown_key``, ``expired_key``, ``bad_signature``, ``wrong_signer``;
    ``key_id`` is the claimed key id when it is well formed (else ``None``).
    """

    reason = "unauthenticated"

    def __init__(
        self, message: str, *, detail_reason: DetailReason, key_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.detail_reason: DetailReason = detail_reason
        self.key_id = key_id

    @property
    def detail(self) -> str:
        """Text for the dead-letter ``detail`` field: the sub-reason and the key id."""
        return self.detail_reason + (f" key_id={self.key_id}" if self.key_id else "")


def signed_message(topic: str, key_id: str, value: bytes) -> bytes:
    """The exact bytes that are signed for ``value`` on ``topic`` under ``key_id``."""
    if "\x00" in topic or "\x00" in key_id:
        raise UsageError("topic and key id must not contain NUL")
    return DOMAIN + topic.encode() + b"\x00" + key_id.encode() + b"\x00" + value


def root_message(key_id: str, root: bytes) -> bytes:
    """The exact bytes that are signed for the hash-tree ``root`` of a chunk under ``key_id``."""
    if "\x00" in key_id or len(root) != merkle.HASH_BYTES:
        raise UsageError(f"root message needs a key id without NUL and a "
                         f"{merkle.HASH_BYTES}-byte root")
    return ROOT_DOMAIN + key_id.encode() + b"\x00" + root


class Signer:
    """An Ed25519 private key with its key id and owner (an agency id, or ``router``).

    The key itself is never shown: ``repr``/``str`` give the owner and key id only.
    """

    __slots__ = ("_key", "_public", "key_id", "owner")

    def __init__(self, private_key: Ed25519PrivateKey, *, key_id: str, owner: str) -> None:
        if not valid_key_id(key_id):
            raise UsageError(f"key_id: {key_id!r} does not match {KEY_ID_PATTERN}")
        if not valid_owner(owner):
            raise UsageError(f"owner: {owner!r} does not match {OWNER_PATTERN}")
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id
        self.owner = owner

    @classmethod
    def from_file(cls, path: Path, *, owner: str, key_id: str | None = None) -> Signer:
        """Load ``path`` (PEM PKCS#8, mode without group/other bits).

        ``key_id`` defaults to the file name without ``.pem``, as written by
        :func:`planr.keyfiles.generate_key`.
        """
        return cls(read_private_key(path), key_id=key_id or path.stem, owner=owner)

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key (public; safe to show)."""
        return self._public

    def sign(self, topic: str, value: bytes) -> bytes:
        """The 64-byte signature of ``value`` on ``topic``."""
        return self._key.sign(signed_message(topic, self.key_id, value))

    def sign_root(self, root: bytes) -> bytes:
        """The 64-byte signature of a chunk's hash-tree ``root``."""
        return self._key.sign(root_message(self.key_id, root))

    def __repr__(self) -> str:
        return f"Signer(owner={self.owner!r}, key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Signer holds a private key and cannot be pickled")


def sign_headers(signer: Signer, topic: str, value: bytes) -> list[tuple[str, bytes]]:
    """The headers to add to a record of ``value`` produced to ``topic``."""
    return [
        (HEADER_KEY_ID, signer.key_id.encode()),
        (HEADER_SIGNATURE, signer.sign(topic, value)),
    ]


def sign_chunk(
    signer: Signer, records: Sequence[tuple[str, bytes]]
) -> list[list[tuple[str, bytes]]]:
    """The signature headers of each ``(topic, value)`` of a chunk, in order, with one
    Ed25519 signature: each record gets the root's signature and its own ``planr-proof``.
    A chunk of one record is signed in the single form (:func:`sign_headers`)."""
    if len(records) == 1:
        topic, value = records[0]
        return [sign_headers(signer, topic, value)]
    key_id = signer.key_id
    salts = merkle.new_salts(len(records))
    heads: dict[str, bytes] = {}  # per topic: the signed message before the value
    for topic, _ in records:
        if topic not in heads:
            heads[topic] = signed_message(topic, key_id, b"")
    root, paths = merkle.build([merkle.leaf_hash_parts(salt, heads[topic], value)
                                for salt, (topic, value) in zip(salts, records, strict=True)])
    signature = signer.sign_root(root)
    raw_id = key_id.encode()
    return [[(HEADER_KEY_ID, raw_id), (HEADER_SIGNATURE, signature), (HEADER_PROOF, salt + path)]
            for salt, path in zip(salts, paths, strict=True)]


@dataclass(frozen=True, slots=True)
class _Key:
    entry: KeyEntry
    public: VerifyKey


class KeyRegistry:
    """The public keys of the bus, by key id; public key objects are built once and cached.

    It also remembers the last ``verified_roots`` chunk signatures it checked successfully
    (key id, root, signature), so the other records of a chunk cost hashes only.
    """

    def __init__(self, entries: Iterable[KeyEntry], *,
                 verified_roots: int = VERIFIED_ROOTS) -> None:
        if verified_roots < 0:
            raise UsageError("verified_roots: must not be negative")
        self._verified: OrderedDict[tuple[str, bytes, bytes], None] = OrderedDict()
        self._verified_max = verified_roots
        self._keys: dict[str, _Key] = {}
        for entry in entries:
            if entry.id in self._keys:
                raise UsageError(f"key registry: duplicate key id {entry.id}")
            try:
                Ed25519PublicKey.from_public_bytes(entry.public_bytes)
            except ValueError:
                raise UsageError(f"key registry: key {entry.id}: invalid public key") from None
            self._keys[entry.id] = _Key(entry, VerifyKey(entry.public_bytes))

    @classmethod
    def load(cls, path: Path) -> KeyRegistry:
        """Read a registry file (see :mod:`planr.keyfiles`)."""
        return cls(load_registry(path))

    @property
    def entries(self) -> list[KeyEntry]:
        return [key.entry for key in self._keys.values()]

    def get(self, key_id: str) -> KeyEntry | None:
        key = self._keys.get(key_id)
        return key.entry if key is not None else None

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRegistry({len(self._keys)} keys)"

    def __reduce__(self) -> tuple[type[KeyRegistry], tuple[list[KeyEntry]], dict[str, int]]:
        # pickled as its public entries, no remembered roots (consumers.checking's process)
        return KeyRegistry, (self.entries,), {"_verified_max": self._verified_max}

    def check_signer(self, signer: Signer, *, at: datetime) -> None:
        """Refuse (UsageError) a signer whose key is not registered for it and valid at ``at``.

        Meant for start-up: a producer or router learns at once that its records would be
        dead-lettered, instead of after the first publication.
        """
        key = self._keys.get(signer.key_id)
        if key is None:
            raise UsageError(f"key {signer.key_id} is not in the key registry")
        if key.entry.owner != signer.owner:
            raise UsageError(
                f"key {signer.key_id} is registered for {key.entry.owner}, not {signer.owner}"
            )
        if key.entry.public_bytes != signer.public_bytes:
            raise UsageError(f"key {signer.key_id}: private key does not match the registry")
        if not key.entry.valid_at(at):
            raise UsageError(f"key {signer.key_id} is not valid at {at.isoformat()}")

    def verify(
        self,
        topic: str,
        value: bytes,
        headers: Headers | None,
        *,
        at: datetime,
        expected_owner: str | None = None,
    ) -> str:
        """See :func:`verify_record`."""
        if at.tzinfo is None:
            raise UsageError("signature check needs a timezone-aware time")
        key_id, signature, proof = _signature_headers(headers)
        key = self._keys.get(key_id)
        if key is None:
            raise SignatureError(
                f"unknown signing key {key_id}", detail_reason="unknown_key", key_id=key_id
            )
        owner = key.entry.owner
        if expected_owner is not None and owner != expected_owner:
            raise SignatureError(
                f"key {key_id} belongs to {owner}, expected {expected_owner}",
                detail_reason="wrong_signer",
                key_id=key_id,
            )
        if not key.entry.valid_at(at):
            raise SignatureError(
                f"key {key_id} is not valid at {at.isoformat()}",
                detail_reason="expired_key",
                key_id=key_id,
            )
        message = signed_message(topic, key_id, value)
        if proof is None:
            ok = _verifies(key.public, signature, message)
        else:
            ok = self._verify_root(key, key_id, signature, message, proof)
        if not ok:
            raise SignatureError(
                f"signature by key {key_id} does not verify",
                detail_reason="bad_signature",
                key_id=key_id,
            )
        return owner

    def _verify_root(self, key: _Key, key_id: str, signature: bytes, message: bytes,
                     proof: bytes) -> bool:
        """Whether ``proof`` leads from ``message`` to a root that ``signature`` signs; a root
        verified before is taken from the cache (only the cryptographic check is saved)."""
        parts = merkle.split_proof(proof)
        root = parts and merkle.root_of(merkle.leaf_hash(parts[0], message), parts[1])
        if root is None:
            return False
        seen = (key_id, root, signature)
        if seen in self._verified:
            self._verified.move_to_end(seen)
            return True
        if not _verifies(key.public, signature, root_message(key_id, root)):
            return False
        if self._verified_max:
            self._verified[seen] = None
            if len(self._verified) > self._verified_max:
                self._verified.popitem(last=False)
        return True


def _verifies(public: VerifyKey, signature: bytes, message: bytes) -> bool:
    """Ed25519 (RFC 8032) by libsodium, about twice as fast as OpenSSL's on this bus's
    machines (docs/benchmarks.md); it also refuses small-order keys and non-canonical
    signatures."""
    if len(signature) != 64:  # libsodium raises on a wrong length; it is just a bad signature
        return False
    try:
        public.verify(message, signature)
    except CryptoError:
        return False
    return True


def _signature_headers(headers: Headers | None) -> tuple[str, bytes, bytes | None]:
    """The key id, signature and proof (``None``: single form) of a record; unsigned or
    malformed headers raise."""
    raw_ids: list[bytes | None] = []
    sigs: list[bytes | None] = []
    proofs: list[bytes | None] = []
    for name, raw in headers or ():
        if name == HEADER_KEY_ID:
            raw_ids.append(raw)
        elif name == HEADER_SIGNATURE:
            sigs.append(raw)
        elif name == HEADER_PROOF:
            proofs.append(raw)
    if not raw_ids or not sigs or raw_ids[0] is None or sigs[0] is None:
        raise SignatureError("record is not signed", detail_reason="unsigned")
    if len(raw_ids) > 1 or len(sigs) > 1:
        raise SignatureError("record has repeated signature headers",
                             detail_reason="bad_signature")
    try:
        key_id = raw_ids[0].decode("utf-8")
    except UnicodeDecodeError:
        key_id = ""
    if not valid_key_id(key_id):
        raise SignatureError("record names a malformed key id", detail_reason="unknown_key")
    if len(sigs[0]) != SIGNATURE_BYTES:
        raise SignatureError(
            f"signature by key {key_id} is not {SIGNATURE_BYTES} bytes",
            detail_reason="bad_signature",
            key_id=key_id,
        )
    if len(proofs) > 1 or (proofs and proofs[0] is None):
        raise SignatureError(f"record signed by key {key_id} has a malformed proof",
                             detail_reason="bad_signature", key_id=key_id)
    return key_id, sigs[0], proofs[0] if proofs else None


def verify_record(
    registry: KeyRegistry,
    topic: str,
    value: bytes,
    headers: Headers | None,
    *,
    at: datetime,
    expected_owner: str | None = None,
) -> str:
    """Check the signature of a record; return the owner of the signing key.

    ``at`` (timezone-aware) is the time the key must be valid at; ``expected_owner``, when
    given, is the only acceptable owner (e.g. the agency of an ingress topic, or ``router``
    for deliveries). Raises :class:`SignatureError` otherwise. Cheap checks (headers, key
    id, owner, validity) come before the signature check, for every record: for a record of
    a chunk whose root the registry verified before, only the hashes are recomputed.
    """
    return registry.verify(topic, value, headers, at=at, expected_owner=expected_owner)
