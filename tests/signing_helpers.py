"""Keys, registry entries and constants shared by the signing and key-file tests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from planr.keyfiles import KeyEntry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2027, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
TOPIC = "planr.ingress.vsse"
VALUE = b"\x00\x01avro-bytes-of-a-signal"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def entry(key_id: str, owner: str, key: Ed25519PrivateKey, **validity: datetime) -> KeyEntry:
    return KeyEntry(
        id=key_id,
        owner=owner,
        public_key=base64.b64encode(raw_public(key)).decode(),
        valid_from=validity.get("valid_from", T0),
        valid_until=validity.get("valid_until", T1),
    )
