"""Records put together from parts encoded separately, every part by fastavro.

Avro's binary encoding of a record is the concatenation of its fields' encodings, in the
schema's order, with nothing between them; an array is a count, its items and a zero count.
So a record can be assembled from *runs* of consecutive fields, each run encoded by fastavro
against a record schema made of just those fields, and a run whose values repeat from one
record to the next (a decision's recipient and rules, a batch's policy version and time) is
encoded once and its bytes reused. The router writes its audit records and deliveries this
way (:mod:`routing.encoders`); the bytes are identical to fastavro's encoding of the whole
record, which the tests check on generated records.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from fastavro import parse_schema, schemaless_writer

from planr.errors import EncodeError, UsageError
from schemas.codec import MAGIC, KnownSchema

#: The zero count that closes an array (an empty array is only this).
ARRAY_END = b"\x00"


def _encode(schema: Any, value: Any) -> bytes:
    out = io.BytesIO()
    try:
        schemaless_writer(out, schema, value)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # fastavro's message may quote the value: keep only the schema and the error type
        name = schema.get("name", "value") if isinstance(schema, dict) else schema
        raise EncodeError(f"record does not fit {name} ({type(exc).__name__})") from None
    return out.getvalue()


_COUNT = parse_schema("long")


def array_count(n: int) -> bytes:
    """The block count that opens an array of ``n`` items (``n`` > 0), as fastavro writes it:
    one block holding every item, closed by :data:`ARRAY_END`."""
    if n < 1:
        raise UsageError(f"an array block holds at least one item, not {n}")
    return _encode(_COUNT, n)


class Runs:
    """A record schema's fields in consecutive runs, each encodable on its own.

    ``record`` is a parsed record schema (a :class:`KnownSchema`'s ``parsed``, or a nested
    record of it), ``named`` the named types it may refer to, ``runs`` its field names in
    schema order, grouped: every field exactly once, in order (else :class:`UsageError`).
    """

    def __init__(self, record: Mapping[str, Any], named: Mapping[str, Any],
                 runs: Sequence[Sequence[str]]) -> None:
        fields = {f["name"]: f for f in record["fields"]}
        flat = [name for run in runs for name in run]
        if flat != list(fields):
            raise UsageError(f"runs of {record['name']} must list its fields in order: "
                             f"{list(fields)}, not {flat}")
        self.name = str(record["name"])
        self._schemas = [
            parse_schema({"type": "record", "name": f"{self.name}__run{i}",
                          "fields": [fields[name] for name in run]},
                         named_schemas=dict(named))
            for i, run in enumerate(runs)
        ]

    def encode(self, run: int, values: Mapping[str, Any]) -> bytes:
        """The encoding of run ``run``'s fields, taken from ``values``."""
        return _encode(self._schemas[run], values)

    @classmethod
    def of(cls, known: KnownSchema, runs: Sequence[Sequence[str]], *,
           nested: Sequence[str] = ()) -> Runs:
        """Runs of ``known``'s record, or of the record an array field names: ``nested`` is
        the path of array fields leading to it (``("decisions",)``: its items)."""
        record: Mapping[str, Any] = known.parsed
        for field in nested:
            found = [f for f in record["fields"] if f["name"] == field]
            if not found or not isinstance(found[0]["type"], dict) \
                    or found[0]["type"].get("type") != "array":
                raise UsageError(f"{record['name']} has no array field {field}")
            record = found[0]["type"]["items"]
        return cls(record, known.parsed.get("__named_schemas", {}), runs)


def single_object(known: KnownSchema, body: bytes) -> bytes:
    """``body`` (a record's encoding) framed as Avro single-object encoding: the marker and
    the writer schema's fingerprint first, as :meth:`schemas.codec.Codec.encode` writes it."""
    return MAGIC + known.fingerprint + body
