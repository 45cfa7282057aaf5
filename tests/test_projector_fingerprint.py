"""The content fingerprint the projector and the inboxes store (``content_hash``) keeps its
exact value: rows stored by earlier versions are compared with it when an event comes again,
so a change of form would turn every replay into a conflict. The oracle is the canonical
JSON written out by hand (sorted keys, no spaces, times in ISO form, ``published_at`` left
out), then SHA-256."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from planr.identity import content_fingerprint


def test_the_fingerprint_is_the_sha256_of_the_canonical_json_written_by_hand():
    view = {
        "event_id": "e-1", "agency": "vsse",
        "published_at": datetime(2026, 1, 2, tzinfo=UTC),  # volatile: left out
        "occurred_at": datetime(2026, 1, 1, 12, 30, 0, 5, tzinfo=UTC),
        "subject": {"kind": "person", "id": "P-1", "statuses": ["FTF", "HTF"]},
        "location": {"prison": None, "municipality": "21004"},
        "accuracy": 2, "ocam": None, "phenomena": [], "label": "Liège", "raw": b"\x01\xff",
    }
    canonical = (
        '{"accuracy":2,"agency":"vsse","event_id":"e-1","label":"Li\\u00e8ge",'
        '"location":{"municipality":"21004","prison":null},"ocam":null,'
        '"occurred_at":"2026-01-01T12:30:00.000005+00:00","phenomena":[],"raw":"01ff",'
        '"subject":{"id":"P-1","kind":"person","statuses":["FTF","HTF"]}}'
    )
    assert content_fingerprint(view) == hashlib.sha256(canonical.encode()).hexdigest()


def test_the_fingerprint_ignores_the_publication_time_only():
    base = {"event_id": "e-1", "published_at": datetime(2026, 1, 2, tzinfo=UTC), "v": 1}
    later = base | {"published_at": datetime(2026, 1, 3, tzinfo=UTC)}
    assert content_fingerprint(base) == content_fingerprint(later)
    assert content_fingerprint(base) != content_fingerprint(base | {"v": 2})
