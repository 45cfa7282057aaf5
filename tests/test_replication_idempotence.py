"""Production settings of the Kafka clients: topics are provisioned with the replication factor
and min.insync.replicas given (PLANR_REPLICATION_FACTOR, PLANR_MIN_INSYNC_REPLICAS), and
producers enable idempotence only when the broker grants it (PLANR_IDEMPOTENCE=auto), which
the embedded Tansu broker does not."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import structlog
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from typer.testing import CliRunner, Result

from cli import app
from cli.context import Context
from cli.settings import Settings
from planr import kafka
from planr.broker import free_port
from planr.errors import UsageError
from planr.kafka import (
    KafkaConnection,
    broker_supports_idempotence,
    make_admin,
    make_producer,
    producer_idempotence,
)
from planr.topics import Topics, provision


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

# ---- replication ---------------------------------------------------------------------------


@pytest.mark.kafka
async def test_provision_creates_topics_with_the_replication_and_isr_minimum_given(conn, topics):
    """Tansu, on one node, still records three replicas and the topic configuration."""
    names = [topics.dead_letter, topics.audit]
    created = await provision(conn, topics, names, replication_factor=3, min_insync_replicas=2)
    assert sorted(created) == sorted(names)
    admin = make_admin(conn)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    for topic in described:
        assert [len(p["replicas"]) for p in topic["partitions"]] == [3] * len(topic["partitions"])
    entries = {(r[3], e[0]): e[1] for response in configs for r in response.resources
               for e in r[4]}
    assert {entries[(n, "min.insync.replicas")] for n in names} == {"2"}


@pytest.mark.parametrize(("replicas", "in_sync", "named"), [
    (0, 1, "replication_factor"), (3, 0, "min_insync_replicas"), (2, 3, "min_insync_replicas"),
])
async def test_provision_refuses_a_replication_no_write_could_satisfy(replicas, in_sync, named):
    unreachable = KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(UsageError, match=named):
        await provision(unreachable, Topics("x"), ["x.deadletter"],
                        replication_factor=replicas, min_insync_replicas=in_sync)


def test_planr_topics_provision_refuses_an_isr_minimum_above_the_replicas():
    result = run("topics", "provision", env={
        "PLANR_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "PLANR_REPLICATION_FACTOR": "2", "PLANR_MIN_INSYNC_REPLICAS": "3"})
    assert result.exit_code == 2
    assert "PLANR_MIN_INSYNC_REPLICAS" in result.output
    assert "exceeds replication_factor 2" in result.output


# ---- idempotence --------------------------------------------------------------------------------


def test_idempotence_mode_is_checked_and_names_the_field():
    with pytest.raises(UsageError, match="idempotence 'maybe'"):
        KafkaConnection(bootstrap_servers="k:9092", idempotence="maybe")


def test_idempotence_on_and_off_are_taken_as_given_without_asking_the_broker():
    nobody = f"127.0.0.1:{free_port()}"
    on = KafkaConnection(bootstrap_servers=nobody, idempotence="on")
    off = KafkaConnection(bootstrap_servers=nobody)
    assert producer_idempotence(on) is True
    assert producer_idempotence(off) is False
    assert on not in kafka._probed
    assert off not in kafka._probed


def test_auto_without_a_reachable_broker_means_off_and_is_asked_again_later():
    conn = KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}", idempotence="auto")
    assert producer_idempotence(conn) is False
    assert conn not in kafka._probed


def test_the_setting_reaches_the_connection(monkeypatch):
    monkeypatch.delenv("PLANR_IDEMPOTENCE", raising=False)
    assert Settings().idempotence == "auto"
    assert Context(Settings()).connection("k:9092").idempotence == "auto"
    monkeypatch.setenv("PLANR_IDEMPOTENCE", "off")
    assert Context(Settings()).connection("k:9092").idempotence == "off"


def test_a_bad_idempotence_setting_stops_the_command_and_names_the_variable():
    result = run("topics", "provision", env={"PLANR_IDEMPOTENCE": "sometimes"})
    assert result.exit_code == 2
    assert "PLANR_IDEMPOTENCE" in result.output


@pytest.mark.kafka
async def test_auto_on_the_embedded_broker_gives_a_working_producer_without_idempotence(broker):
    conn = KafkaConnection(bootstrap_servers=broker.bootstrap_servers, idempotence="auto")
    assert await broker_supports_idempotence(conn) is False
    topics = Topics("idem")
    await provision(conn, topics, [topics.dead_letter])
    producer = make_producer(conn)  # probes: Tansu lists InitProducerId, then refuses it
    assert conn in kafka._probed
    assert kafka._probed[conn] is False
    await producer.start()
    try:
        meta = await asyncio.wait_for(producer.send_and_wait(topics.dead_letter, b"x"), 30)
    finally:
        await producer.stop()
    assert meta.offset >= 0


@pytest.mark.kafka
async def test_idempotence_forced_on_fails_on_the_embedded_broker(broker):
    """Why auto must ask: Tansu answers InitProducerId with an error."""
    conn = KafkaConnection(bootstrap_servers=broker.bootstrap_servers, idempotence="on")
    producer = make_producer(conn)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()
