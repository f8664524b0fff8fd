"""The extraction worker takes the turns queued close together as one batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from salience.exchange import Turn, exchange_messages, extraction_job
from salience.memory.embed import LocalMiniLMEmbedder
from salience.memory.extract import SelfDisclosureExtractor
from salience.model import UserRef, utcnow
from salience.store.base import Store, open_store
from salience.worker import ExtractionWorker

TURNS = {
    UserRef("t", "ana"): ["I adopted a grey cat called Pebble in 2024.", "My brother Farid is getting married in June."],
    UserRef("t", "ben"): ["I have been learning to play the violin on weekends."],
}


@asynccontextmanager
async def running_worker(
    db: Path, embedder: LocalMiniLMEmbedder, gather_seconds: float
) -> AsyncIterator[tuple[Store, ExtractionWorker, list[UserRef]]]:
    """A started worker on a real SQLite file, idle and waiting for a nudge, and the users it announces."""
    store = open_store(f"sqlite:///{db}")
    await store.open()
    worker = ExtractionWorker(store, SelfDisclosureExtractor(), embedder, poll_seconds=30, gather_seconds=gather_seconds)
    announced: list[UserRef] = []
    worker.on_user_committed = announced.append
    worker.start()
    try:
        await asyncio.sleep(0.2)  # it has found nothing queued and waits
        yield store, worker, announced
    finally:
        await worker.stop()
        await store.close()


async def queue_turn(store: Store, worker: ExtractionWorker, user: UserRef, text: str) -> None:
    now = utcnow()
    messages = exchange_messages(user, f"s-{user.user}", now, [Turn(0, "user", text)])
    assert await store.enqueue_extraction(extraction_job(user, f"s-{user.user}", messages), now)
    worker.notify()


async def extracted(store: Store, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await store.pending_extractions():
        assert time.monotonic() < deadline, "the queued turns were never extracted"
        await asyncio.sleep(0.02)


async def test_turns_queued_together_are_extracted_as_one_batch_and_each_commit_announced(
    tmp_path: Path, embedder: LocalMiniLMEmbedder
):
    async with running_worker(tmp_path / "batches.db", embedder, gather_seconds=0.5) as (store, worker, announced):
        queued_at = time.monotonic()
        for user, texts in TURNS.items():
            for text in texts:
                await queue_turn(store, worker, user, text)
        await extracted(store)
        # it waited for the turns queued after the first nudge, then took them in one go
        assert time.monotonic() - queued_at >= 0.5
        # each job's user as its commit lands: the serving process catches up in the background
        assert announced == [user for user, texts in TURNS.items() for _ in texts]
        for user, texts in TURNS.items():
            assert sorted(m.text for m in await store.load_memories(user)) == sorted(texts)


async def test_without_a_gathering_pause_each_nudge_is_served_at_once(tmp_path: Path, embedder: LocalMiniLMEmbedder):
    async with running_worker(tmp_path / "at-once.db", embedder, gather_seconds=0) as (store, worker, announced):
        user = UserRef("t", "ana")
        for text in TURNS[user]:
            await queue_turn(store, worker, user, text)
            await extracted(store)
        assert announced == [user, user]


async def test_the_worker_holds_back_before_each_step_while_replies_are_prepared(
    tmp_path: Path, embedder: LocalMiniLMEmbedder
):
    """A job waits for the replies being prepared (reply_gauge.py) before it extracts, reads the
    user's memories, embeds and writes: its memories are still committed."""
    from salience.reply_gauge import ReplyGauge

    store = open_store(f"sqlite:///{tmp_path / 'held.db'}")
    await store.open()
    gauge = ReplyGauge()
    steps: list[int] = []

    async def hold_back() -> None:
        steps.append(gauge.replies_preparing)
        await gauge.hold_back()

    worker = ExtractionWorker(store, SelfDisclosureExtractor(), embedder, hold_back=hold_back)
    user, text = UserRef("t", "cyd"), "I adopted a grey cat called Pebble in 2024."
    now = utcnow()
    await store.enqueue_extraction(extraction_job(user, "s", exchange_messages(user, "s", now, [Turn(0, "user", text)])), now)
    try:
        with gauge.preparing():
            started = time.monotonic()
            await worker.run_once()
            assert time.monotonic() - started >= 0.001  # it did hold back for the reply
        assert steps == [1, 1, 1, 1]  # extract, memories, embed, person model
        assert [m.text for m in await store.load_memories(user)] == [text]
    finally:
        await store.close()
