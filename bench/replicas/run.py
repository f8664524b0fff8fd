"""Two salience replicas on one Redis, 1,000 simulated users. Loopback only; stops by itself.

    python bench/replicas/run.py [--users 1000] [--concurrency 64] [--deadline 900]

1. Starts a private redis-server and two ``salience serve`` replicas (echo upstream, local
   embedder), all on 127.0.0.1 free ports, in a temporary directory.
2. tell:   every user tells two facts, the first through replica A, the second through B.
3. drain:  waits until the shared extraction queue is empty (both replicas' workers drain it).
4. recall: every user asks about the first fact through replica B, and the reply (the echo
   upstream repeats what was injected) must show the fact A's user told.
Prints latencies, throughput, queue drain time, cross-replica recall and Redis memory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from common import PrivateRedis, start_replica

API_KEY = "sk-bench-replicas-key"
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Ema", "Farid", "Gus", "Hiro", "Ines", "Jon"]
PETS = ["Pebble", "Miso", "Tofu", "Juniper", "Biscuit", "Olive", "Pepper", "Clover", "Nori", "Sage"]


def facts(index: int) -> tuple[str, str, str]:
    name, pet = NAMES[index % 10], PETS[(index // 10) % 10]
    return (
        f"My brother {name} is getting married in June.",
        f"I adopted a grey cat called {pet} last winter.",
        "What should I say in my speech at my brother's wedding?",
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, latencies: list[float], seconds: float) -> str:
    ms = [v * 1000 for v in latencies]
    return (f"{name:<7} {len(ms):>6} requests in {seconds:6.1f} s = {len(ms) / seconds:6.1f} req/s; "
            f"latency p50 {percentile(ms, 0.5):6.1f} ms, p95 {percentile(ms, 0.95):6.1f} ms, "
            f"p99 {percentile(ms, 0.99):6.1f} ms, max {max(ms):6.1f} ms")


async def phase(clients: list[httpx.AsyncClient], users: int, concurrency: int, pick) -> tuple[list[float], list[str], float]:
    """Run one request per user; ``pick(index)`` gives (replica index, text)."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    replies: list[str] = [""] * users

    async def one(index: int) -> None:
        replica, text = pick(index)
        async with gate:
            started = time.perf_counter()
            response = await clients[replica].post("/v1/chat/completions", json={
                "model": "bench", "messages": [{"role": "user", "content": text}],
            }, headers={"X-Salience-User": f"user-{index:05d}", "X-Salience-Session": "s1"})
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            replies[index] = response.json()["choices"][0]["message"]["content"]

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(users)))
    return latencies, replies, time.perf_counter() - started


async def bench(urls: list[str], redis: PrivateRedis, users: int, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=urls[0], headers=headers, limits=limits, timeout=60) as a, \
            httpx.AsyncClient(base_url=urls[1], headers=headers, limits=limits, timeout=60) as b:
        clients = [a, b]
        baseline = redis.client.info("memory")["used_memory"]
        tell_started = time.perf_counter()
        first, _, t1 = await phase(clients, users, concurrency, lambda i: (0, facts(i)[0]))
        second, _, t2 = await phase(clients, users, concurrency, lambda i: (1, facts(i)[1]))
        print(summary("tell", first + second, t1 + t2))

        while int(redis.client.hget("salience:{queue}:pending", "*") or 0):
            await asyncio.sleep(0.1)
        drained = time.perf_counter() - tell_started
        print(f"drain   {2 * users} extraction jobs queued and extracted {drained:6.1f} s after the first request "
              f"({2 * users / drained:.1f} jobs/s across both replicas)")
        used = redis.client.info("memory")["used_memory"] - baseline
        print(f"redis   {redis.client.dbsize()} keys, {used / 1e6:.1f} MB for {users} users = {used / users:,.0f} B per "
              f"user (2 memories, 2 exchanges of 2 messages, 1 session, 2 done markers, queue records)")

        asked, replies, t3 = await phase(clients, users, concurrency, lambda i: (1, facts(i)[2]))
        print(summary("recall", asked, t3))
        recalled = sum(facts(i)[0].removesuffix(".") in reply for i, reply in enumerate(replies))
        print(f"cross-replica recall: {recalled}/{users} users got the fact told through A injected through B")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight across both replicas")
    parser.add_argument("--deadline", type=float, default=900, help="seconds before the run gives up")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="salience-bench-") as tmp:
        root = Path(tmp)
        (root / "config" / "tenants").mkdir(parents=True)
        (root / "config" / "salience.yaml").write_text(yaml.safe_dump({"log_level": "warning"}))
        (root / "config" / "tenants" / "bench.yaml").write_text(
            yaml.safe_dump({"api_keys": [API_KEY], "upstream": {"transport": "echo"}})
        )
        redis = PrivateRedis(root / "redis")
        replicas = [
            start_replica(root / "config", redis.url, root / f"replica-{name}.log", {"SALIENCE_DATA_DIR": str(root / name)})
            for name in ("a", "b")
        ]
        try:
            for replica in replicas:
                replica.wait_ready()
            print(f"2 replicas on one redis-server, {args.users} users, {args.concurrency} requests in flight")
            asyncio.run(asyncio.wait_for(bench([r.url for r in replicas], redis, args.users, args.concurrency),
                                         timeout=args.deadline))
        except asyncio.TimeoutError:
            sys.exit(f"gave up after {args.deadline} s")
        finally:
            for replica in replicas:
                replica.stop()
            redis.stop()


if __name__ == "__main__":
    main()
