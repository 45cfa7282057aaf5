"""Need-to-know decisions per second with the default policy (a benchmark, not a test).

Signals come from the generated scenario (real communes and prisons, mixed markings) and are
turned into Avro records first; the timed loop is what the router does per signal before any
encoding: ``Facts.of`` (location resolution, marking checks) then ``Engine.decide`` over every
candidate recipient. The best of a few rounds is reported, to damp a noisy machine.

    python -m benchmarks.decisions [SIGNALS]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from routing import DEFAULT_POLICY
from routing.engine import Engine, Facts
from routing.setup import prepare
from scenarios.signals import generate


@dataclass(frozen=True)
class Figures:
    signals: int
    decisions: int
    facts_and_decide_s: float
    decide_only_s: float

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.facts_and_decide_s

    @property
    def signals_per_s(self) -> float:
        return self.signals / self.facts_and_decide_s

    @property
    def decide_only_decisions_per_s(self) -> float:
        return self.decisions / self.decide_only_s


def _timed_facts_and_decide(engine: Engine, records: list[dict[str, Any]]) -> tuple[float, int]:
    decisions = 0
    started = time.perf_counter()
    for record in records:
        decisions += len(engine.decide(Facts.of(record)))
    return time.perf_counter() - started, decisions


def _timed_decide(engine: Engine, facts: list[Facts]) -> float:
    started = time.perf_counter()
    for f in facts:
        engine.decide(f)
    return time.perf_counter() - started


def measure(n: int = 20_000, rounds: int = 3) -> Figures:
    engine = prepare(DEFAULT_POLICY).engine
    published = datetime(2026, 12, 1, tzinfo=UTC)
    records = [s.to_avro(agency, published) for agency, s in generate(n, seed=1998)]
    facts = [Facts.of(r) for r in records]
    _timed_facts_and_decide(engine, records[:1000])  # warm caches (belgica, rule tables)
    both = min(_timed_facts_and_decide(engine, records) for _ in range(rounds))
    decide_only = min(_timed_decide(engine, facts) for _ in range(rounds))
    return Figures(n, both[1], both[0], decide_only)


def main(n: int = 20_000) -> None:
    f = measure(n)
    print(f"decisions, default policy, {f.signals:,} generated signals "
          f"({f.decisions / f.signals:.1f} candidate recipients each):")
    print(f"  Facts.of + Engine.decide  {f.decisions_per_s:>12,.0f} decisions/s"
          f"  ({f.signals_per_s:,.0f} signals/s)")
    print(f"  Engine.decide alone       {f.decide_only_decisions_per_s:>12,.0f} decisions/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
