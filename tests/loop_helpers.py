"""A consume loop with no broker behind it: it hands out the batches it was given, then
nothing (for tests of :class:`planr.loop.ConsumeLoop` itself)."""

from __future__ import annotations

from planr.loop import Batch, ConsumeLoop


class ScriptedLoop(ConsumeLoop):
    """Hands out ``batches`` in order, then empty polls; subclasses say what handling and
    committing a batch do."""

    def __init__(self, batches: list[Batch]) -> None:
        super().__init__()
        self.batches = batches

    async def _open(self) -> None:
        return None

    async def _close(self) -> None:
        return None

    async def _poll(self) -> Batch:
        return self.batches.pop(0) if self.batches else {}
