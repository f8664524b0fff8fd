"""Bytes per user and per memory in Redis, measured with MEMORY USAGE on a real redis-server.

    python bench/replicas/key_sizes.py [--users 200] [--memories 50]

Writes ``users`` users with ``memories`` memories each (384-dim float32 embeddings, the size
all-MiniLM-L6-v2 gives; one message per memory, one session) through ``RedisStore``, then
reports MEMORY USAGE by key kind and INFO used_memory per user. Runs offline, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import numpy as np

from common import PrivateRedis
from salience.exchange import Turn, exchange_messages, extraction_job
from salience.model import MemoryItem, UserRef, stable_id, utcnow
from salience.store.base import open_store

SENTENCE = "My sister Sarah was just diagnosed with breast cancer and starts chemo in May."  # 78 chars


def kind_of(key: str) -> str:
    tail = key.split("}", 1)[1] if "}" in key else key
    parts = tail.strip(":").split(":")
    return parts[0] if parts[0] not in {"job"} else "job"


async def fill(url: str, users: int, memories: int) -> None:
    store = open_store(url)
    await store.open()
    rng = np.random.default_rng(7)
    for u in range(users):
        user = UserRef("acme", f"user-{u:06d}")
        session = await store.resolve_session(user, None, utcnow(), timedelta(minutes=30))
        for m in range(memories):
            now = utcnow()
            [message] = exchange_messages(user, session, now, [Turn(m, "user", SENTENCE)])
            vector = rng.standard_normal(384).astype(np.float32)
            item = MemoryItem(
                id=stable_id("mem", user.tenant, user.user, message.id, SENTENCE), text=SENTENCE, kind="relationship",
                importance=0.9, speaker="user", created_at=now, last_reinforced_at=now, sources=[message.id],
                session_id=session, embedding=vector / np.linalg.norm(vector),
            )
            await store.commit_extraction(extraction_job(user, session, [message]), [item], [])
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--memories", type=int, default=50)
    parser.add_argument("--listpack-value", type=int, default=None,
                        help="set hash-max-listpack-value first (default 64 keeps a memory hash with its "
                             "1,536-byte embedding in the larger hashtable encoding)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = PrivateRedis(Path(tmp))
        try:
            if args.listpack_value:
                server.client.config_set("hash-max-listpack-value", args.listpack_value)
            baseline = server.client.info("memory")["used_memory"]
            asyncio.run(fill(server.url, args.users, args.memories))
            used = server.client.info("memory")["used_memory"] - baseline
            sizes: dict[str, list[int]] = defaultdict(list)
            for key in server.client.scan_iter(count=1000):
                sizes[kind_of(key.decode())].append(server.client.memory_usage(key, samples=0))
            keys = sum(len(v) for v in sizes.values())
        finally:
            server.stop()
    print(f"{args.users} users x {args.memories} memories, {keys} keys")
    print(f"{'key kind':<10} {'keys':>8} {'median B':>9} {'total MB':>9}")
    for kind, values in sorted(sizes.items()):
        print(f"{kind:<10} {len(values):>8} {statistics.median(values):>9.0f} {sum(values) / 1e6:>9.2f}")
    per_user = used / args.users
    print(f"INFO used_memory: {used / 1e6:.1f} MB -> {per_user:,.0f} B per user, "
          f"{per_user / args.memories:,.0f} B per memory (with its message and done marker)")


if __name__ == "__main__":
    main()
