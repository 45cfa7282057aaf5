"""PLANR_FETCH_MAX_WAIT_MS: how long a broker may hold a consumer's fetch that found nothing.

Tansu answers such a fetch much later than Kafka (which answers as soon as a record arrives), so
the setting bounds how late a consumer on the embedded broker sees a record. It is checked,
named when wrong, and reaches every consumer the project makes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog
from typer.testing import CliRunner

from cli import app
from cli.context import Context
from cli.settings import Settings
from planr.errors import UsageError
from planr.kafka import KafkaConnection, make_consumer


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; give the next tests theirs back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_the_default_is_kafkas_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLANR_FETCH_MAX_WAIT_MS", raising=False)
    assert Context(Settings()).connection("k:9092").fetch_max_wait_ms == 500


def test_the_setting_reaches_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANR_FETCH_MAX_WAIT_MS", "10")
    assert Context(Settings()).connection("k:9092").fetch_max_wait_ms == 10


async def test_consumers_are_made_with_the_connections_wait() -> None:
    consumer = make_consumer(KafkaConnection("k:9092", fetch_max_wait_ms=25), "t", group_id="g")
    try:
        assert consumer._fetch_max_wait_ms == 25
    finally:
        await consumer.stop()  # never started: nothing to leave, no unclosed warning


@pytest.mark.parametrize("wait", [-1, 30_001])
def test_a_wait_out_of_range_is_refused_naming_the_field(wait: int) -> None:
    with pytest.raises(UsageError, match="fetch_max_wait_ms"):
        KafkaConnection("k:9092", fetch_max_wait_ms=wait)


def test_a_bad_setting_stops_the_command_and_names_the_variable() -> None:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PLANR_")}
    result = CliRunner().invoke(app, ["topics", "provision"],
                                env={**clean, "PLANR_FETCH_MAX_WAIT_MS": "soon"})
    assert result.exit_code == 2
    assert "PLANR_FETCH_MAX_WAIT_MS" in result.output
