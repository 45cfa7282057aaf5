"""``make bench``: ``python -m benchmarks [--quick] [--rounds N] [--signals N] [PART ...]``.

Parts: ``decisions`` (need-to-know decisions per second, no broker), ``signing`` (records
signed and checked per second, per record versus per chunk, no broker), ``routers`` (the
planr router, 1 and N processes, against the raw fan-out floor, a naive aiokafka + fastavro router
and the same in Quix Streams, interleaved rounds on one embedded broker and one input; then
the latency at a fixed offered load), ``projector`` (:mod:`benchmarks.projector`) and
``inboxes`` (:mod:`benchmarks.inboxes`). Without a part, all of them.
Every figure is also written as JSON (``--json``, default ``bench-results.json``).
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import suite
from planr.telemetry import configure_logging

PARTS = ("decisions", "signing", "routers", "projector", "inboxes")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("parts", nargs="*", choices=[*PARTS, []], metavar="PART",
                   help=f"any of {', '.join(PARTS)} (default: all)")
    p.add_argument("--signals", type=int, default=100_000, help="input signals (routers)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (routers)")
    p.add_argument("--workers", type=int, default=2, help="processes of the N-process planr")
    p.add_argument("--events", type=int, default=50_000, help="events (projector, inboxes)")
    p.add_argument("--latency-rate", type=float, default=2_000.0, help="signals/s offered")
    p.add_argument("--latency-seconds", type=float, default=15.0, help="seconds offered")
    p.add_argument("--latency-curve", type=float, nargs="*", default=[250.0, 1_000.0],
                   help="lower rates (signals/s) also measured, before --latency-rate")
    p.add_argument("--fetch-wait-ms", type=int, default=10,
                   help="PLANR_FETCH_MAX_WAIT_MS of the latency routers")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run proving the suite works: 500 signals, 1 round, "
                        "1 s of latency, 500 events")
    p.add_argument("--json", type=Path, default=Path("bench-results.json"),
                   help="where the results are written")
    args = p.parse_args(argv)
    if args.quick:
        args.signals, args.rounds, args.events, args.latency_seconds = 500, 1, 500, 1.0
        args.latency_curve = []
    if args.signals < 1 or args.rounds < 1 or args.workers < 1 or args.events < 1:
        p.error("--signals, --rounds, --workers and --events must be at least 1")
    return args


def _external(module: str, events: int) -> Any:
    """Run another engineer's benchmark through its ``run(events)``; its dict if it returns
    one (else it printed its figures). None when the module does not exist."""
    try:
        mod = importlib.import_module(f"benchmarks.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{module}":
            raise
        print(f"{module}: not measured (no benchmarks/{module}.py)")
        return None
    result = mod.run(events)
    return result if isinstance(result, dict) else {"printed": True}


def _decisions() -> dict[str, Any]:
    from benchmarks import decisions  # noqa: PLC0415 - import only what is asked for

    decisions.main()
    return {"printed": True}


def _signing() -> dict[str, Any]:
    from benchmarks import signing  # noqa: PLC0415 - import only what is asked for

    signing.main()
    return {"printed": True}


def main(argv: list[str]) -> int:
    args = parse(argv)
    configure_logging("console", "warning")  # figures, not the components' chatter
    parts = args.parts or list(PARTS)
    opts = suite.Options(signals=args.signals, rounds=args.rounds, workers=args.workers,
                         latency_rate=args.latency_rate, latency_seconds=args.latency_seconds,
                         latency_curve=tuple(args.latency_curve),
                         fetch_wait_ms=args.fetch_wait_ms)
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(),
                               "conditions": suite.conditions(opts) | {"events": args.events}}
    emit: Callable[[str, Any], None] = results.__setitem__
    if "decisions" in parts:
        emit("decisions", _decisions())
    if "signing" in parts:
        emit("signing", _signing())
    if "routers" in parts:
        suite.routers(opts, emit)
    for part in ("projector", "inboxes"):
        if part in parts:
            emit(part, _external(part, args.events))
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
