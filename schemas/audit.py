"""Reading the routing audit: a ``RoutingDecision`` record lists the decisions taken for one
version of a signal, one entry per candidate recipient; a record written before that (one
record per candidate, ``schemas/avro/superseded/routing_decision-v1/-v2``) carries its single
decision in top-level fields. :func:`candidate_decisions` gives both as per-candidate rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: what every row carries from the record itself
_SHARED = ("event_id", "agency", "version", "policy_version", "decided_at")


def candidate_decisions(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per candidate decision of a decoded ``RoutingDecision`` (any writer version):
    the record's event id, agency, version, policy version and decision time, with the
    candidate's recipient, outcome, rule, rules, delivery id and view (``None`` in a record
    written before views were audited)."""
    shared = {k: record[k] for k in _SHARED}
    entries = record.get("decisions") or []
    if not entries and record.get("recipient") is not None:  # an older, per-candidate record
        entries = [{"recipient": record["recipient"], "outcome": record["outcome"],
                    "rule": record["rule"], "rules": record["rules"],
                    "delivery_id": record["delivery_id"], "view": None}]
    return [{**shared, **entry} for entry in entries]
