"""The AsyncAPI document (docs/asyncapi.yaml, `planr asyncapi`) keeps in step with the code:
it is what the generator makes now; it has a channel for every topic of the registry and
only those; it refers to every .avsc file; each channel carries the record the topic table
of docs/operations.md names; its publishers and subscribers are those the ACLs allow."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from typer.testing import CliRunner, Result

from cli import app
from planr.acls import Operation, ResourceType, cluster_acls
from planr.topics import Topics
from schemas import AVRO_DIR
from schemas.asyncapi import render

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; give the next tests theirs back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """``planr ARGS`` with only the PLANR_ variables given."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PLANR_")}
    return CliRunner().invoke(app, list(args), env={**clean, **(env or {})})


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def concrete(channel: dict[str, Any]) -> dict[str, str]:
    """topic -> parameter value ('' for a single topic) of every topic of a channel."""
    address = channel["address"]
    params = channel.get("parameters") or {}
    if not params:
        return {address: ""}
    (name, param), = params.items()
    return {address.replace(f"{{{name}}}", str(v)): str(v) for v in param["enum"]}


def topics_of(doc: dict[str, Any]) -> dict[str, str]:
    """topic -> channel id, over the whole document."""
    out: dict[str, str] = {}
    for channel_id, channel in doc["channels"].items():
        for topic in concrete(channel):
            assert topic not in out, f"{topic} in two channels"
            out[topic] = channel_id
    return out


def test_the_committed_document_is_what_planr_asyncapi_generates_now():
    assert COMMITTED.read_text(encoding="utf-8") == render(Topics("planr")), (
        "docs/asyncapi.yaml is stale: run `planr asyncapi --output docs/asyncapi.yaml`")


def test_it_is_an_asyncapi_3_document(doc):
    assert doc["asyncapi"].startswith("3.")
    assert {"info", "channels", "operations", "components"} <= set(doc)


def test_every_topic_of_the_registry_is_in_exactly_one_channel_and_no_other(doc):
    assert set(topics_of(doc)) == set(Topics("planr").everything())


def test_every_local_reference_resolves(doc):
    text = COMMITTED.read_text(encoding="utf-8")
    refs = re.findall(r"\$ref: '?#/([^'\s]+)'?", text)
    assert refs
    for ref in refs:
        node: Any = doc
        for part in ref.split("/"):
            assert isinstance(node, dict), f"#/{ref} does not resolve"
            assert part in node, f"#/{ref} does not resolve"
            node = node[part]


def avro_refs(doc: dict[str, Any], base: Path) -> dict[str, Path]:
    """components.schemas key -> the .avsc file it refers to."""
    return {key: (base / schema["schema"]["$ref"]).resolve()
            for key, schema in doc["components"]["schemas"].items()
            if schema.get("schemaFormat", "").startswith("application/vnd.apache.avro+json")}


def test_every_avsc_file_is_referred_to_and_every_reference_is_a_file(doc):
    referred = avro_refs(doc, COMMITTED.parent)
    files = {p.resolve() for p in AVRO_DIR.rglob("*.avsc")}
    assert set(referred.values()) == files


def test_every_avro_schema_is_used_by_a_message(doc):
    text = yaml.safe_dump(doc["components"]["messages"])
    for key in avro_refs(doc, COMMITTED.parent):
        assert f"#/components/schemas/{key}" in text, f"{key} is in no message"


