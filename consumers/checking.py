"""Checking a store consumer's records before it sees them: the signature, then decoding.

:class:`RecordCheck` is the part of preparing a batch that reads no table and no state of
the consumer: for each record, its signature against the key registry (signed by a key of
the expected owner, valid now), then the consumer's own ``decode``. A record that fails is
answered with a :class:`Refused` (reason and detail: labels and ids, never content); the
consumer dead-letters it. It is picklable (the registry travels as its public entries, the
codec as its schemas), so that a :class:`CheckWorker` can run it in a process of its own.

Why a process: checking and decoding are more than half of the common-database projector's
CPU per record. In a thread they would hold the interpreter lock that the database driver's
thread needs; in a second process they run on another core while the consumer writes the
batch before (reading ahead, :mod:`consumers.tracked`). The process only ever sees records
and public keys, and hands back decoded values: the consumer alone writes, in its batch's
transaction, so the guarantees are those of one batch at a time whichever runs the check.

The worker ignores SIGINT and SIGTERM: the consumer drains its batch on a stop, then stops
the worker (:meth:`CheckWorker.stop`); and it exits as soon as its consumer's process is gone,
however that ended (SIGKILL included), instead of lingering. If the worker dies, the call in
flight raises :class:`CheckWorkerError` (retriable): the consumer fails like on any other
crash, having written nothing of that batch, and reads it again from its stored offsets after
a restart.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from planr.errors import PlanrError
from planr.loop import settle_heap
from planr.signing import KeyRegistry, SignatureError, verify_record

#: one record to check: its topic, value and headers
Item = tuple[str, bytes | None, Sequence[tuple[str, bytes]]]
#: per record, what ``decode`` returned (``None`` without one) or a :class:`Refused`; and the
#: seconds spent checking signatures
Checked = tuple[list[Any], float]
Check = Callable[[Sequence[Item]], Checked]

TOMBSTONE: Final = "record has no value (tombstone)"


class CheckWorkerError(PlanrError, RuntimeError):
    """The checking process died or could not start; nothing of the batch was written."""

    reason = "check_worker"
    retriable = True


@dataclass(frozen=True, slots=True)
class Refused:
    """A record the consumer must dead-letter: ``reason`` and ``detail`` as in the dead-letter
    record; for a signature, its sub-reason and the key id claimed (for the log)."""

    reason: str
    detail: str
    detail_reason: str | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class RecordCheck:
    """Signature first (``expected_owner``'s key in ``registry``, valid at the call's wall-clock
    time: record timestamps are not covered by signatures), then ``decode(topic, value)``,
    which raises a :class:`~planr.errors.PlanrError` for a record it refuses."""

    registry: KeyRegistry
    expected_owner: str
    decode: Callable[[str, bytes], Any] | None = None

    def __call__(self, items: Sequence[Item]) -> Checked:
        now = datetime.now(UTC)
        out: list[Any] = []
        verifying = 0.0
        for topic, value, headers in items:
            if value is None:
                out.append(Refused("undecodable", TOMBSTONE))
                continue
            started = time.perf_counter()
            try:
                verify_record(self.registry, topic, value, headers, at=now,
                              expected_owner=self.expected_owner)
            except SignatureError as exc:
                out.append(Refused(exc.reason, exc.detail, exc.detail_reason, exc.key_id))
                continue
            finally:
                verifying += time.perf_counter() - started
            if self.decode is None:
                out.append(None)
                continue
            try:
                out.append(self.decode(topic, value))
            except PlanrError as exc:
                out.append(Refused(exc.reason, str(exc)))
        return out, verifying


_check: list[Check] = []  # the worker process's check, set by _init


def _init(check: Check) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the consumer stops the worker (module doc)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True,
                         name="planr-check-parent").start()
    _check.append(check)
    settle_heap()


def _exit_with_parent(sentinel: int) -> None:
    """Once the consumer's process is gone (its sentinel ready), end this one: otherwise it
    would wait forever for work that a dead pool can no longer send."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _run(items: Sequence[Item]) -> Checked:
    return _check[0](items)


class CheckWorker:
    """One process running a check (:class:`RecordCheck`) for one consumer, started and
    stopped with it: ``async with`` or :meth:`start` / :meth:`stop`."""

    def __init__(self, check: Check) -> None:
        self._check = check
        self._pool: ProcessPoolExecutor | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id while started (for operators and tests)."""
        return self._pid if self._pool is not None else None

    async def start(self) -> None:
        """Start the process and wait until it can check (CheckWorkerError otherwise)."""
        if self._pool is not None:
            return
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(self._check,))
        try:
            self._pid = await self._call(os.getpid)
        except BaseException:
            await self.stop()
            raise

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            raise CheckWorkerError("the checking process is not started")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except BrokenProcessPool as exc:
            raise CheckWorkerError("the checking process died") from exc

    async def check(self, items: Sequence[Item]) -> Checked:
        """What the check answers for ``items``, from the process."""
        checked: Checked = await self._call(_run, items)
        return checked

    async def stop(self) -> None:
        """Stop the process (idempotent); a call in flight is let finish."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def __aenter__(self) -> CheckWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __del__(self) -> None:
        if self._pool is not None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)
            self._pool.shutdown(wait=False, cancel_futures=True)
