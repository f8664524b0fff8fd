"""Costs of compliance on the SQLite store: encryption at rest on the read path recall uses,
erasing one memory, erasing a user (with VACUUM), and appending/verifying the audit chain.

    python bench/compliance/run.py [--memories 1000] [--users 50]

Writes bench/results/compliance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from salience.compliance.audit import verify_tenant
from salience.compliance.crypto import TenantKeyring
from salience.model import AuditDraft, ExtractionJob, MemoryItem, Message, UserRef, utcnow
from salience.store.base import open_store

KEYRING = TenantKeyring({"t": "bench-master-key-" + "x" * 32})


def memories(user: UserRef, n: int) -> tuple[ExtractionJob, list[MemoryItem]]:
    now = utcnow()
    rng = np.random.default_rng(0)
    msgs = [Message(f"msg{i}", "user", f"I remember the sentence number {i} about my life.", now, "s1") for i in range(n)]
    items = [
        MemoryItem(f"mem{i}", f"I remember the sentence number {i} about my life.", "fact", 0.5, "user", now, [f"msg{i}"],
                   embedding=rng.standard_normal(384).astype(np.float32))
        for i in range(n)
    ]
    return ExtractionJob(f"job-{user.user}", user, "s1", msgs), items


async def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def run(n_memories: int, n_users: int) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, cipher in (("plain", None), ("encrypted", KEYRING)):
            store = open_store(f"sqlite:///{Path(tmp) / (label + '.db')}", cipher)
            await store.open()
            for u in range(n_users):
                user = UserRef("t", f"user{u}")
                job, items = memories(user, n_memories if u == 0 else 50)
                await store.commit_extraction(job, items, [])
            alice = UserRef("t", "user0")
            load = await timed(lambda: store.load_memories(alice))
            counter = iter(range(10_000))

            async def erase_one() -> None:
                await store.erase_memory(alice, f"mem{next(counter)}", utcnow())

            erase = await timed(erase_one)
            users = iter(range(1, n_users))

            async def erase_user() -> None:
                await store.erase_user(UserRef("t", f"user{next(users)}"), utcnow())

            erase_u = await timed(erase_user, repeat=3)
            rows.append((label, load, erase, erase_u))
            if cipher is not None:
                drafts = [AuditDraft("t", "user0", "recall.inject", [f"mem{i}"]) for i in range(1000)]
                append = await timed(lambda: store.append_audit("t", drafts[:1], utcnow()), repeat=50)
                for start in range(0, 1000, 100):
                    await store.append_audit("t", drafts[start:start + 100], utcnow())
                verify = await timed(lambda: verify_tenant(store, "t"), repeat=3)
                entries = len(await store.list_audit("t"))
            size = (Path(tmp) / (label + ".db")).stat().st_size
            await store.close()
    lines = [
        "# Compliance costs (SQLite)",
        "",
        f"One user with {n_memories} memories among {n_users} users; medians; `python bench/compliance/run.py`.",
        "",
        f"| store | load_memories ({n_memories}) ms | erase one memory ms | erase a user (50 memories, VACUUM) ms |",
        "|---|---|---|---|",
        *[f"| {label} | {load:.1f} | {erase:.1f} | {erase_u:.1f} |" for label, load, erase, erase_u in rows],
        "",
        f"Audit: one append {append:.2f} ms; verifying a chain of {entries} entries {verify:.1f} ms.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    report = asyncio.run(run(args.memories, args.users))
    out = Path(__file__).resolve().parents[1] / "results" / "compliance.md"
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
