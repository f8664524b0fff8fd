"""Recall latency against memory-set size (1k, 10k, 100k synthetic memories for one user).

For each size: one user's memories in a real SQLite store, then N recalls of varied
questions through ``Recaller.recall`` (the same code the proxy runs), timed per call.
The baseline, measured in the same run, is the query embedding alone: the floor any
embedding-based recall pays. Writes bench/results/recall_scale.{json,md}.

    python bench/recall_scale/run.py [--sizes 1000 10000 100000] [--queries 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from salience.memory.embed import LocalMiniLMEmbedder
from salience.memory.recall import Recaller
from salience.memory.vectors import one_blas_thread
from salience.model import ExtractionJob, MemoryItem, UserRef, utcnow
from salience.settings import MemorySettings
from salience.store.base import open_store

PEOPLE = ["my sister", "my brother", "my mom", "my dad", "my friend Alex", "my boss", "my partner", "my son"]
VERBS = ["visited", "called", "argued with", "went hiking with", "cooked dinner for", "worried about", "helped"]
THINGS = ["in the park", "at the hospital", "on the weekend", "after work", "at the lake", "in Paris", "last spring"]
QUESTIONS = ["How is my sister doing?", "What did I do with my dad?", "Do you remember the hospital visit?",
             "What happened at the lake?", "Who did I argue with?", "What did I cook?", "Tell me about Paris."]


def synthetic_memories(count: int, dim: int, rng: random.Random) -> list[MemoryItem]:
    vectors = np.random.default_rng(7).standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = utcnow() - timedelta(days=365)
    return [
        MemoryItem(
            id=f"mem_{i}", text=f"I {rng.choice(VERBS)} {rng.choice(PEOPLE)} {rng.choice(THINGS)} (note {i}).",
            kind="event", importance=rng.random(), speaker="user",
            created_at=start + timedelta(minutes=5 * i), sources=[f"msg_{i}"], session_id=f"s{i // 20}",
            embedding=vectors[i],
        )
        for i in range(count)
    ]


async def measure(size: int, queries: int, embedder: LocalMiniLMEmbedder, work: Path,
                  torch_embedder: LocalMiniLMEmbedder | None) -> dict:
    store = open_store(f"sqlite:///{work / f'scale-{size}.db'}")
    await store.open()
    user = UserRef("bench", f"user-{size}")
    items = synthetic_memories(size, 384, random.Random(size))
    for start in range(0, size, 5000):
        job = ExtractionJob(id=f"job-{size}-{start}", user=user, session_id="s", messages=[])
        await store.commit_extraction(job, items[start:start + 5000], [])
    recaller = Recaller(store, embedder)
    settings = MemorySettings()
    started = time.perf_counter()
    await recaller.recall(user, "warm the cache", settings)  # builds the per-user arrays and BM25 index once
    build_seconds = time.perf_counter() - started
    recall_ms, embed_ms, torch_ms = [], [], []
    for n in range(queries):
        question = f"{QUESTIONS[n % len(QUESTIONS)]} ({size}-{n})"  # new text: nothing cached
        t0 = time.perf_counter()
        await embedder.embed([question + " again"])
        t1 = time.perf_counter()
        await recaller.recall(user, question, settings)
        t2 = time.perf_counter()
        embed_ms.append((t1 - t0) * 1000)
        recall_ms.append((t2 - t1) * 1000)
        if torch_embedder is not None:  # the previous runtime, same text, same moment: same noise
            t3 = time.perf_counter()
            await torch_embedder.embed([question + " again"])
            torch_ms.append((time.perf_counter() - t3) * 1000)
    await store.close()
    p = lambda xs, q: round(float(np.percentile(xs, q)), 2)  # noqa: E731
    return {
        "memories": size,
        "cache_build_seconds": round(build_seconds, 2),
        "recall_ms_p50": p(recall_ms, 50), "recall_ms_p95": p(recall_ms, 95),
        "embedding_only_ms_p50": p(embed_ms, 50),
        "recall_over_embedding_p50": round(p(recall_ms, 50) / p(embed_ms, 50), 2),
        "torch_embedding_ms_p50": p(torch_ms, 50) if torch_ms else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-torch", action="store_true", help="skip timing the torch runtime alongside")
    args = parser.parse_args()
    one_blas_thread()  # as in the serving process: the figures are what a reply pays there
    embedder = LocalMiniLMEmbedder(query_cache=0)  # every query embedded: the cost a new turn pays
    embedder.load()
    torch_embedder = None
    if not args.no_torch and embedder.runtime != "torch":
        torch_embedder = LocalMiniLMEmbedder(runtime="torch", query_cache=0)
        torch_embedder.load()
    with tempfile.TemporaryDirectory() as work:
        rows = [await measure(size, args.queries, embedder, Path(work), torch_embedder) for size in args.sizes]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recall_scale.json").write_text(
        json.dumps({"cores": os.cpu_count(), "embedder_runtime": embedder.runtime, "rows": rows}, indent=2))
    lines = [f"# Recall latency by memory-set size ({os.cpu_count()} cores, embedder on {embedder.runtime})", "",
             "| memories | recall p50 ms | recall p95 ms | query embedding alone p50 ms | recall / embedding | cache build s "
             "| torch embedding p50 ms (same run) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['memories']} | {r['recall_ms_p50']} | {r['recall_ms_p95']} | {r['embedding_only_ms_p50']} | "
              f"{r['recall_over_embedding_p50']} | {r['cache_build_seconds']} | {r['torch_embedding_ms_p50']} |" for r in rows]
    (args.out / "recall_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
