"""The shared client lifecycle: idempotent start/stop, async with, a warning when unclosed."""

from __future__ import annotations

import warnings

import pytest

from planr.errors import UsageError
from planr.lifecycle import Service


class Counting(Service):
    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    async def _open(self) -> None:
        self.opened += 1

    async def _close(self) -> None:
        self.closed += 1


async def test_start_and_stop_are_idempotent():
    s = Counting()
    await s.start()
    await s.start()
    assert s.started
    await s.stop()
    await s.stop()
    assert (s.opened, s.closed) == (1, 1)
    assert not s.started


async def test_async_with_closes_on_error():
    s = Counting()
    with pytest.raises(RuntimeError):
        async with s:
            raise RuntimeError("boom")
    assert s.closed == 1


async def test_a_stopped_service_cannot_be_restarted():
    s = Counting()
    await s.start()
    await s.stop()
    with pytest.raises(UsageError):
        await s.start()


async def test_stop_without_start_closes_nothing():
    s = Counting()
    await s.stop()
    assert s.closed == 0


async def test_an_unclosed_service_warns_when_collected():
    s = Counting()
    await s.start()
    with pytest.warns(ResourceWarning, match="unclosed Counting"):
        s.__del__()  # what the garbage collector calls
    await s.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.__del__()  # a stopped service is silent
