"""A commit refused because the group rebalanced (a worker joined or left) does not stop a
consuming service: the batch's outputs were acknowledged, the new owner of its partitions
reads it again (deduplicated downstream), and the loop goes on to the next batch."""

from __future__ import annotations

import pytest
from aiokafka.errors import CommitFailedError

from planr.loop import Batch
from tests.loop_helpers import ScriptedLoop


class Scripted(ScriptedLoop):
    """Hands out two one-record batches; the first commit is refused by a rebalance."""

    def __init__(self) -> None:
        super().__init__([{"tp-a": ["r1"]}, {"tp-a": ["r2"]}])
        self.handled: list[Batch] = []
        self.committed: list[Batch] = []

    async def _handle(self, batch: Batch) -> None:
        self.handled.append(batch)

    async def _commit(self, batch: Batch) -> None:
        if not self.committed and len(self.handled) == 1:
            self.committed.append({})
            raise CommitFailedError("rebalanced")
        self.committed.append(batch)


async def test_a_commit_lost_to_a_rebalance_does_not_stop_the_loop():
    loop = Scripted()
    async with loop:
        await loop.run(until_idle=0.1)
    assert len(loop.handled) == 2  # the second batch was still handled
    assert loop.committed[-1] == {"tp-a": ["r2"]}  # and committed


async def test_other_commit_errors_still_stop_the_loop():
    class Broken(Scripted):
        async def _commit(self, batch: Batch) -> None:
            raise RuntimeError("broker gone")

    loop = Broken()
    with pytest.raises(RuntimeError, match="broker gone"):
        async with loop:
            await loop.run(until_idle=0.1)
