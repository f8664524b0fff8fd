"""Background loops: drain work until none is due, then wait for a nudge or the next poll."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("salience.background")
T = TypeVar("T")


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has stopped.

    A task can lose a cancellation (Python 3.11's ``asyncio.wait_for`` drops one that lands as
    its inner wait completes), so it is cancelled again until it is done; and the wait is
    ``asyncio.wait``, so that the caller's own cancellation is never mistaken for the task's."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def at_once() -> None:
    """A wait that does not wait: the default where a component may be told what to wait for."""


class Poller:
    """Calls ``run_once`` (which returns how much it did) until it does nothing, then sleeps
    until ``notify`` or ``poll_seconds``. Errors are logged by type only (never content) and
    the loop goes on: the store may be briefly unavailable.

    ``gather_seconds``: how long to wait after a nudge before running, so that the work queued
    meanwhile is taken in one go (the extraction worker: one batch instead of one job per turn)."""

    def __init__(
        self, name: str, run_once: Callable[[], Awaitable[int]], poll_seconds: float, gather_seconds: float = 0.0
    ) -> None:
        self.name = name
        self.run_once = run_once
        self.poll_seconds = poll_seconds
        self.gather_seconds = gather_seconds
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
                async with asyncio.timeout(self.poll_seconds):  # not wait_for: it can drop a cancellation
                    await self._wake.wait()
            except TimeoutError:
                continue
            if self.gather_seconds:
                await asyncio.sleep(self.gather_seconds)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None


class SpacedTasks:
    """At most one background task per user, each started no sooner than ``spacing`` times as
    long as the user's last one took after it ended: a very talkative user with a large memory
    can take about ``1 / spacing`` of the process, not more. Failures are logged by type only;
    what the task was to refresh keeps serving as it was."""

    def __init__(self, what: str, spacing: float, max_users: int) -> None:
        self.what = what  # for the log: "memory set rebuild", "person model reload"
        self.spacing = spacing
        self.max_users = max_users
        self.running: dict[Hashable, asyncio.Task[None]] = {}
        self._next_start: dict[Hashable, float] = {}  # monotonic time the user's next task may start

    def start(self, user: Hashable, work: Callable[[], Awaitable[object]]) -> None:
        """Start ``work`` for ``user`` unless one is running or it is too soon after the last."""
        running = self.running.get(user)
        # a task left on another (closed) event loop will never finish: start afresh
        idle = running is None or running.done() or running.get_loop() is not asyncio.get_running_loop()
        if idle and time.monotonic() >= self._next_start.get(user, 0.0):
            self.running[user] = asyncio.create_task(self._timed(user, work))

    def cancel(self, user: Hashable) -> None:
        running = self.running.pop(user, None)
        if running is not None and not running.done():
            running.cancel()

    async def _timed(self, user: Hashable, work: Callable[[], Awaitable[object]]) -> None:
        started = time.monotonic()
        try:
            await work()
        except Exception as exc:
            log.warning("%s failed: %s", self.what, type(exc).__name__)
        finally:
            finished = time.monotonic()
            self._next_start[user] = finished + self.spacing * (finished - started)
            if len(self._next_start) > self.max_users:
                self._next_start.pop(next(iter(self._next_start)))
            self.running.pop(user, None)


class SharedRuns(Generic[T]):
    """One run per key at a time: a caller asking for a key whose run is under way waits for
    that run instead of starting another (a user's requests and the refresh after a commit
    catch up a cached set once). Shielded: a caller that goes away does not cancel it for the
    others."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        # a run left on another (closed) event loop will never finish: start afresh
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = self._running[key] = asyncio.ensure_future(work())
            running.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(running)

    def _forget(self, key: Hashable, done: asyncio.Future[T]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
