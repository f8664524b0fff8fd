"""Background loops stop when asked, whatever they were doing at that moment."""

from __future__ import annotations

import asyncio

from salience.background import Poller


async def stops_within(poller: Poller, seconds: float) -> bool:
    stopping = asyncio.ensure_future(poller.stop())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    return stopping in done


async def test_a_poller_nudged_as_it_is_stopped_still_stops():
    """A shutdown that lands just as new work wakes the loop (a turn queued while the server
    stops) must still end the loop: a lost cancellation left the app's shutdown waiting forever
    and its loops running against the store."""
    runs = 0

    async def run_once() -> int:
        nonlocal runs
        runs += 1
        return 0

    poller = Poller("test", run_once, poll_seconds=60)
    poller.start()
    await asyncio.sleep(0.01)  # the loop now waits for a nudge
    poller.notify()
    assert await stops_within(poller, 5)
    runs_at_stop = runs
    await asyncio.sleep(0.05)
    assert runs == runs_at_stop  # nothing runs after stop


async def test_a_poller_stops_while_its_work_is_running():
    started = asyncio.Event()

    async def run_once() -> int:
        started.set()
        await asyncio.sleep(60)
        return 1

    poller = Poller("test", run_once, poll_seconds=60)
    poller.start()
    await started.wait()
    assert await stops_within(poller, 5)
