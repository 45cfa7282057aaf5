"""``planr route --workers N``: N router processes in one consumer group.

The parent creates the ledger's schema once, checks that every ingress topic has at least N
partitions (a topic with fewer leaves some workers without its traffic), then starts N
children, each a ``planr route --json`` with the same settings and group (``python -m cli
route``). Worker ``i`` (0 to N-1) serves its metrics on ``PLANR_METRICS_PORT + i`` when that
is set. SIGTERM or SIGINT to the parent is passed to every child, each of which drains its
batch in flight, commits and exits (with ``--until-idle``, each exits once idle); the parent
returns once all have, with the first non-zero exit status. If a child dies on its own, the
others are stopped the same way and the parent exits 1, so that the service manager restarts
the whole set.

Each child reports its final :class:`RouterStats` as one JSON line on its standard output
(:func:`stats_to_json`); the parent reads them back (:func:`stats_from_json`) and adds them up
(:func:`sum_stats`). :func:`run_workers` is the whole of it as a library function (the demo
uses it); :func:`supervise` is the command.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import typer

from cli.context import Context, fail
from planr.errors import BrokerError, PlanrError, UsageError
from planr.kafka import KafkaConnection, make_admin
from planr.topics import Topics
from routing.router import RouterStats

#: Seconds the children get to exit after SIGTERM when the parent itself is cancelled.
STOP_GRACE = 60.0


async def ingress_partitions(conn: KafkaConnection, topics: Topics) -> dict[str, int]:
    """The partition count of every ingress topic on the brokers (0: missing)."""
    admin = make_admin(conn)
    try:
        await admin.start()
    except OSError as exc:
        raise BrokerError(f"broker {conn.bootstrap_servers} unreachable "
                          f"({type(exc).__name__})") from None
    try:
        described = await admin.describe_topics(topics.all_ingress())
    finally:
        await admin.close()
    found = {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code") == 0}
    return {t: found.get(t, 0) for t in topics.all_ingress()}


def check_partitions(counts: dict[str, int], workers: int) -> None:
    """UsageError naming the first ingress topic with fewer than ``workers`` partitions."""
    for topic, n in sorted(counts.items()):
        if n < workers:
            raise UsageError(
                f"--workers {workers}: ingress topic {topic} has {n} partition(s); every "
                f"ingress topic needs at least {workers} ('planr topics provision' creates 3)")


def child_env(c: Context, index: int) -> dict[str, str]:
    """The environment of worker ``index``: the parent's, with the root options made
    settings and its own metrics port."""
    s = c.settings
    env = dict(os.environ)
    env["PLANR_POLICY"] = str(s.policy)
    env["PLANR_LOG_FORMAT"] = s.log_format
    if s.bootstrap_servers is not None:
        env["PLANR_BOOTSTRAP_SERVERS"] = s.bootstrap_servers
    if s.metrics_port is not None:
        env["PLANR_METRICS_PORT"] = str(s.metrics_port + index)
    return env


def child_args(group: str, until_idle: float | None) -> list[str]:
    args = [sys.executable, "-m", "cli", "route", "--group", group, "--json"]
    if until_idle is not None:
        args += ["--until-idle", str(until_idle)]
    return args



# ---- statistics: one JSON line per worker, summed by the parent ---------------------------


def stats_to_json(stats: RouterStats) -> str:
    """``stats`` as one line of JSON: every field by name, counters as objects."""
    return json.dumps({f.name: _plain(getattr(stats, f.name)) for f in fields(stats)},
                      sort_keys=True)


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Counter) else value


def stats_from_json(line: str) -> RouterStats:
    """The statistics :func:`stats_to_json` wrote; PlanrError naming the field at fault."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        raise PlanrError("router statistics: not a JSON line", reason="bad_stats") from None
    if not isinstance(data, dict):
        raise PlanrError("router statistics: not a JSON object", reason="bad_stats")
    stats = RouterStats()
    names = {f.name for f in fields(stats)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise PlanrError(f"router statistics: unknown field {unknown[0]}", reason="bad_stats")
    for name in sorted(names):
        setattr(stats, name, _field_value(name, getattr(stats, name), data.get(name)))
    return stats


def _field_value(name: str, default: Any, value: Any) -> Any:
    if isinstance(default, Counter) and isinstance(value, dict) and all(
            type(n) is int for n in value.values()):
        return Counter({str(k): n for k, n in value.items()})
    if type(default) is int and type(value) is int:
        return value
    kind = "counts by label" if isinstance(default, Counter) else "a whole number"
    raise PlanrError(f"router statistics: field {name} is missing or not {kind}",
                     reason="bad_stats")


def sum_stats(parts: Iterable[RouterStats]) -> RouterStats:
    """The statistics of several routers as one: every field added up, counters key by key.
    A field of any other type than a counter or a number is a TypeError naming it."""
    total = RouterStats()
    for part in parts:
        for f in fields(total):
            mine, theirs = getattr(total, f.name), getattr(part, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, int | float) and not isinstance(mine, bool):
                setattr(total, f.name, mine + theirs)
            else:
                raise TypeError(f"RouterStats.{f.name}: cannot add {type(mine).__name__}")
    return total


def describe(stats: RouterStats) -> str:
    """The counts a router reports when it stops (ids and numbers only)."""
    return (f"{stats.signals} signals, {sum(stats.deliveries.values())} deliveries, "
            f"{sum(stats.denials.values())} denials, "
            f"{sum(stats.retractions.values())} retractions, "
            f"{sum(stats.dead_letters.values())} dead letters")


# ---- the workers --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRun:
    """How a set of workers ended: the exit status (the first failure's; 1 if a worker died
    on its own) and each worker's final statistics (``None``: it reported none)."""

    status: int
    stats: list[RouterStats | None]

    @property
    def total(self) -> RouterStats:
        return sum_stats(s for s in self.stats if s is not None)


async def run_workers(conn: KafkaConnection, topics: Topics, envs: Sequence[Mapping[str, str]],
                      group: str, *, until_idle: float | None = None,
                      stop: asyncio.Event | None = None) -> WorkerRun:
    """Run one router process per environment of ``envs`` in group ``group`` (module doc),
    until all have exited: each once idle for ``until_idle`` seconds, or all drained once
    ``stop`` is set. UsageError if an ingress topic has fewer partitions than workers;
    cancelled, the workers are stopped (SIGTERM) and waited for."""
    check_partitions(await ingress_partitions(conn, topics), len(envs))
    children: list[asyncio.subprocess.Process] = []
    try:
        for env in envs:
            child = await asyncio.create_subprocess_exec(
                *child_args(group, until_idle), env=dict(env), stdout=asyncio.subprocess.PIPE)
            children.append(child)  # stopped with the others if a later one fails to start
    except BaseException:
        await _stop_all(children)
        raise
    typer.echo(f"router: {len(children)} workers in group {group} "
               f"(pids {' '.join(str(p.pid) for p in children)})", err=True)
    outputs = [asyncio.ensure_future(_read(p)) for p in children]
    try:
        status = await _supervise(children, stop or asyncio.Event())
    except BaseException:
        await _stop_all(children)
        raise
    return WorkerRun(status, [_reported(i, await out) for i, out in enumerate(outputs)])


async def _read(p: asyncio.subprocess.Process) -> bytes:
    assert p.stdout is not None
    return await p.stdout.read()


def _reported(index: int, output: bytes) -> RouterStats | None:
    """The statistics on the last JSON line of worker ``index``'s output, if any."""
    lines = [line for line in output.decode(errors="replace").splitlines()
             if line.startswith("{")]
    if not lines:
        return None
    try:
        return stats_from_json(lines[-1])
    except PlanrError as exc:
        typer.echo(f"router worker {index}: {exc}", err=True)
        return None


async def _supervise(children: list[asyncio.subprocess.Process], stop: asyncio.Event) -> int:
    """Wait for every child; on ``stop``, or when one fails, SIGTERM the others."""
    pending: set[asyncio.Future[Any]] = {asyncio.ensure_future(p.wait()) for p in children}
    stopper = asyncio.ensure_future(stop.wait())
    status, stopping = 0, False
    try:
        while pending:
            done, pending = await asyncio.wait(pending if stopping else pending | {stopper},
                                               return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
            failed = any(p.returncode not in (None, 0) for p in children)
            if not stopping and (stopper in done or failed):
                status = 0 if stopper in done else 1
                stopping = True
                _terminate(children)
    finally:
        stopper.cancel()
    codes = [p.returncode for p in children]
    return status or next((code for code in codes if code), 0)


def _terminate(children: list[asyncio.subprocess.Process]) -> None:
    for p in children:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)


async def _stop_all(children: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM every child still running and wait for it (SIGKILL after the grace)."""
    _terminate(children)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in children)), STOP_GRACE)
    except TimeoutError:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()


def supervise(c: Context, workers: int, group: str, until_idle: float | None, *,
              as_json: bool = False) -> int:
    """``planr route --workers N``: run the workers, forwarding SIGTERM/SIGINT; print the
    total (and with ``as_json`` the summed statistics on stdout); returns the exit status."""
    if c.settings.metrics_port is not None and c.settings.metrics_port + workers - 1 > 65535:
        fail(f"--workers {workers}: metrics ports from {c.settings.metrics_port} exceed 65535",
             code=2)
    conn = c.connection()

    async def go() -> WorkerRun:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        return await run_workers(conn, c.topics, [child_env(c, i) for i in range(workers)],
                                 group, until_idle=until_idle, stop=stop)

    try:
        run = asyncio.run(go())
    except UsageError as exc:
        fail(str(exc), code=2)
    except BrokerError as exc:
        fail(str(exc))
    total = run.total
    typer.echo(f"routed by {workers} workers together: {describe(total)}", err=True)
    if as_json:
        typer.echo(stats_to_json(total))
    return run.status
