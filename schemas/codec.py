"""Avro codec: single-object encoding out, schema resolution in.

Every message starts with the two marker bytes ``C3 01`` and the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's parsing canonical form, followed by the Avro
binary body (Avro specification, "single-object encoding"). A reader looks the fingerprint up
among every schema it knows (current and superseded ones) and resolves the writer schema to
its current reader schema, so producers and consumers can evolve independently.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from planr.errors import DecodeError, EncodeError, SchemaError, UnknownSchemaError
from schemas import AVRO_DIR
from schemas.avrowrite import compile_writer

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


@dataclass(frozen=True)
class KnownSchema:
    name: str
    fingerprint: bytes
    parsed: Any
    source: str
    #: the compiled body writer (:mod:`schemas.avrowrite`), ``None`` when fastavro writes
    write: Callable[[Mapping[str, Any]], bytes] | None = field(default=None, compare=False)


def _fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def load_schema_file(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: a schema file must hold one record schema")
    return data


class SchemaStore:
    """The schemas this process knows: the current ones (readers) and every writer version."""

    def __init__(self) -> None:
        self._current: dict[str, KnownSchema] = {}
        self._by_fp: dict[bytes, KnownSchema] = {}

    @classmethod
    def default(cls) -> SchemaStore:
        """Every ``.avsc`` below ``schemas/avro``; files under ``superseded/`` are writers only."""
        store = cls()
        for path in sorted(AVRO_DIR.rglob("*.avsc")):
            current = "superseded" not in path.relative_to(AVRO_DIR).parts
            store.add(load_schema_file(path), current=current, source=str(path.name))
        return store

    def add(self, schema: Mapping[str, Any], *, current: bool = True, source: str = "") -> str:
        """Register a schema; returns its full name."""
        parsed = parse_schema(dict(schema))  # keeps fastavro's "parsed" hint: no re-parse per call
        if not isinstance(parsed, dict):
            raise SchemaError(f"{source}: only named record schemas can be registered")
        name = str(parsed["name"])
        known = KnownSchema(name, _fingerprint(parsed), parsed, source, compile_writer(parsed))
        self._by_fp[known.fingerprint] = known
        if current:
            self._current[name] = known
        return name

    def current(self, name: str) -> KnownSchema:
        try:
            return self._current[name]
        except KeyError:
            raise UnknownSchemaError(f"no current schema named {name}") from None

    def writer(self, fp: bytes) -> KnownSchema:
        try:
            return self._by_fp[fp]
        except KeyError:
            raise UnknownSchemaError(f"unknown writer schema fingerprint {fp.hex()}") from None

    def names(self) -> Iterable[str]:
        return self._current.keys()


class Codec:
    """Encode and decode records of the schemas in a :class:`SchemaStore`."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or SchemaStore.default()

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        known = self.store.current(name)
        return self.encode_with(known, record)

    @staticmethod
    def encode_with(known: KnownSchema, record: Mapping[str, Any]) -> bytes:
        if known.write is not None:
            try:
                return MAGIC + known.fingerprint + known.write(record)
            except Exception:  # noqa: BLE001, S110 - fastavro below accepts or rejects it
                pass
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(known.fingerprint)
        try:
            schemaless_writer(out, known.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # fastavro's message may quote the value: keep only the error type (no content)
            raise EncodeError(f"record does not fit {known.name} ({type(exc).__name__})") from None
        return out.getvalue()

    def writer_of(self, data: bytes) -> KnownSchema:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not an Avro single-object encoded message", reason="bad_header")
        return self.store.writer(bytes(data[2:HEADER_LEN]))

    def decode(self, data: bytes, name: str) -> dict[str, Any]:
        """Decode ``data`` into the current schema ``name``, resolving from its writer."""
        writer = self.writer_of(data)
        reader = self.store.current(name)
        body = io.BytesIO(data)
        body.seek(HEADER_LEN)
        if writer.name != name:
            raise DecodeError(
                f"message carries a {writer.name}, expected {name}", reason="wrong_schema"
            )
        resolve_to = None if writer.fingerprint == reader.fingerprint else reader.parsed
        try:
            record = schemaless_reader(body, writer.parsed, resolve_to)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on bad bytes
            raise DecodeError(
                f"undecodable {name} body ({type(exc).__name__})", reason="undecodable"
            ) from None
        if body.tell() != len(data):
            raise DecodeError(f"trailing bytes after {name} body", reason="undecodable")
        if not isinstance(record, dict):
            raise DecodeError(f"{name} body is not a record", reason="undecodable")
        return record
