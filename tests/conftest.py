"""Shared fixtures: one real embedded Tansu broker per test session.

Tansu consumer-group joins take about 5 s, so the broker is shared and every test gets its
own topic prefix (hence its own topics) and its own consumer group ids.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.ledger import StoreLedger
from consumers.store import Database, sqlite_url
from planr.broker import EmbeddedBroker
from planr.kafka import KafkaConnection
from planr.telemetry import Metrics
from planr.topics import Topics
from routing import DEFAULT_POLICY
from routing.setup import RoutingSetup, prepare
from scenarios.keys import KeyRing, throwaway_keys
from schemas.codec import Codec


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_file = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as b:
        yield b


#: Tansu completes a group join after half the session timeout: the tests' consumers, in process
#: and in the ``planr`` processes they start, use a short one (joins take 1.5 s, not 5 s).
SESSION_TIMEOUT_MS = 3_000


@pytest.fixture(scope="session", autouse=True)
def _short_session_timeout() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLANR_SESSION_TIMEOUT_MS", str(SESSION_TIMEOUT_MS))
        yield


@pytest.fixture
def conn(broker: EmbeddedBroker) -> KafkaConnection:
    return KafkaConnection(bootstrap_servers=broker.bootstrap_servers,
                           session_timeout_ms=SESSION_TIMEOUT_MS)


@pytest.fixture
def topics() -> Topics:
    """A fresh topic namespace for this test."""
    return Topics(prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def group_id() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture(scope="session")
def codec() -> Codec:
    return Codec()


@pytest.fixture(scope="session")
def routing_setup(codec: Codec) -> RoutingSetup:
    return prepare(DEFAULT_POLICY, codec)


@pytest.fixture(scope="session")
def default_policy_path() -> Path:
    return DEFAULT_POLICY


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    """One throw-away signing key for every agency and every service (router, projector,
    inboxes, aggregator), in a 0700 directory, with their registry: what agencies and the
    bus's services hold in production."""
    return throwaway_keys(tmp_path_factory.mktemp("signing") / "keys")


def key_env(keys: KeyRing, owner: str) -> dict[str, str]:
    """The environment a ``planr`` process signing as ``owner`` gets."""
    return {"PLANR_KEY_REGISTRY": str(keys.registry_path),
            "PLANR_SIGNING_KEY": str(keys.path(owner))}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the broker carries the ``kafka`` marker, so that
    ``pytest -m "not kafka"`` is a real fast subset."""
    unmarked = [item.nodeid for item in items
                if "broker" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("kafka") is None]
    if unmarked:
        raise pytest.UsageError("tests use the broker without the kafka marker: "
                                + ", ".join(unmarked))


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[StoreLedger]:
    """The router's ledger, in a fresh SQLite store of this test."""
    async with Database(sqlite_url(tmp_path / "ledger", "ledger.db")) as db:
        yield StoreLedger(db)
