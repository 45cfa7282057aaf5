"""Event identity: an event is (agency, event id). The same id arriving again with the same
content is a duplicate (a replay, a retried publish) and is skipped; with other content it is a
conflict: dead-lettered as ``event_id_conflict`` and counted, never a silent skip.

"Content" is what the recipient sees (its view of the signal) less ``published_at``, which a
retried publish renews. The fingerprint is a SHA-256 over a canonical JSON form, so that it
does not depend on Avro schema versions or field order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

CONFLICT = "event_id_conflict"
#: Fields that change between two publications of the same content.
_VOLATILE = frozenset({"published_at"})


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


#: ``json.dumps(..., sort_keys=True, separators=(",", ":"), default=_plain)``, built once:
#: ``json.dumps`` with options builds an encoder per call (half the cost of a fingerprint).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_plain)


def content_fingerprint(view: Mapping[str, Any]) -> str:
    """The fingerprint of a decoded view record (hex SHA-256)."""
    stable = {k: v for k, v in view.items() if k not in _VOLATILE}
    return hashlib.sha256(_CANONICAL.encode(stable).encode()).hexdigest()


def same_event(stored_hash: str | None, new_hash: str) -> bool:
    """Whether a stored event and a new arrival with the same id are the same content. A row
    written before fingerprints existed has none: it counts as the same (a replay)."""
    return stored_hash is None or stored_hash == new_hash
