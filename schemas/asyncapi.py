"""The AsyncAPI 3 document of the bus, generated from the topic registry, the Avro schemas and
the broker ACLs (``planr asyncapi``; committed as docs/asyncapi.yaml).

* Channels: one per topic family (``Topics``): a single topic, or one topic per agency or
  per recipient, whose address then has a parameter listing every value.
* Messages: the Avro records of each channel (a signal or a withdrawal on an ingress topic, a
  delivery or a retraction on a router's delivery topic, one record elsewhere), by reference
  to their ``.avsc`` files (schema format ``application/vnd.apache.avro+json;version=1.9.0``);
  deliveries name the view their payload holds; superseded schemas a reader still accepts are
  listed with their message.
* Operations: who publishes (``send``) and who subscribes (``receive``) on each channel, read
  from :func:`planr.acls.cluster_acls`, so that the document says what the brokers enforce.
  A principal of one agency or recipient is written with the channel's parameter
  (``User:tfl-{arrondissement}``: each local taskforce, its own topic only).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from planr.acls import AclEntry, Operation, PatternType, ResourceType, cluster_acls
from planr.kafka import SASL_MECHANISMS
from planr.signing import HEADER_KEY_ID, HEADER_PROOF, HEADER_SIGNATURE
from planr.topics import Topics, partitions_for
from schemas import AVRO_DIR, names
from schemas.channels import Family, families

AVRO_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
CONTENT_TYPE = "application/octet-stream"
KAFKA_BINDING = "0.5.0"
_ACTIONS = {Operation.WRITE: "send", Operation.READ: "receive"}
_PARAMETER_DOCS = {
    "agency": "The publishing service.",
    "arrondissement": "The judicial arrondissement of the local taskforce.",
    "group": "The working group.",
    "refnis": "The municipality of the CSIL R (REFNIS code).",
}
#: Keys of the records that share a topic with another (the first record's key is the family's).
_KEYS = {names.RETRACTION: "event id", names.JIB_VOTE: "proposal id",
         names.JIB_TICK: "tick id"}
_SECURITY_TYPES = {"SCRAM-SHA-256": "scramSha256", "SCRAM-SHA-512": "scramSha512",
                   "PLAIN": "plain"}


# ---- schemas ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaFile:
    component: str  # key under components.schemas: the path, dots for slashes, no .avsc
    path: str  # relative to AVRO_DIR
    record: str  # full name
    doc: str
    superseded: bool


def schema_files(avro_dir: Path = AVRO_DIR) -> list[SchemaFile]:
    out = []
    for path in sorted(avro_dir.rglob("*.avsc")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        rel = path.relative_to(avro_dir).as_posix()
        record = f"{schema.get('namespace', '')}.{schema['name']}".lstrip(".")
        out.append(SchemaFile(rel.removesuffix(".avsc").replace("/", "."), rel, record,
                              schema.get("doc", ""), rel.startswith("superseded/")))
    return out


def _schema_components(files: list[SchemaFile], avro_ref: str) -> dict[str, Any]:
    return {f.component: {"schemaFormat": AVRO_FORMAT,
                          "schema": {"$ref": f"{avro_ref}/{f.path}"}}
            for f in files}


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _current(files: list[SchemaFile], record: str) -> SchemaFile:
    found = [f for f in files if f.record == record and not f.superseded]
    if len(found) != 1:
        raise ValueError(f"record {record}: {len(found)} current schema files")
    return found[0]


def short_name(record: str) -> str:
    return record.rsplit(".", 1)[-1]


def message_id(family: Family, record: str) -> str:
    """The key of a record's message under components.messages."""
    return f"{family.channel}.{short_name(record)}"