def operations_table() -> dict[str, list[str]]:
    """The `## Topics` table of docs/operations.md: documented topic -> its cells."""
    lines = OPERATIONS.read_text(encoding="utf-8").splitlines()
    rows = {}
    for line in lines[lines.index("## Topics") + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            rows[cells[0].strip("`")] = cells
    return rows


def test_each_channel_carries_the_record_the_topic_table_names(doc):
    """Oracle: the hand-written topic table ("holds" column: the record, and for deliveries
    the view)."""
    messages = doc["components"]["messages"]
    schemas = doc["components"]["schemas"]
    for documented, cells in operations_table().items():
        address = documented.replace("<p>", "planr").replace("<REFNIS>", "{refnis}")
        address = re.sub(r"<(\w+)>", r"{\1}", address)
        channel = next(c for c in doc["channels"].values() if c["address"] == address)
        first = next(iter(channel["messages"].values()))
        message = messages[first["$ref"].rsplit("/", 1)[-1]]
        holds = re.findall(r"`(\w+)`", cells[3])
        assert message["name"] == holds[0], documented
        if len(holds) > 1:  # a Delivery with a view payload
            view = message["x-payload-view"]["$ref"].rsplit("/", 1)[-1]
            avsc = schemas[view]["schema"]["$ref"]
            assert yaml.safe_load((COMMITTED.parent / avsc).read_text())["name"] == holds[1]


def expand(principal: str, channel: dict[str, Any], topic: str) -> str:
    """The concrete principal of a templated one, on one topic of the channel."""
    value = concrete(channel)[topic]
    return re.sub(r"\{\w+\}", value, principal)


def granted(operation: Operation) -> set[tuple[str, str]]:
    """(principal, topic) pairs the ACLs allow, expanded over prefixed patterns."""
    topics = Topics("planr").everything()
    pairs = set()
    for e in cluster_acls(Topics("planr")):
        if e.resource_type is ResourceType.TOPIC and e.operation is operation:
            for t in topics:
                if t == e.resource_name or (e.pattern_type == "prefixed"
                                            and t.startswith(e.resource_name)):
                    pairs.add((e.principal, t))
    return pairs


@pytest.mark.parametrize(("action", "operation"),
                         [("send", Operation.WRITE), ("receive", Operation.READ)])
def test_publishers_and_subscribers_are_exactly_those_the_acls_allow(doc, action, operation):
    documented = set()
    for op in doc["operations"].values():
        if op["action"] != action:
            continue
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]
        for topic in concrete(channel):
            documented.add((expand(op["x-principal"], channel, topic), topic))
    assert documented == granted(operation)


def test_who_publishes_and_subscribes_where_as_the_design_says(doc):
    def who(action: str, channel: str) -> set[str]:
        return {op["x-principal"] for op in doc["operations"].values()
                if op["action"] == action and op["channel"]["$ref"].endswith(f"/{channel}")}

    assert who("send", "ingress") == {"User:agency-{agency}"}
    assert who("receive", "ingress") == {"User:planr-router"}
    assert who("send", "deliver-tfl") == {"User:planr-router"}
    assert who("receive", "deliver-tfl") == {"User:tfl-{arrondissement}", "User:planr-inboxes"}
    assert who("send", "deliver-ntf") == {"User:planr-aggregator"}
    assert who("receive", "deliver-ntf") == {"User:ntf"}
    assert who("receive", "deliver-ftf-db") == {"User:planr-projector"}
    assert who("receive", "ftf-ocam-requests") == {"User:agency-ocam"}
    assert "User:operator" in who("receive", "deadletter")
    assert who("send", "deadletter") == {"User:planr-router", "User:planr-aggregator",
                                         "User:planr-projector", "User:planr-inboxes",
                                         "User:planr-jib"}
    # the JIB: every service and local taskforce proposes; only the consensus process reads
    assert who("receive", "jib-submissions") == {"User:planr-jib"}
    assert len(who("send", "jib-submissions")) == 14 + 12 + 1
    assert who("send", "jib-decisions") == {"User:planr-jib"}
    assert who("receive", "jib-deliver-service") == {"User:agency-{agency}"}
    assert who("receive", "jib-deliver-tfl") == {"User:tfl-{arrondissement}"}


def test_ingress_and_router_delivery_channels_also_carry_withdrawals_and_retractions(doc):
    def carried(channel: str) -> list[str]:
        refs = doc["channels"][channel]["messages"].values()
        return [doc["components"]["messages"][r["$ref"].rsplit("/", 1)[-1]]["name"]
                for r in refs]

    assert carried("ingress") == ["Signal", "Withdrawal"]
    for channel in ("deliver-tfl", "deliver-wg", "deliver-csilr", "deliver-ftf-db"):
        assert carried(channel) == ["Delivery", "Retraction"]
    assert carried("deliver-ntf") == ["NtfAggregate"]


def test_every_channel_has_a_publisher(doc):
    sent = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in doc["operations"].values()
            if op["action"] == "send"}
    assert sent == set(doc["channels"])


def test_planr_asyncapi_writes_references_that_resolve_from_where_it_writes(tmp_path):
    out = tmp_path / "nested" / "api.yaml"
    out.parent.mkdir()
    result = run("asyncapi", "--prefix", "acme", "--output", str(out))
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert set(topics_of(written)) == set(Topics("acme").everything())
    files = {p.resolve() for p in AVRO_DIR.rglob("*.avsc")}
    assert set(avro_refs(written, out.parent).values()) == files


def test_planr_asyncapi_prints_to_stdout_and_refuses_a_bad_prefix():
    result = run("asyncapi")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["channels"]["deadletter"]["address"] == (
        "planr.deadletter")
    bad = run("asyncapi", "--prefix", "a.b")
    assert bad.exit_code == 2
    assert "prefix" in bad.output
