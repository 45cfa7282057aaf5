"""The embedded broker manager: starts Tansu on loopback, answers Kafka, leaves no orphan."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planr.broker import EmbeddedBroker, kafka_answers, pid_alive

pytestmark = pytest.mark.kafka  # every test here starts or uses a broker

PLANR = str(Path(sys.executable).parent / "planr")


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return not pid_alive(pid)


def _tansu_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def test_embedded_broker_answers_kafka_on_loopback_and_stops():
    broker = EmbeddedBroker()
    with broker:
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        assert kafka_answers(host, int(port))
        pid = broker.pid
        assert pid is not None
    assert _wait_gone(pid)
    assert not kafka_answers(host, int(port))
    broker.terminate()  # idempotent


def test_planr_broker_prints_bootstrap_first_and_stops_on_sigterm():
    with subprocess.Popen([PLANR, "broker"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("bootstrap: 127.0.0.1:")
        host, port = first.removeprefix("bootstrap: ").split(":")
        assert kafka_answers(host, int(port))
        children = _tansu_children(proc.pid)
        assert children, "tansu runs as a child of planr broker"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert all(_wait_gone(c) for c in children)


def test_killed_parent_leaves_no_orphan_broker():
    with subprocess.Popen([PLANR, "broker"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("bootstrap: ")
        children = _tansu_children(proc.pid)
        assert children
        proc.kill()  # SIGKILL: no handler, no cleanup code runs in the parent
        proc.wait(timeout=10)
    assert all(_wait_gone(c) for c in children)
