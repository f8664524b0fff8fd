"""Compliance through the Store protocol, on both backends: erasure, the audit chain, encryption."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import redis

from salience.compliance.audit import verify_chain
from salience.compliance.crypto import TenantKeyring
from salience.model import (
    AuditDraft, Entity, ExtractionJob, MemoryItem, Message, MessageSignal, OutboxEvent, SafetyRecord, UserRef, utcnow,
)
from salience.store.base import MasterKeyMissing, open_store
from tests.conftest import STORE_BACKENDS

ALICE = UserRef("tenant-a", "alice")
BOB = UserRef("tenant-a", "bob")
SECRET = "My sister Marguerite lives in Reykjavik."
KEYRING = TenantKeyring({"tenant-a": "a-master-key-for-tests-only-0123456789"})


@pytest.fixture(params=STORE_BACKENDS)
async def backend(request, tmp_path):
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        url, inspect = server.url, server
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
        inspect = tmp_path / "store.db"
    store = open_store(url, KEYRING)
    await store.open()
    yield store, inspect
    await store.close()


def message(message_id: str, text: str) -> Message:
    return Message(id=message_id, role="user", content=text, created_at=utcnow(), session_id="s1")


def memory(memory_id: str, text: str, source: str) -> MemoryItem:
    now = utcnow()
    return MemoryItem(id=memory_id, text=text, kind="fact", importance=0.5, speaker="user", created_at=now,
                      last_reinforced_at=now, sources=[source], embedding=np.ones(4, dtype=np.float32) / 2)


async def remember(store, user: UserRef, n: int = 3) -> None:
    texts = [SECRET] + [f"I like walking number {i}." for i in range(1, n)]
    job = ExtractionJob(id=f"job-{user.user}", user=user, session_id="s1",
                        messages=[message(f"msg-{user.user}-{i}", t) for i, t in enumerate(texts)])
    await store.resolve_session(user, "s1", utcnow(), timedelta(minutes=30))
    await store.commit_extraction(job, [memory(f"mem-{user.user}-{i}", t, f"msg-{user.user}-{i}") for i, t in enumerate(texts)], [])


def all_bytes(inspect) -> bytes:
    if isinstance(inspect, Path):
        return b"".join(p.read_bytes() for p in inspect.parent.glob(inspect.name + "*"))
    client: redis.Redis = inspect.client()
    out = bytearray()
    for key in client.scan_iter(count=1000):
        out += key
        kind = client.type(key)
        if kind == b"string":
            out += client.get(key) or b""
        elif kind == b"hash":
            for f, v in client.hgetall(key).items():
                out += f + v
        elif kind == b"list":
            out += b"".join(client.lrange(key, 0, -1))
        elif kind == b"zset":
            out += b"".join(client.zrange(key, 0, -1))
        elif kind == b"stream":
            out += repr(client.xrange(key)).encode()
    return bytes(out)


async def test_text_is_encrypted_at_rest_and_reads_back(backend):
    store, inspect = backend
    await remember(store, ALICE)
    await store.enqueue_extraction(ExtractionJob("job-q", ALICE, "s1", [message("msg-q", SECRET + " Again.")]), utcnow())
    await store.save_trace("tenant-a", "trace-1", {"user": "alice", "messages": [{"content": SECRET}]}, utcnow(), ["mem-alice-0"])
    assert (await store.get_memory(ALICE, "mem-alice-0")).text == SECRET
    assert (await store.get_trace("tenant-a", "trace-1"))["messages"][0]["content"] == SECRET
    [claimed] = await store.claim_extraction_jobs(5, utcnow(), timedelta(seconds=30))
    assert claimed.messages[0].content == SECRET + " Again."
    assert [m.content for m in await store.load_messages(ALICE, ["msg-alice-0"])] == [SECRET]
    await store.save_entities(ALICE, [Entity("ent-1", "person", "Marguerite", ["my aunt", "Marguerite"], "aunt")], [("ent-1", "mem-alice-0")])
    await store.save_message_signals(ALICE, [MessageSignal("msg-alice-0", "s1", utcnow(), -0.4, ["Marguerite"])])
    assert [e.name for e in await store.load_entities(ALICE)] == ["Marguerite"]
    assert (await store.load_message_signals(ALICE))[0].topics == ["Marguerite"]
    assert b"Marguerite" not in all_bytes(inspect)
    assert b"my aunt" not in all_bytes(inspect)


async def test_erase_memory_removes_what_derives_from_it(backend):
    store, _ = backend
    await remember(store, ALICE)
    record = SafetyRecord(first_flagged_at=utcnow(), last_flagged_at=utcnow(), seen_message_ids=["msg-alice-0", "other"])
    await store.save_safety_update(ALICE, record, [], [], utcnow())
    await store.enqueue_extraction(ExtractionJob("job-again", ALICE, "s1", [message("msg-alice-0", SECRET)]), utcnow())
    await store.save_trace("tenant-a", "t-hit", {"user": "alice"}, utcnow(), ["mem-alice-0"])
    await store.save_trace("tenant-a", "t-miss", {"user": "alice"}, utcnow(), ["mem-alice-1"])
    # an entity only this memory names, and one another memory names too
    only, shared = Entity("ent-only", "person", "Marguerite"), Entity("ent-shared", "person", "Sam")
    await store.save_entities(ALICE, [only, shared], [("ent-only", "mem-alice-0"), ("ent-shared", "mem-alice-0"),
                                                      ("ent-shared", "mem-alice-1")])
    await store.save_message_signals(ALICE, [MessageSignal("msg-alice-0", "s1", utcnow(), -0.5, ["ent-only"]),
                                             MessageSignal("msg-alice-1", "s1", utcnow(), 0.2, ["ent-shared"])])
    before = await store.memory_version(ALICE)
    receipt = await store.erase_memory(ALICE, "mem-alice-0", utcnow())
    assert receipt.removed == {"memories": 1, "embeddings": 1, "messages": 1, "extraction_jobs": 1, "traces": 1,
                               "safety_references": 1, "entity_links": 2, "entities": 1, "message_signals": 1}
    assert [(e.id, e.memory_ids) for e in await store.load_entities(ALICE)] == [("ent-shared", ["mem-alice-1"])]
    assert [s.message_id for s in await store.load_message_signals(ALICE)] == ["msg-alice-1"]
    assert await store.get_memory(ALICE, "mem-alice-0") is None
    assert [m.id for m in await store.load_memories(ALICE)] == ["mem-alice-1", "mem-alice-2"]
    assert await store.load_messages(ALICE, ["msg-alice-0"]) == []
    assert await store.get_trace("tenant-a", "t-hit") is None and await store.get_trace("tenant-a", "t-miss") is not None
    assert await store.pending_extractions(ALICE) == 0
    assert (await store.get_safety_record(ALICE)).seen_message_ids == ["other"]
    assert await store.memory_version(ALICE) > before
    assert await store.erase_memory(ALICE, "mem-alice-0", utcnow()) is None


async def test_erase_user_leaves_nothing_of_theirs_but_audit(backend):
    store, inspect = backend
    await remember(store, ALICE)
    await remember(store, BOB)
    await store.enqueue_extraction(ExtractionJob("job-q", ALICE, "s1", [message("msg-q", "queued words")]), utcnow())
    await store.save_trace("tenant-a", "t1", {"user": "alice"}, utcnow(), ["mem-alice-0"])
    event = OutboxEvent("evt-1", "tenant-a", "safety.escalation", {"user": "alice"}, utcnow())
    await store.save_safety_update(ALICE, SafetyRecord(first_flagged_at=utcnow(), last_flagged_at=utcnow()), [], [event], utcnow())
    await store.append_audit("tenant-a", [AuditDraft("tenant-a", "alice", "memory.write", ["mem-alice-0"])], utcnow())
    await store.save_entities(ALICE, [Entity("ent-1", "person", "Marguerite")], [("ent-1", "mem-alice-0")])
    await store.save_message_signals(ALICE, [MessageSignal("msg-alice-0", "s1", utcnow(), -0.5, ["ent-1"])])
    version = await store.memory_version(ALICE)
    receipt = await store.erase_user(ALICE, utcnow())
    assert (receipt.removed["entities"], receipt.removed["entity_links"], receipt.removed["message_signals"]) == (1, 1, 1)
    assert await store.load_entities(ALICE) == [] and await store.load_message_signals(ALICE) == []
    assert receipt.removed["memories"] == 3 and receipt.removed["data_keys"] == 1
    assert receipt.removed["extraction_jobs"] >= 1 and receipt.removed["outbox_events"] == 1
    assert not await store.user_exists(ALICE) and await store.user_exists(BOB)
    assert await store.pending_extractions(ALICE) == 0 and await store.pending_outbox() == 0
    assert len(await store.load_memories(BOB)) == 3
    assert [e.action for e in await store.list_audit("tenant-a", "alice")] == ["memory.write"]
    if isinstance(inspect, Path):
        conn = sqlite3.connect(inspect)
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            if table in {"audit_log", "audit_heads"}:
                continue
            for row in conn.execute(f"SELECT * FROM {table}"):
                assert "alice" not in repr(row), (table, row)
    else:
        client = inspect.client()
        for key in client.scan_iter(count=1000):
            if b"{audit:" in key:
                continue
            assert b"alice" not in key, key
            assert b"alice" not in all_bytes_of(client, key), key
    # seen again after erasure: a version never used before, so no stale recall cache applies
    await remember(store, ALICE, n=1)
    assert await store.memory_version(ALICE) > version


def all_bytes_of(client: redis.Redis, key: bytes) -> bytes:
    kind = client.type(key)
    if kind == b"hash":
        return b"".join(f + v for f, v in client.hgetall(key).items())
    if kind == b"string":
        return client.get(key) or b""
    if kind == b"stream":
        return repr(client.xrange(key)).encode()
    if kind == b"zset":
        return b"".join(client.zrange(key, 0, -1))
    return b""


async def test_audit_chain_verifies_and_is_per_tenant(backend):
    store, _ = backend
    for action in ("memory.write", "recall.inject", "export"):
        await store.append_audit("tenant-a", [AuditDraft("tenant-a", "alice", action, ["mem-1"], "req-1")], utcnow())
    await store.append_audit("tenant-b", [AuditDraft("tenant-b", "alice", "export")], utcnow())
    entries = await store.list_audit("tenant-a")
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[1].prev_hash == entries[0].hash
    assert verify_chain("tenant-a", entries, await store.audit_head("tenant-a")).ok
    assert [e.seq for e in await store.list_audit("tenant-b")] == [1]
    edited = [*entries]
    edited[1].ids = ["mem-2"]
    assert verify_chain("tenant-a", edited, await store.audit_head("tenant-a")).bad_seq == 2
    removed = [entries[0], entries[2]]
    assert verify_chain("tenant-a", removed, await store.audit_head("tenant-a")).bad_seq == 2
    truncated = entries[:2]
    assert not verify_chain("tenant-a", truncated, await store.audit_head("tenant-a")).ok


async def test_expired_memories_skip_pinned_and_recent(backend):
    store, _ = backend
    await remember(store, ALICE)
    assert await store.expired_memories("tenant-a", utcnow() - timedelta(days=1), 100) == []
    found = await store.expired_memories("tenant-a", utcnow() + timedelta(seconds=1), 100)
    assert sorted(m for _, m in found) == ["mem-alice-0", "mem-alice-1", "mem-alice-2"]
    assert {u for u, _ in found} == {ALICE}


async def test_a_job_erased_while_being_processed_commits_nothing(backend):
    store, _ = backend
    await store.enqueue_extraction(ExtractionJob("job-late", ALICE, "s1", [message("msg-late", SECRET)]), utcnow())
    [claimed] = await store.claim_extraction_jobs(5, utcnow(), timedelta(seconds=30))
    await store.erase_user(ALICE, utcnow())  # the worker is still extracting
    await store.commit_extraction(claimed, [memory("mem-late", SECRET, "msg-late")], [])
    assert await store.load_memories(ALICE) == [] and not await store.user_exists(ALICE)


async def test_encrypted_text_is_never_returned_without_its_master_key(backend, tmp_path):
    store, inspect = backend
    await remember(store, ALICE, n=1)
    url = inspect.url if not isinstance(inspect, Path) else f"sqlite:///{inspect}"
    keyless = open_store(url)  # the same data, the tenant's master key not configured
    await keyless.open()
    try:
        with pytest.raises(MasterKeyMissing):
            await keyless.load_memories(ALICE)
        with pytest.raises(MasterKeyMissing):
            await keyless.get_memory(ALICE, "mem-alice-0")
    finally:
        await keyless.close()


async def test_receipts_name_the_same_kinds_on_every_backend(backend):
    store, _ = backend
    await remember(store, ALICE)
    one = await store.erase_memory(ALICE, "mem-alice-1", utcnow())
    assert set(one.removed) == {"memories", "embeddings", "messages", "extraction_jobs", "traces", "safety_references",
                                "entity_links", "entities", "message_signals"}
    everything = await store.erase_user(ALICE, utcnow())
    assert set(everything.removed) == {"memories", "embeddings", "messages", "sessions", "extraction_jobs", "traces",
                                       "safety_records", "data_keys", "outbox_events", "entities", "entity_links",
                                       "message_signals"}
    assert everything.removed["memories"] == 2 and everything.removed["embeddings"] == 2


async def test_memory_changes_read_encrypted_text_back(backend):
    store, _ = backend
    await remember(store, ALICE)
    changes = await store.memory_changes(ALICE, 0, limit=10)
    assert [m.text for m in changes.changed][0] == SECRET
    assert changes.count == 3


async def test_traces_and_finished_jobs_and_events_are_kept_a_week_only(backend):
    """A debug trace quotes what went upstream; a finished job or delivered webhook event is
    only kept so that a repeat is recognised. Every store keeps them for ``FINISHED_KEPT``
    (given-up ones for ``GIVEN_UP_KEPT``) and no longer: Redis writes them with that expiry,
    SQLite's retention sweep deletes them. Work not finished is never pruned."""
    from salience.store.base import FINISHED_KEPT, GIVEN_UP_KEPT

    store, inspect = backend
    now = utcnow()
    await store.save_trace("tenant-a", "trace-1", {"user": "alice", "messages": [{"content": SECRET}]}, now, ["m"])
    for job_id in ("job-done", "job-given-up", "job-queued"):
        await store.enqueue_extraction(ExtractionJob(job_id, ALICE, "s1", [message(f"msg-{job_id}", "hello")]), now)
    claimed = {j.id: j for j in await store.claim_extraction_jobs(2, now, timedelta(seconds=30))}
    assert set(claimed) == {"job-done", "job-given-up"}
    await store.commit_extraction(claimed["job-done"], [], [])
    await store.retry_extraction("job-given-up", "boom", None)
    for event_id in ("ev-delivered", "ev-given-up", "ev-queued"):
        await store.enqueue_outbox(OutboxEvent(event_id, "tenant-a", "safety.escalation", {"id": event_id}, now), now)
    assert {e.id for e in await store.claim_outbox(2, now, timedelta(seconds=30))} == {"ev-delivered", "ev-given-up"}
    await store.ack_outbox("ev-delivered", now)
    await store.retry_outbox("ev-given-up", "webhook down", None)

    if isinstance(inspect, Path):  # SQLite: pruned by age, unfinished work left alone
        def rows() -> dict[str, int]:
            with sqlite3.connect(inspect) as conn:
                return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                        for t in ("traces", "trace_refs", "extraction_jobs", "outbox")}

        assert await store.prune_finished(now, 1000) == 0  # nothing is old yet
        assert await store.prune_finished(now + FINISHED_KEPT + timedelta(minutes=1), 1000) == 3
        assert await store.get_trace("tenant-a", "trace-1") is None
        assert rows() == {"traces": 0, "trace_refs": 0, "extraction_jobs": 2, "outbox": 2}
        assert await store.prune_finished(now + GIVEN_UP_KEPT + timedelta(minutes=1), 1000) == 2
        assert rows() == {"traces": 0, "trace_refs": 0, "extraction_jobs": 1, "outbox": 1}
    else:  # Redis: each written with its expiry; the store has nothing to prune
        client: redis.Redis = inspect.client()
        ttl = {key.decode(): client.ttl(key) for key in client.scan_iter(count=1000)}

        def ttl_of(fragment: str) -> int:
            [found] = [t for key, t in ttl.items() if key.endswith(fragment)]
            return found

        week, month = FINISHED_KEPT.total_seconds(), GIVEN_UP_KEPT.total_seconds()
        assert week - 60 < ttl_of(":trace:trace-1") <= week
        assert week - 60 < ttl_of(":traces") <= week and week - 60 < ttl_of(":traces:expiry") <= week
        assert week - 60 < ttl_of(":job:job-done") <= week and week - 60 < ttl_of(":event:ev-delivered") <= week
        assert month - 60 < ttl_of(":job:job-given-up") <= month and month - 60 < ttl_of(":event:ev-given-up") <= month
        assert ttl_of(":job:job-queued") == -1 and ttl_of(":event:ev-queued") == -1
        assert await store.prune_finished(now + GIVEN_UP_KEPT, 1000) == 0
    assert await store.pending_extractions() == 1 and await store.pending_outbox() == 1


