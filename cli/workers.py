"""``planr route --workers N``: N router processes in one consumer group.

The parent creates the ledger's schema once, checks that every ingress topic has at least N
partitions (a topic with fewer leaves some workers without its traffic), then starts N
children, each a ``planr route`` with the same settings and group (``python -m cli route``).
Worker ``i`` (0 to N-1) serves its metrics on ``PLANR_METRICS_PORT + i`` when that is set.
SIGTERM or SIGINT to the parent is passed to every child, each of which drains its batch in
flight, commits and exits; the parent exits once all have, with the first non-zero exit
status. If a child dies on its own, the others are stopped the same way and the parent
exits 1, so that the service manager restarts the whole set.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import typer

from cli.context import Context, fail
from planr.errors import BrokerError, UsageError
from planr.kafka import KafkaConnection, make_admin
from planr.topics import Topics


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
    args = [sys.executable, "-m", "cli", "route", "--group", group]
    if until_idle is not None:
        args += ["--until-idle", str(until_idle)]
    return args


def supervise(c: Context, workers: int, group: str, until_idle: float | None) -> int:
    """Start the workers and wait for them; returns the exit status."""
    try:
        counts = asyncio.run(ingress_partitions(c.connection(), c.topics))
        check_partitions(counts, workers)
    except UsageError as exc:
        fail(str(exc), code=2)
    except BrokerError as exc:
        fail(str(exc))
    if c.settings.metrics_port is not None and c.settings.metrics_port + workers - 1 > 65535:
        fail(f"--workers {workers}: metrics ports from {c.settings.metrics_port} exceed 65535",
             code=2)
    children = [subprocess.Popen(child_args(group, until_idle), env=child_env(c, i))  # noqa: S603
                for i in range(workers)]
    typer.echo(f"router: {workers} workers in group {group} "
               f"(pids {' '.join(str(p.pid) for p in children)})", err=True)
    return wait(children)


def wait(children: list[subprocess.Popen[bytes]]) -> int:
    """Forward SIGTERM/SIGINT to every child; wait for all; the first failure's status."""
    stopping = False

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in children:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while any(p.poll() is None for p in children):
            failed = [p for p in children if p.returncode not in (None, 0)]
            if failed and not stopping:
                status = 1
                forward(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = [p.returncode for p in children]
    return status or next((code for code in codes if code), 0)
