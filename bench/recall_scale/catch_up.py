"""How long a cached memory set takes to become current after an extraction.

A user with 10,000 memories (the synthetic ones of ``run.py``) in a real store; the serving
process' ``MemoryCache`` holds their set. Then, N times: an extraction commits 3 new memories
and reinforces 1 (``commit_extraction``, as the worker does), and the cache is timed bringing
the set up to date:

    catch-up   ``MemoryCache.get_checked``: what the changes since the held version cost
    full       ``MemoryCache._build``: load every memory and build the set afresh, which is what
               every version move cost before catch-ups (in a background task for large sets)

On SQLite (a file) and Redis (a private redis-server on a free port, or ``--redis-url``).
``--modes full`` runs on code without catch-ups too, for a before/after on the same machine.
Writes bench/results/catch_up.{json,md}.

    python bench/recall_scale/catch_up.py [--memories 10000] [--rounds 30] [--encrypt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from salience.memory.memory_cache import MemoryCache
from salience.model import ExtractionJob, MemoryItem, UserRef, utcnow
from salience.store.base import open_store

from run import synthetic_memories  # noqa: E402  (bench/recall_scale/run.py, beside this file)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for processes.py
from processes import PrivateRedis  # noqa: E402

USER = UserRef("bench", "catch-up")


def extraction(round_no: int, held: list[MemoryItem], rng: random.Random) -> tuple[ExtractionJob, list[MemoryItem], list[MemoryItem]]:
    """A turn's extraction: 3 new memories, 1 reinforced."""
    now = utcnow()
    vectors = np.random.default_rng(round_no).standard_normal((3, held[0].embedding.shape[0])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    added = [
        MemoryItem(
            id=f"new_{round_no}_{k}", text=f"I told my sister about the lake (turn {round_no}, {k}).", kind="event",
            importance=0.6, speaker="user", created_at=now, last_reinforced_at=now,
            sources=[f"turn_{round_no}"], session_id=f"turn_{round_no}", embedding=vectors[k],
        )
        for k in range(3)
    ]
    target = held[rng.randrange(len(held))]
    reinforced = replace(target, mention_count=target.mention_count + 1, last_reinforced_at=now,
                         sources=[*target.sources, f"turn_{round_no}"])
    held[held.index(target)] = reinforced
    job = ExtractionJob(id=f"job_{round_no}", user=USER, session_id=f"turn_{round_no}", messages=[])
    return job, added, [reinforced]


async def measure(url: str, mode: str, memories: int, rounds: int, cipher) -> dict:
    store = open_store(url, cipher)
    await store.open()
    rng = random.Random(memories)
    items = synthetic_memories(memories, 384, rng)
    for start in range(0, memories, 5000):
        await store.commit_extraction(
            ExtractionJob(id=f"seed_{start}", user=USER, session_id="s", messages=[]), items[start:start + 5000], []
        )
    cache = MemoryCache(store)
    await cache.get_checked(USER)  # the first, full build
    timings = []
    for round_no in range(rounds):
        job, added, reinforced = extraction(round_no, items, rng)
        await store.commit_extraction(job, added, reinforced)
        started = time.perf_counter()
        if mode == "catch-up":
            memory_set, current = await cache.get_checked(USER)
            assert current, "the set was not brought up to date before answering"
        else:
            memory_set = await cache._build(USER, await store.memory_version(USER))
        timings.append((time.perf_counter() - started) * 1000)
        assert {m.id for m in added} <= set(memory_set.ids if hasattr(memory_set, "ids") else (m.id for m in memory_set.items))
    await store.erase_user(USER, utcnow())
    await store.close()
    return {
        "store": url.split(":", 1)[0], "mode": mode, "memories": memories, "rounds": rounds,
        "ms_p50": round(float(np.percentile(timings, 50)), 2), "ms_p95": round(float(np.percentile(timings, 95)), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "redis"])
    parser.add_argument("--modes", nargs="+", default=["catch-up", "full"])
    parser.add_argument("--redis-url", help="a Redis to use instead of a private redis-server (its data is left alone but for the bench user)")
    parser.add_argument("--encrypt", action="store_true", help="memory text encrypted at rest, as with a tenant master key")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    cipher = None
    if args.encrypt:
        from salience.compliance.crypto import TenantKeyring

        cipher = TenantKeyring({USER.tenant: "a-master-key-for-the-benchmark-only-0123456789"})
    rows = []
    with tempfile.TemporaryDirectory() as work:
        private_redis = None
        try:
            for backend in args.backends:
                for mode in args.modes:
                    if backend == "sqlite":
                        url = f"sqlite:///{Path(work) / f'catch-up-{mode}.db'}"
                    else:
                        if args.redis_url is None and private_redis is None:
                            private_redis = PrivateRedis(Path(work) / "redis")
                            args.redis_url = private_redis.url
                        url = args.redis_url
                    rows.append(await measure(url, mode, args.memories, args.rounds, cipher))
                    print(rows[-1], flush=True)
        finally:
            if private_redis is not None:
                private_redis.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"cores": os.cpu_count(), "encrypted": args.encrypt, "rows": rows}
    (args.out / "catch_up.json").write_text(json.dumps(meta, indent=2))
    lines = [f"# Bringing a cached memory set current after an extraction (3 added, 1 reinforced; "
             f"{os.cpu_count()} cores{', text encrypted' if args.encrypt else ''})", "",
             "| store | memories | how | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    lines += [f"| {r['store']} | {r['memories']} | {r['mode']} | {r['ms_p50']} | {r['ms_p95']} |" for r in rows]
    (args.out / "catch_up.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
