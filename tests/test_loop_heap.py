"""A running service keeps the garbage collector out of its batches: what start-up built is
frozen, and the short-lived objects of a batch do not set off a young collection every few
hundred allocations (CPython's default threshold is 700)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from planr.loop import Batch
from tests.loop_helpers import ScriptedLoop


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """The collector's process-wide settings as they were before the test."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


class Allocating(ScriptedLoop):
    """One batch whose handling allocates ``objects`` small containers that die with it,
    counting the collections that run meanwhile."""

    def __init__(self, objects: int) -> None:
        super().__init__([{"tp": ["r"]}])
        self.objects = objects
        self.collections = 0
        self.frozen = 0

    def _count(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self.collections += 1

    async def _handle(self, batch: Batch) -> None:
        self.frozen = gc.get_freeze_count()
        gc.callbacks.append(self._count)
        try:
            # dicts in a list: tracked containers, each counted by the collector
            kept = [{"n": i} for i in range(self.objects)]
            del kept
        finally:
            gc.callbacks.remove(self._count)

    async def _commit(self, batch: Batch) -> None:
        return None


@pytest.mark.usefixtures("collector_restored")
async def test_a_batch_of_short_lived_objects_sets_off_almost_no_collection():
    gc.set_threshold(700, 10, 10)  # CPython's default, whatever ran before
    gc.unfreeze()
    loop = Allocating(objects=20_000)
    async with loop:
        await loop.run(until_idle=0.05)
    # at the default threshold, 20,000 containers set off ~28 young collections
    assert loop.collections <= 2
    assert loop.frozen > 0  # start-up's objects were moved out of the collector's way


@pytest.mark.usefixtures("collector_restored")
async def test_the_default_threshold_collects_often_so_the_check_above_can_fail():
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    counted = 0

    def count(phase: str, _info: dict[str, Any]) -> None:
        nonlocal counted
        counted += phase == "start"

    gc.callbacks.append(count)
    try:
        kept = [{"n": i} for i in range(20_000)]
        del kept
    finally:
        gc.callbacks.remove(count)
    assert counted > 2