def _message(family: Family, record: str, files: list[SchemaFile]) -> dict[str, Any]:
    current = _current(files, record)
    main = record == family.record
    message: dict[str, Any] = {
        "name": short_name(record),
        "title": family.title if main else f"{short_name(record)} ({family.title.lower()})",
        "summary": current.doc,
        "contentType": CONTENT_TYPE,
        "payload": _ref("components", "schemas", current.component),
    }
    key = family.key if main else _KEYS.get(record)
    if key is not None:
        message["bindings"] = {"kafka": {"key": {"type": "string", "description": key},
                                         "bindingVersion": KAFKA_BINDING}}
    if family.signed_by is not None:
        message["headers"] = _ref("components", "schemas", "signatureHeaders")
        message["x-signed-by"] = family.signed_by
    readable = [f for f in files if f.superseded and f.record == record]
    if main and family.view is not None:
        view = _current(files, family.view)
        message["x-payload-view"] = _ref("components", "schemas", view.component)
        readable += [f for f in files if f.superseded and f.record == family.view]
    if readable:
        message["x-also-readable"] = [_ref("components", "schemas", f.component)
                                      for f in readable]
    return message


def _signature_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Present on a signed record: an Ed25519 signature of the producer "
                       "(x-signed-by of the message).",
        "properties": {
            HEADER_KEY_ID: {"type": "string", "description": "Id of the signing key (UTF-8)."},
            HEADER_SIGNATURE: {"type": "string", "description": "The raw 64-byte signature: "
                               "without planr-proof, over the topic, the key id and the "
                               "value; with it, over the key id and the root of the "
                               "record's chunk."},
            HEADER_PROOF: {"type": "string", "description": "Present on a record signed in a "
                           "chunk: its audit path to the chunk's root, 33 bytes per level "
                           "(a direction byte L or R, then the sibling's SHA-256)."},
        },
    }


# ---- operations, from the ACLs ---------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Access:
    """One principal's send or receive on one family (``each``: its own topic of every
    value of the family's parameter)."""

    channel: str
    action: str
    principal: str
    each: bool


def _topic_index(fams: list[Family]) -> dict[str, tuple[Family, str]]:
    """Every topic of the bus -> its family and its parameter value ('' for single topics)."""
    return {topic: (family, family.value_of(topic) or "")
            for family in fams for topic in family.topics()}


def _granted(entry: AclEntry, index: dict[str, tuple[Family, str]]) -> list[tuple[Family, str]]:
    if entry.pattern_type is PatternType.PREFIXED:
        return [hit for topic, hit in index.items() if topic.startswith(entry.resource_name)]
    hit = index.get(entry.resource_name)
    return [] if hit is None else [hit]


def accesses(topics: Topics, entries: list[AclEntry] | None = None) -> list[Access]:
    """Who sends and who receives on each family, read from the ACL entries."""
    fams = families(topics)
    index = _topic_index(fams)
    grants: dict[tuple[Family, str, str], set[str]] = defaultdict(set)
    for entry in cluster_acls(topics) if entries is None else entries:
        action = _ACTIONS.get(entry.operation)
        if entry.resource_type is not ResourceType.TOPIC or action is None:
            continue
        for family, value in _granted(entry, index):
            principal = entry.principal
            if value and principal.endswith(f"-{value}"):
                principal = principal.removesuffix(value) + f"{{{family.parameter}}}"
            grants[(family, action, principal)].add(value)
    out = []
    for (family, action, principal), values in grants.items():
        each = family.parameter is not None and f"{{{family.parameter}}}" in principal
        if each and values != set(family.values):
            raise ValueError(f"{principal} on {family.channel}: not every {family.parameter} "
                             "is granted")
        out.append(Access(family.channel, action, principal, each))
    return sorted(out)


def _group_binding(principal: str, entries: list[AclEntry]) -> dict[str, Any] | None:
    groups = sorted({(e.resource_name, e.pattern_type) for e in entries
                     if e.resource_type is ResourceType.GROUP and e.principal == principal
                     and e.operation is Operation.READ})
    if not groups:
        return None
    literal = [name for name, pattern in groups if pattern is PatternType.LITERAL]
    if literal:
        return {"type": "string", "enum": literal}
    return {"type": "string",
            "pattern": "^(" + "|".join(re.escape(n) for n, _ in groups) + ")"}


def _operation_id(access: Access) -> str:
    who = access.principal.removeprefix("User:")
    who = re.sub(r"-\{[^}]+\}$", "-each", who)
    return f"{who}_{access.action}_{access.channel}"


