"""A compiled Avro binary writer for the schema shapes the bus writes on its hot paths.

:func:`compile_writer` turns a parsed record schema into a function from a record to its Avro
binary body (the same bytes as fastavro's ``schemaless_writer``), built from one closure per
field, so that nothing is looked up or validated generically per value. It handles records,
``null``, ``boolean``, ``int``, ``long`` (and ``timestamp-micros`` from an aware datetime),
``string``, ``bytes``, enums, arrays and ``["null", X]`` unions; for any other schema it
returns ``None``. The compiled function raises :class:`Unsupported` (or any error) on a value
it does not handle plainly; :class:`~schemas.codec.Codec` then encodes that record with
fastavro, which accepts or rejects it as it always did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

Write = Callable[[bytearray, Any], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_MISSING = object()


class Unsupported(Exception):  # noqa: N818 - a signal to fall back, not an error to report
    """A value the compiled writer leaves to the general one."""


def _varint(out: bytearray, n: int) -> None:
    """An unsigned varint (``n`` already zigzag-encoded)."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _integer(bounds: tuple[int, int]) -> Write:
    low, high = bounds

    def write(out: bytearray, v: Any) -> None:
        if type(v) is not int or not low <= v <= high:
            raise Unsupported
        _varint(out, (v << 1) ^ (v >> 63))

    return write


def _string(out: bytearray, v: Any) -> None:
    data = v.encode()  # a non-str raises: the general writer decides
    n = len(data) << 1
    if n < 0x80:
        out.append(n)
    else:
        _varint(out, n)
    out += data


def _bytes(out: bytearray, v: Any) -> None:
    if type(v) is not bytes:
        raise Unsupported
    _varint(out, len(v) << 1)
    out += v


def _boolean(out: bytearray, v: Any) -> None:
    if v is True:
        out.append(1)
    elif v is False:
        out.append(0)
    else:
        raise Unsupported


def _null(_out: bytearray, v: Any) -> None:
    if v is not None:
        raise Unsupported


def _timestamp_micros(out: bytearray, v: Any) -> None:
    if type(v) is not datetime or v.tzinfo is None:
        raise Unsupported
    delta = v - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    _varint(out, (micros << 1) ^ (micros >> 63))


_PRIMITIVES: dict[str, Write] = {
    "null": _null, "boolean": _boolean, "int": _integer(_INT_RANGE),
    "long": _integer(_LONG_RANGE), "string": _string, "bytes": _bytes,
}


def _enum(symbols: list[str]) -> Write:
    index = {s: i << 1 for i, s in enumerate(symbols)}

    def write(out: bytearray, v: Any) -> None:
        _varint(out, index[v])  # an unknown symbol raises KeyError: the general writer decides

    return write


def _array(items: Write) -> Write:
    def write(out: bytearray, v: Any) -> None:
        if type(v) is not list and type(v) is not tuple:
            raise Unsupported
        if v:
            _varint(out, len(v) << 1)
            for item in v:
                items(out, item)
        out.append(0)

    return write


def _optional(inner: Write) -> Write:
    def write(out: bytearray, v: Any) -> None:
        if v is None:
            out.append(0)
        else:
            out.append(2)
            inner(out, v)

    return write


def _record(schema: Mapping[str, Any], named: dict[str, Write]) -> Write:
    fields: list[tuple[str, Any, Write]] = []
    for f in schema["fields"]:
        ftype = f["type"]
        nullable = isinstance(ftype, list) and "null" in ftype
        default = f.get("default", None if nullable else _MISSING)
        fields.append((f["name"], default, _compile(ftype, named)))

    def write(out: bytearray, v: Any) -> None:
        if not isinstance(v, Mapping):
            raise Unsupported
        for name, default, w in fields:
            value = v.get(name, default)
            if value is _MISSING:
                raise Unsupported
            w(out, value)

    return write


def _compile(t: Any, named: dict[str, Write]) -> Write:
    """The writer of one schema node; Unsupported for a shape this module does not handle."""
    if isinstance(t, str):
        found = _PRIMITIVES.get(t) or named.get(t)
        if found is None:
            raise Unsupported
        return found
    if isinstance(t, list):
        if len(t) == 2 and t[0] == "null" and t[1] != "null":
            return _optional(_compile(t[1], named))
        raise Unsupported
    return _compile_complex(t, named)


def _compile_complex(t: Mapping[str, Any], named: dict[str, Write]) -> Write:
    kind = t.get("type")
    if kind == "long" and t.get("logicalType") == "timestamp-micros":
        return _timestamp_micros
    if "logicalType" in t:
        raise Unsupported
    writer: Write | None = None
    if kind == "enum":
        writer = named[t["name"]] = _enum(t["symbols"])
    elif kind == "array":
        writer = _array(_compile(t["items"], named))
    elif kind == "record":
        writer = named[t["name"]] = _record(t, named)
    elif isinstance(kind, str):
        writer = _PRIMITIVES.get(kind)
    if writer is None:
        raise Unsupported
    return writer


def compile_writer(parsed: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bytes] | None:
    """The Avro binary body writer of a parsed record schema, or ``None`` when the schema has
    a shape this module does not handle (the codec then always uses fastavro)."""
    try:
        write = _compile(parsed, {})
    except Unsupported:
        return None

    def encode(record: Mapping[str, Any]) -> bytes:
        out = bytearray()
        write(out, record)
        return bytes(out)

    return encode
