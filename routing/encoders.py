"""The router's audit records and deliveries, encoded from reusable parts.

Most of an audit record or a delivery repeats from one signal to the next: a candidate's
recipient, outcome and rules recur for every signal that candidate is decided on, a view's
name for every delivery of that view, the policy version and the batch's time for a whole
batch. Encoding them once (:mod:`schemas.splice`) and joining the bytes costs a fraction of
encoding every record whole: the bytes are the same as fastavro's encoding of the records
:func:`routing.outputs.audit` and :func:`routing.outputs.envelope` build (the tests check it).
"""

from __future__ import annotations

from collections.abc import Sequence

from routing.engine import Decision
from routing.outputs import Stamp
from schemas.codec import Codec
from schemas.names import DELIVERY, ROUTING_DECISION
from schemas.splice import ARRAY_END, Runs, array_count, single_object

#: Bound on each memo of repeated parts (candidates x outcomes x rule lists is small; the bound
#: only guards against a pathological policy).
MEMO_LIMIT = 50_000

_DecisionKey = tuple[str, bool, str, tuple[str, ...]]


def _key(d: Decision) -> _DecisionKey:
    return (d.recipient_id, d.allowed, d.rule, d.rules)


class _Memo(dict[object, bytes]):
    def put(self, key: object, value: bytes) -> bytes:
        if len(self) >= MEMO_LIMIT:
            self.clear()
        self[key] = value
        return value


class AuditEncoder:
    """Encode a signal's ``RoutingDecision`` (one record, every candidate's decision)."""

    def __init__(self, codec: Codec) -> None:
        self._known = known = codec.store.current(ROUTING_DECISION)
        self._top = Runs.of(known, [("event_id", "agency", "version"),
                                    ("policy_version", "decided_at"),
                                    ("recipient", "outcome", "rule", "rules", "delivery_id"),
                                    ("decisions",)])
        self._item = Runs.of(known, [("recipient", "outcome", "rule", "rules"),
                                     ("delivery_id",), ("view",)], nested=("decisions",))
        # a per-signal record leaves the per-candidate fields of the old form empty
        self._legacy = self._top.encode(2, {"recipient": None, "outcome": None, "rule": None,
                                            "rules": [], "delivery_id": None})
        self._no_delivery = self._item.encode(1, {"delivery_id": None})
        self._heads = _Memo()
        self._views = _Memo()
        self._counts = _Memo()
        self._batch = _Memo()

    def encode(self, decisions: Sequence[Decision], delivery_ids: Sequence[str | None], *,
               event_id: str, agency: str, version: int, policy_version: str,
               decided_at: Stamp) -> bytes:
        parts = [self._top.encode(0, {"event_id": event_id, "agency": agency,
                                      "version": version}),
                 self._batch_part(policy_version, decided_at), self._legacy]
        if decisions:
            parts.append(self._count(len(decisions)))
            for d, did in zip(decisions, delivery_ids, strict=True):
                parts.append(self._head(d))
                parts.append(self._no_delivery if did is None
                             else self._item.encode(1, {"delivery_id": did}))
                parts.append(self._view(d.view))
        parts.append(ARRAY_END)
        return single_object(self._known, b"".join(parts))

    def _batch_part(self, policy_version: str, decided_at: Stamp) -> bytes:
        key = (policy_version, decided_at)
        return self._batch.get(key) or self._batch.put(key, self._top.encode(
            1, {"policy_version": policy_version, "decided_at": decided_at}))

    def _count(self, n: int) -> bytes:
        return self._counts.get(n) or self._counts.put(n, array_count(n))

    def _head(self, d: Decision) -> bytes:
        key = _key(d)
        return self._heads.get(key) or self._heads.put(key, self._item.encode(0, {
            "recipient": d.recipient_id, "outcome": "allow" if d.allowed else "deny",
            "rule": d.rule, "rules": list(d.rules)}))

    def _view(self, view: str) -> bytes:
        return self._views.get(view) or self._views.put(view, self._item.encode(2, {"view": view}))


class DeliveryEncoder:
    """Encode the ``Delivery`` of an allowed decision."""

    def __init__(self, codec: Codec) -> None:
        self._known = known = codec.store.current(DELIVERY)
        self._runs = Runs.of(known, [("delivery_id", "event_id"), ("recipient", "rule", "rules"),
                                     ("policy_version", "routed_at"), ("view",),
                                     ("payload", "version")])
        self._heads = _Memo()
        self._views = _Memo()
        self._batch = _Memo()

    def body(self, payload: bytes, version: int) -> bytes:
        """The part every delivery of one view of one signal version shares (the payload):
        encode it once per signal and view and pass it to :meth:`encode`."""
        return self._runs.encode(4, {"payload": payload, "version": version})

    def encode(self, d: Decision, *, delivery: str, event_id: str, policy_version: str,
               routed_at: Stamp, body: bytes) -> bytes:
        key = _key(d)
        head = self._heads.get(key) or self._heads.put(key, self._runs.encode(1, {
            "recipient": d.recipient_id, "rule": d.rule, "rules": list(d.rules)}))
        stamp = (policy_version, routed_at)
        batch = self._batch.get(stamp) or self._batch.put(stamp, self._runs.encode(2, {
            "policy_version": policy_version, "routed_at": routed_at}))
        view = self._views.get(d.view) or self._views.put(d.view, self._runs.encode(
            3, {"view": d.view}))
        ids = self._runs.encode(0, {"delivery_id": delivery, "event_id": event_id})
        return single_object(self._known, b"".join((ids, head, batch, view, body)))