async def test_redis_trace_index_forgets_traces_that_expired(redis_server, monkeypatch):
    """Redis expires a trace but cannot expire its entry in the user's erasure index: the next
    trace written drops the entries of those gone, so the index does not grow with every
    request, and an erasure receipt counts only traces that were still there."""
    import salience.store.redis as redis_store

    redis_server.flush()
    store = open_store(redis_server.url, KEYRING)
    await store.open()
    try:
        monkeypatch.setattr(redis_store, "TRACE_TTL", 1)
        for n in range(3):
            await store.save_trace("tenant-a", f"old-{n}", {"user": "alice", "messages": []}, utcnow(), [f"msg-{n}"])
        client: redis.Redis = redis_server.client()
        [index] = [k for k in client.scan_iter(match="*alice*:traces")]
        assert client.hlen(index) == 3
        await asyncio.sleep(1.2)
        monkeypatch.setattr(redis_store, "TRACE_TTL", 3600)
        await store.save_trace("tenant-a", "new", {"user": "alice", "messages": []}, utcnow(), ["msg-new"])
        assert set(client.hkeys(index)) == {b"new"}
        assert set(client.zrange(index + b":expiry", 0, -1)) == {b"new"}
        receipt = await store.erase_user(ALICE, utcnow())
        assert receipt.removed["traces"] == 1
    finally:
        await store.close()