def _operation(access: Access, family: Family, entries: list[AclEntry]) -> dict[str, Any]:
    verb = "publishes to" if access.action == "send" else "subscribes to"
    scope = f"its own topic (one per {family.parameter})" if access.each else "the channel"
    op: dict[str, Any] = {
        "action": access.action,
        "channel": _ref("channels", family.channel),
        "summary": f"{access.principal} {verb} {scope}.",
        "x-principal": access.principal,
        "messages": [_ref("channels", family.channel, "messages", short_name(r).lower())
                     for r in family.records],
    }
    if access.action == "receive":
        sample = access.principal
        if access.each:
            sample = access.principal.replace(f"{{{family.parameter}}}", family.values[0])
        group = _group_binding(sample, entries)
        if group is None:
            op["description"] = "No consumer group: it keeps its offsets in its own database."
        elif access.each:
            prefix = access.principal.removeprefix("User:")
            op["description"] = f"In consumer groups named `{prefix}.<anything>`."
        else:
            op["bindings"] = {"kafka": {"groupId": group, "bindingVersion": KAFKA_BINDING}}
    return op


# ---- the document ----------------------------------------------------------------------------


def _channel(family: Family, topics: Topics) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": family.address,
        "title": family.title,
        "messages": {short_name(r).lower(): _ref("components", "messages",
                                                 message_id(family, r))
                     for r in family.records},
        "bindings": {"kafka": {"partitions": partitions_for(topics, family.topics()[0]),
                               "bindingVersion": KAFKA_BINDING}},
    }
    if family.parameter is not None:
        channel["parameters"] = {family.parameter: {
            "description": _PARAMETER_DOCS[family.parameter] + " One topic each.",
            "enum": FlowList(family.values)}}
    return channel


def _info() -> dict[str, Any]:
    try:
        package_version = version("planr-bus")
    except PackageNotFoundError:  # pragma: no cover - the package is installed to run this
        package_version = "0.0.0"
    return {
        "title": "planr-bus",
        "version": package_version,
        "description": (
            "Need-to-know information sharing for Plan R / T.E.R. Every record is Avro "
            "single-object encoded: the bytes C3 01, the 8-byte little-endian CRC-64-AVRO "
            "fingerprint of the writer schema's parsing canonical form, then the Avro body. "
            "Generated by `planr asyncapi` from the topic registry, the schemas and the ACLs."),
    }


def document(topics: Topics, *, avro_ref: str = "../schemas/avro",
             avro_dir: Path = AVRO_DIR) -> dict[str, Any]:
    """The AsyncAPI 3.0 document; ``avro_ref`` is how the document reaches schemas/avro."""
    files = schema_files(avro_dir)
    fams = families(topics)
    entries = cluster_acls(topics)
    by_channel = {f.channel: f for f in fams}
    operations = {_operation_id(a): _operation(a, by_channel[a.channel], entries)
                  for a in accesses(topics, entries)}
    mechanisms = {m: {"type": _SECURITY_TYPES[m]} for m in SASL_MECHANISMS}
    return {
        "asyncapi": "3.0.0",
        "info": _info(),
        "defaultContentType": CONTENT_TYPE,
        "servers": {"production": {
            "host": "{bootstrap}",
            "protocol": "kafka",
            "description": "The cluster named by PLANR_BOOTSTRAP_SERVERS (SASL, see ACLs).",
            "variables": {"bootstrap": {"description": "host:port of a broker"}},
            "security": [_ref("components", "securitySchemes", m) for m in mechanisms],
        }},
        "channels": {f.channel: _channel(f, topics) for f in fams},
        "operations": operations,
        "components": {
            "schemas": {"signatureHeaders": _signature_headers(),
                        **_schema_components(files, avro_ref)},
            "messages": {message_id(f, r): _message(f, r, files)
                         for f in fams for r in f.records},
            "securitySchemes": mechanisms,
        },
    }


class FlowList(tuple[str, ...]):
    """A list written on one line (long parameter enums)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", list(v), flow_style=True))


def render(topics: Topics, **kwargs: Any) -> str:
    """The document as YAML text."""
    head = "# Generated by `planr asyncapi`; do not edit (tests/test_asyncapi.py checks it).\n"
    body = yaml.dump(document(topics, **kwargs), Dumper=_Dumper, sort_keys=False,
                     allow_unicode=True, width=100)
    return head + body
