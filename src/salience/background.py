"""Background loops: drain work until none is due, then wait for a nudge or the next poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("salience.background")


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


class Poller:
    """Calls ``run_once`` (which returns how much it did) until it does nothing, then sleeps
    until ``notify`` or ``poll_seconds``. Errors are logged by type only (never content) and
    the loop goes on: the store may be briefly unavailable."""

    def __init__(self, name: str, run_once: Callable[[], Awaitable[int]], poll_seconds: float) -> None:
        self.name = name
        self.run_once = run_once
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                while await self.run_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("%s loop error: %s", self.name, type(exc).__name__)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            except asyncio.TimeoutError:
                pass

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
