"""The naive router (:class:`benchmarks.baselines.NaiveRouter`: the same per-record work) as a
Quix Streams application (confluent-kafka / librdkafka): one ``StreamingDataFrame`` per
ingress topic, ``apply(expand=True, metadata=True)`` yields every output of a record,
``set_headers`` gives each its signature headers, ``to_topic`` with a callable picks its
topic. Quix commits its checkpoint after flushing its producer (at-least-once), every
``commit_interval`` and when the application stops.

Runs in a thread of the benchmark process (Quix's ``Application.run`` is blocking and
installs no signal handlers off the main thread).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.baselines import NaiveRouter, Run
from benchmarks.workload import Workload

#: Tansu finishes a group join after half the session timeout: keep it at Kafka's minimum.
_CONSUMER = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500}
_PRODUCER = {"acks": "all", "compression.type": "lz4", "linger.ms": 5,
             "enable.idempotence": False}


def available() -> str | None:
    """None when Quix Streams can be imported, else why not."""
    try:
        import quixstreams  # noqa: F401, PLC0415
    except ImportError as exc:
        return f"quixstreams is not installed ({exc.name}); pip install -e '.[bench]'"
    return None


def quix(work: Workload, group: str, state_dir: Path) -> Run:
    """Route the whole input with Quix Streams in ``group``."""
    from quixstreams import Application  # noqa: PLC0415 - an optional dependency
    from quixstreams.models.serializers import Serializer  # noqa: PLC0415

    class Raw(Serializer):
        def __call__(self, value: Any, ctx: Any) -> bytes:  # noqa: ARG002
            return bytes(value[2])

    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    router = NaiveRouter(work)
    app = Application(broker_address=work.conn.bootstrap_servers, consumer_group=group,
                      auto_offset_reset="earliest", auto_create_topics=False,
                      use_changelog_topics=False, state_dir=str(state_dir),
                      consumer_extra_config=_CONSUMER, producer_extra_config=_PRODUCER)
    outputs = {t: app.topic(t, value_serializer=Raw(), key_serializer="bytes")
               for t in work.outputs()}
    state = {"done": 0, "first": 0.0}

    for name in work.ingress:
        sdf = app.dataframe(app.topic(name, value_deserializer="bytes",
                                      key_deserializer="bytes"))
        sdf = sdf.apply(_router_for(name, router, state, app, work.signals),
                        expand=True, metadata=True)
        sdf = sdf.set_headers(lambda value, key, timestamp, headers: value[3])
        sdf.to_topic(lambda value, key, timestamp, headers: outputs[value[0]],
                     key=lambda value: value[1])
    app.run()
    run = Run("quix", int(state["done"]), time.perf_counter() - float(state["first"]))
    run.outputs, run.output_bytes = router.sent, router.sent_bytes
    return run


def _router_for(topic: str, router: NaiveRouter, state: dict[str, Any], app: Any,
                signals: int) -> Any:
    def route(value: bytes, key: Any, timestamp: int,  # noqa: ARG001
              headers: Any) -> list[Any]:
        if not state["first"]:
            state["first"] = time.perf_counter()
        out = router.outputs(topic, value, headers or [])
        state["done"] += 1
        if state["done"] >= signals:
            app.stop()
        return out
    return route
