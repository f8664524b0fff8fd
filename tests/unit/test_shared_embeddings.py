"""Screening and recall share one embedding of the user's message."""

from __future__ import annotations

import asyncio
import os
from typing import Sequence

import numpy as np

from salience.memory.shared_embeddings import SharedEmbeddings


class CountingEmbedder:
    name = "counting"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32).reshape(len(texts), 2)


async def test_a_text_embedded_once_is_not_embedded_again():
    inner = CountingEmbedder()
    shared = SharedEmbeddings(inner, size=2)
    first = await shared.embed(["I feel low", "hello"])
    again = await shared.embed(["hello", "I feel low"])
    assert inner.embedded == ["I feel low", "hello"]
    assert np.array_equal(again, first[::-1])
    assert shared.name == "counting"


async def test_only_the_most_recent_texts_are_kept():
    inner = CountingEmbedder()
    shared = SharedEmbeddings(inner, size=2)
    for text in ["a", "bb", "ccc", "a"]:
        await shared.embed([text])
    assert inner.embedded == ["a", "bb", "ccc", "a"]
    assert (await shared.embed([])).shape[0] == 0


class SlowEmbedder(CountingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        await self.release.wait()
        return await super().embed(texts)


async def test_a_text_started_early_is_embedded_once_for_every_caller_waiting_on_it():
    inner = SlowEmbedder()
    shared = SharedEmbeddings(inner)
    shared.start("I feel low")
    screening = asyncio.create_task(shared.embed(["I feel low"]))
    recall = asyncio.create_task(shared.embed(["I feel low"]))
    await asyncio.sleep(0.01)
    assert not screening.done() and not recall.done()  # both wait for the run already going
    inner.release.set()
    first, second = await screening, await recall
    assert inner.embedded == ["I feel low"]
    assert np.array_equal(first, second)


class FailingOnceEmbedder(CountingEmbedder):
    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not self.embedded:
            self.embedded.append("<failed>")
            raise RuntimeError("model not ready")
        return await super().embed(texts)


async def test_a_failed_early_start_is_retried_by_the_caller_that_needs_the_vector():
    inner = FailingOnceEmbedder()
    shared = SharedEmbeddings(inner)
    shared.start("hello")
    await asyncio.sleep(0)
    vector = await shared.embed(["hello"])
    assert inner.embedded == ["<failed>", "hello"] and vector.shape == (1, 2)


class SubmittingEmbedder(CountingEmbedder):
    """A local model's shape: ``submit`` starts the run before anyone awaits it."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted: list[str] = []

    def submit(self, text: str) -> asyncio.Future[np.ndarray]:
        self.submitted.append(text)
        future = asyncio.get_running_loop().create_future()
        future.set_result(np.array([float(len(text)), 1.0], dtype=np.float32))
        return future


async def test_start_submits_to_an_embedder_that_can_begin_at_once_and_embeds_with_any_other():
    from salience.memory.embed import StartsEarly, SubmitsEarly

    local, hosted = SubmittingEmbedder(), CountingEmbedder()
    assert isinstance(local, SubmitsEarly) and not isinstance(hosted, SubmitsEarly)
    for inner in (local, hosted):
        shared = SharedEmbeddings(inner)
        assert isinstance(shared, StartsEarly)
        shared.start("I feel low")
        vector = (await shared.embed(["I feel low"]))[0]
        assert vector[0] == len("I feel low")
    assert local.submitted == ["I feel low"] and local.embedded == []  # one run, started by start
    assert hosted.embedded == ["I feel low"]


async def test_a_vector_the_serving_process_embedded_is_read_from_the_table_not_embedded_again():
    from salience.memory.vector_table import VectorTable

    serving_table = VectorTable()
    serving = SharedEmbeddings(CountingEmbedder(), table=serving_table)
    said = await serving.embed(["My sister Sarah starts chemo on Monday."])

    worker_embedder = CountingEmbedder()  # the worker process: the same table through its descriptor
    worker = SharedEmbeddings(worker_embedder, table=VectorTable(os.dup(serving_table.fd)))
    vectors = await worker.embed(["My sister Sarah starts chemo on Monday.", "We went to the lake."])
    assert worker_embedder.embedded == ["We went to the lake."]  # only the text the serving process never saw
    assert np.array_equal(vectors[0], said[0])
    assert serving_table.get("counting", "We went to the lake.") is not None  # the worker's own are shared too
