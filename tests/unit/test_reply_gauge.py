"""The serving process counts the replies it prepares; the extraction worker holds back for them,
but never for longer than it has worked, and a worker process sees the serving process's count."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from salience.reply_gauge import LONGEST_WAIT, ReplyGauge


async def timed_hold_back(gauge: ReplyGauge) -> float:
    started = time.monotonic()
    await gauge.hold_back()
    return time.monotonic() - started


async def test_the_worker_holds_back_while_a_reply_is_prepared_at_most_as_long_as_it_worked():
    gauge = ReplyGauge()
    assert await timed_hold_back(gauge) < 0.01  # no reply being prepared: no wait at all
    await asyncio.sleep(0.03)  # the worker works for 30 ms
    with gauge.preparing():
        assert gauge.replies_preparing == 1
        waited = await timed_hold_back(gauge)
        assert 0.025 <= waited < LONGEST_WAIT  # as long as it worked, not as long as the reply takes
        assert await timed_hold_back(gauge) < 0.01  # nothing worked since: it goes on at once
    assert gauge.replies_preparing == 0


async def held_back_while_a_reply_is_prepared(serving: ReplyGauge, worker: ReplyGauge) -> float:
    """How long ``worker`` holds back while ``serving`` prepares one reply for 15 ms (with plenty
    of allowance: the worker has been working)."""
    await asyncio.sleep(LONGEST_WAIT)

    async def prepare_a_reply() -> None:
        with serving.preparing():
            await asyncio.sleep(0.015)

    preparing = asyncio.ensure_future(prepare_a_reply())
    await asyncio.sleep(0)
    waited = await timed_hold_back(worker)
    await preparing
    return waited


async def test_the_worker_goes_on_as_soon_as_the_replies_have_gone_upstream():
    gauge = ReplyGauge()
    assert 0.01 <= await held_back_while_a_reply_is_prepared(gauge, gauge) < 0.035


def test_a_worker_process_sees_the_count_of_the_serving_process():
    gauge = ReplyGauge()
    read = (
        "import sys; from salience.reply_gauge import ReplyGauge; "
        f"print(ReplyGauge({gauge.fd}).replies_preparing)"
    )

    def child_reads() -> str:
        return subprocess.run([sys.executable, "-c", read], pass_fds=(gauge.fd,), capture_output=True, text=True,
                              check=True).stdout.strip()

    with gauge.preparing(), gauge.preparing():
        assert child_reads() == "2"
    assert child_reads() == "0"
    gauge.close()


async def test_a_wait_for_no_reply_ends_when_the_last_reply_being_prepared_goes_upstream():
    gauge = ReplyGauge()
    await asyncio.wait_for(gauge.until_no_replies(), 0.1)  # none: at once
    with gauge.preparing():
        waiting = asyncio.ensure_future(gauge.until_no_replies())
        with gauge.preparing():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.02)
        assert not waiting.done()  # one reply still being prepared
    await asyncio.wait_for(waiting, 0.1)
    gauge.close()


async def test_a_worker_elsewhere_is_woken_when_the_replies_have_gone_upstream_not_at_its_next_look(monkeypatch):
    import os

    import salience.reply_gauge as reply_gauge

    serving = ReplyGauge()
    if serving.wake_fd is None:  # no eventfd on this platform: the worker looks every POLL
        return
    worker = ReplyGauge(os.dup(serving.fd), os.dup(serving.wake_fd))  # what the worker process holds
    monkeypatch.setattr(reply_gauge, "POLL", 10.0)  # a worker that looked would sleep far past its allowance
    assert 0.01 <= await held_back_while_a_reply_is_prepared(serving, worker) < 0.03
    assert await timed_hold_back(worker) < 0.01  # a wake-up already read does not hold the next step
    serving.close()
    worker.close()
