"""Minimised views: each recipient class sees only the fields its view lists.

A view named ``csilr`` is encoded with ``schemas/avro/views/csilr.avsc`` (record
``be.planr.view.CsilrView``); the policy's field list and the schema's fields must agree,
which :class:`Views` checks when it is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from planr.errors import PolicyError
from routing.policy import AGGREGATE, Policy
from schemas.codec import Codec, KnownSchema
from schemas.names import view_schema_name


class Views:
    """Reduce a decoded signal to a view and encode it with the view's schema."""

    def __init__(self, policy: Policy, codec: Codec) -> None:
        self._codec = codec
        self._fields: dict[str, tuple[str, ...]] = {}
        self._schemas: dict[str, KnownSchema] = {}
        self.aggregate_views: frozenset[str] = frozenset(
            name for name, fields in policy.document.views.items() if fields == AGGREGATE
        )
        for name, fields in policy.document.views.items():
            if fields == AGGREGATE:
                continue
            schema_name = view_schema_name(name)
            try:
                known = codec.store.current(schema_name)
            except Exception:  # noqa: BLE001 - any lookup failure means the same thing here
                raise PolicyError(
                    f"{policy.where('views', name)}: views.{name}: no schema {schema_name} "
                    f"(schemas/avro/views/{name}.avsc)"
                ) from None
            schema_fields = tuple(f["name"] for f in known.parsed["fields"])
            if set(schema_fields) != set(fields):
                raise PolicyError(
                    f"{policy.where('views', name)}: views.{name}: "
                    f"fields differ from {schema_name}: "
                    f"policy-only {sorted(set(fields) - set(schema_fields))}, "
                    f"schema-only {sorted(set(schema_fields) - set(fields))}"
                )
            self._fields[name] = schema_fields
            self._schemas[name] = known

    def fields(self, view: str) -> tuple[str, ...]:
        return self._fields[view]

    def project(self, view: str, signal: Mapping[str, Any]) -> dict[str, Any]:
        return {f: signal[f] for f in self._fields[view]}

    def render(self, view: str, signal: Mapping[str, Any]) -> bytes:
        return self._codec.encode_with(self._schemas[view], self.project(view, signal))

    def decode(self, view: str, payload: bytes) -> dict[str, Any]:
        return self._codec.decode(payload, self._schemas[view].name)
