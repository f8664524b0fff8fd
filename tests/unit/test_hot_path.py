"""The fast paths of recall keep its answers: the ONNX embedder, batched queries, the memory cache."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from salience.memory.embed import LocalMiniLMEmbedder
from salience.memory.recall import MemoryCache
from salience.model import ExtractionJob, MemoryItem, UserRef
from salience.store.base import open_store

TEXTS = ["My sister Sarah was just diagnosed with breast cancer.", "I start my new job as a nurse on Monday.",
         "word " * 300, "Ünïcödé façade, 東京 🙂", "a"]


def test_onnx_and_torch_runtimes_give_the_same_vectors(embedder: LocalMiniLMEmbedder):
    """Stored embeddings stay valid whichever runtime computed them: no re-embedding."""
    torch_embedder = LocalMiniLMEmbedder(runtime="torch")
    torch_embedder.load()
    onnx = embedder.embed_sync(TEXTS)
    reference = torch_embedder.embed_sync(TEXTS)
    assert embedder.runtime == "onnx"
    assert onnx.shape == reference.shape == (len(TEXTS), 384)
    assert float((onnx * reference).sum(axis=1).min()) > 0.999


async def test_queries_embedded_together_equal_queries_embedded_alone(embedder: LocalMiniLMEmbedder):
    queries = [f"How is my sister doing after visit {n}?" for n in range(20)]
    together = await asyncio.gather(*(embedder.embed([q]) for q in queries))
    alone = LocalMiniLMEmbedder(query_cache=0)
    alone.load()
    for query, vector in zip(queries, together):
        assert vector.shape == (1, 384)
        assert float(vector[0] @ alone.embed_sync([query])[0]) > 0.9999
    together[0][0, 0] = 42.0  # the caller's copy: the cached vector is untouched
    assert float((await embedder.embed([queries[0]]))[0, 0]) != 42.0


async def test_a_large_memory_set_is_served_while_it_is_rebuilt(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path / 'cache.db'}")
    await store.open()
    user = UserRef("t", "u")
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def memories(first: int, count: int) -> list[MemoryItem]:
        vectors = np.eye(384, dtype=np.float32)
        return [MemoryItem(id=f"mem_{n}", text=f"I went to place number {n}.", kind="event", importance=0.5,
                           speaker="user", created_at=start + timedelta(minutes=n), sources=[f"msg_{n}"],
                           embedding=vectors[n]) for n in range(first, first + count)]

    try:
        await store.commit_extraction(ExtractionJob(id="j1", user=user, session_id="s", messages=[]), memories(0, 5), [])
        cache = MemoryCache(store)
        cache.REBUILD_IN_BACKGROUND_FROM = 3  # "large" for this test
        assert len((await cache.get(user)).items) == 5  # a first set is built before answering

        await store.commit_extraction(ExtractionJob(id="j2", user=user, session_id="s", messages=[]), memories(5, 1), [])
        assert len((await cache.get(user)).items) == 5  # the set as it was, while it is rebuilt
        await asyncio.gather(*cache._rebuilding.values())
        assert len((await cache.get(user)).items) == 6

        cache.REBUILD_IN_BACKGROUND_FROM = 100  # small sets are rebuilt before answering
        await store.commit_extraction(ExtractionJob(id="j3", user=user, session_id="s", messages=[]), memories(6, 1), [])
        assert len((await cache.get(user)).items) == 7
    finally:
        await store.close()
