"""Shared fixtures: one real embedded Tansu broker per test session (per pytest-xdist worker).

Starting a broker and joining consumer groups take seconds, so the broker is shared and every
test gets its own topic prefix (hence its own topics, deleted after the test) and its own
consumer group ids.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nacl.signing import VerifyKey
from prometheus_client import CollectorRegistry

import planr.signing
from consumers.ledger import StoreLedger
from consumers.store import Database, sqlite_url
from planr.broker import EmbeddedBroker
from planr.kafka import KafkaConnection, make_admin
from planr.telemetry import Metrics
from planr.topics import Topics
from routing import DEFAULT_POLICY
from routing.setup import RoutingSetup, prepare
from scenarios.keys import KeyRing, throwaway_keys
from schemas.codec import Codec
from tests.test_store_helpers import BACKENDS, store_url

#: Background deletions of finished tests' topics, joined before the broker stops.
_DROPS: list[threading.Thread] = []


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_file = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as b:
        yield b
        for drop in _DROPS:
            drop.join(timeout=60)


async def _drop_namespace(bootstrap: str, prefix: str) -> None:
    admin = make_admin(KafkaConnection(bootstrap_servers=bootstrap))
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if n.startswith(prefix + ".")]
        for i in range(0, len(names), 100):
            await admin.delete_topics(names[i : i + 100])
    finally:
        await admin.close()


def _drop_in_background(bootstrap: str, prefix: str) -> None:
    """Delete a finished test's topics. Tansu creates topics in a time that grows with the
    number it holds (1 s for a namespace on an empty broker, 13 s with ten namespaces), so a
    shared broker that kept every test's ~650 topics would slow each later test down."""

    def run() -> None:
        try:
            asyncio.run(_drop_namespace(bootstrap, prefix))
        except Exception:  # noqa: BLE001 - best-effort cleanup; a leftover namespace is harmless
            return

    drop = threading.Thread(target=run, name=f"drop-{prefix}", daemon=True)
    drop.start()
    _DROPS.append(drop)


@pytest.fixture(autouse=True)
def _no_drop_under_way_during_hypothesis(request: pytest.FixtureRequest) -> None:
    """A property-based test starts once the topic deletions under way have ended: their
    Kafka clients draw from the global ``random`` (aiokafka picks nodes at random), which
    Hypothesis takes for a strategy's own use of it and refuses."""
    if getattr(request.function, "is_hypothesis_test", False):
        while _DROPS:
            _DROPS.pop().join(timeout=60)


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
def topics(request: pytest.FixtureRequest) -> Iterator[Topics]:
    """A fresh topic namespace for this test, deleted from the shared broker afterwards."""
    namespace = Topics(prefix=f"t{uuid.uuid4().hex[:12]}")
    shared = request.getfixturevalue("broker") if "broker" in request.fixturenames else None
    yield namespace
    if shared is not None:
        _drop_in_background(shared.bootstrap_servers, namespace.prefix)


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


@pytest.fixture
def ed25519_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts the Ed25519 verifications the registry really performs (a spy, not a stub)."""
    calls: list[bytes] = []
    real = planr.signing._verifies

    def counting(public: VerifyKey, signature: bytes, message: bytes) -> bool:
        calls.append(message)
        return real(public, signature, message)

    monkeypatch.setattr(planr.signing, "_verifies", counting)
    return calls


# ---- a store under test and an oracle's store, on the same back-end -----------------------
# Tests that compare a consumer's store with an independent one's (batched against one by one,
# read ahead against not) take ``db`` and ``ref``; a test file may define its own ``db``.


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """The store under test (SQLite, or a fresh PostgreSQL database)."""
    async with store_url(backend, tmp_path / "db") as url, Database(url) as database:
        yield database


@pytest.fixture
async def ref(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """The oracle's store, on the same back-end, separate from ``db``."""
    async with store_url(backend, tmp_path / "ref") as url, Database(url) as database:
        yield database
