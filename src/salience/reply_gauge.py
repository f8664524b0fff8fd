"""How many replies the serving process is preparing right now, shared with the extraction worker.

A reply is prepared between its request and its upstream call (identify, screen, recall,
inject); after that it only waits for the upstream. On a 2-core machine the extraction worker's
work slows whatever runs beside it on the other core: the model and the event loop share more
than the scheduler shows (in one process, a query embedded while the other core ran 2 ms of
Python came back 1.6 ms later). With extraction on, replies were 4-6% slower at p50 than with it
off, though the worker runs at the lowest CPU priority (docs/performance.md).

So the serving process counts the replies it is preparing (``preparing``), and the worker,
before each step of a job, waits while that count is not zero (``hold_back``): at concurrency 1
it works while the replies wait for their upstreams. It never waits longer than it has worked
since it last waited, so under constant load it still runs at least half the time and keeps up.

The count is one integer on a shared memory page. ``salience serve`` hands the page's file
descriptor to the worker process it starts (``--replies-fd``), with an eventfd the serving
process writes whenever the count falls to zero (``--replies-wake-fd``): a worker held back
wakes then, instead of looking at the count every few milliseconds (looks that themselves ran
beside the replies, and came up to 5 ms late). With ``extraction.process: inline`` the worker
reads the same object in the same process.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from salience.shared_memory import anonymous_file

PAGE = mmap.PAGESIZE
LONGEST_WAIT = 0.05  # seconds a step is held back at most, however long the worker has worked
POLL = 0.005  # seconds between looks while held back


class ReplyGauge:
    def __init__(self, fd: int | None = None, wake_fd: int | None = None) -> None:
        """A new page (the serving process), or the page behind an inherited ``fd`` and the
        ``wake_fd`` that comes with it (the worker)."""
        if fd is None:
            fd = anonymous_file("salience-replies", PAGE)
            wake_fd = _new_wake_fd()
        self.fd = fd
        # written when the count falls to zero: a worker held back wakes at once instead of
        # polling the count (an eventfd; None where there is none, and then it polls)
        self.wake_fd = wake_fd
        self._page = mmap.mmap(fd, PAGE)
        self._count = memoryview(self._page).cast("q")  # an aligned 8-byte word: read and written whole
        self._may_wait = 0.0
        self._until_none: list[asyncio.Future[None]] = []  # this process's waiters for a count of zero
        self._working_since = time.monotonic()

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Count a reply as being prepared for the duration."""
        self._count[0] += 1
        try:
            yield
        finally:
            self._count[0] -= 1
            if not self._count[0]:
                if self.wake_fd is not None:
                    os.eventfd_write(self.wake_fd, 1)
                waiting, self._until_none = self._until_none, []
                for waiter in waiting:
                    if not waiter.done() and not waiter.get_loop().is_closed():
                        waiter.set_result(None)

    async def until_no_replies(self) -> None:
        """Return once no reply is being prepared (in the serving process, whose own count wakes
        it: no polling). The serving process's refreshes after a commit wait so, rather than hold
        the event loop in the middle of a reply."""
        if self._count[0]:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._until_none.append(waiter)
            await waiter

    @property
    def replies_preparing(self) -> int:
        return int(self._count[0])

    async def hold_back(self) -> None:
        """Wait while replies are being prepared, at most as long as the worker has worked since
        it last waited (and ``LONGEST_WAIT``)."""
        started = time.monotonic()
        may_wait = min(LONGEST_WAIT, self._may_wait + started - self._working_since)
        deadline = started + may_wait
        if self.wake_fd is not None:
            await self._woken_or_past(deadline)
        else:
            while self._count[0] > 0 and time.monotonic() < deadline:
                await asyncio.sleep(POLL)
        now = time.monotonic()
        self._may_wait = max(0.0, may_wait - (now - started))
        self._working_since = now

    async def _woken_or_past(self, deadline: float) -> None:
        """Wait until the count is zero (the serving process writes ``wake_fd`` then) or the
        deadline has passed."""
        assert self.wake_fd is not None
        loop = asyncio.get_running_loop()
        while self._count[0] > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            woken: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.wake_fd, lambda: woken.done() or woken.set_result(None))
            try:
                if self._count[0] > 0:  # (a write from before is still there to read: at worst one more turn)
                    await asyncio.wait({woken}, timeout=left)
            finally:
                loop.remove_reader(self.wake_fd)
                _drain(self.wake_fd)

    def close(self) -> None:
        """Close the descriptors (the page stays mapped while this object lives)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.wake_fd is not None:
            os.close(self.wake_fd)
            self.wake_fd = None


def _new_wake_fd() -> int | None:
    if not hasattr(os, "eventfd"):  # Linux only
        return None
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:  # nothing written since the last read
        pass
