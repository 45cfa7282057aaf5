"""The lifecycle every long-lived client of planr-bus follows (as aiokafka's clients do):
``await start()`` / ``await stop()`` or ``async with``; ``stop()`` is idempotent; an object
started and never stopped warns when it is garbage-collected."""

from __future__ import annotations

import warnings
from types import TracebackType
from typing import Self

from planr.errors import UsageError


class Service:
    """Subclasses implement :meth:`_open` (undo its own partial work if it fails) and
    :meth:`_close` (release everything, flushing what is pending)."""

    _started: bool = False
    _closed: bool = False

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    @property
    def started(self) -> bool:
        return self._started and not self._closed

    async def start(self) -> None:
        if self._closed:
            raise UsageError(f"{type(self).__name__} was stopped; create a new one")
        if self._started:
            return
        await self._open()
        self._started = True

    async def stop(self) -> None:
        """Release the resources (flushing pending output); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        if self._started and not self._closed:
            warnings.warn(f"unclosed {type(self).__name__}: call stop()", ResourceWarning,
                          stacklevel=1)
