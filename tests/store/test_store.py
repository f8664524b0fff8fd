"""The Store protocol, written once, run on every backend: a SQLite file and a real redis-server."""

from __future__ import annotations

from dataclasses import replace

from datetime import timedelta

import numpy as np
import pytest

from salience.model import ExtractionJob, MemoryItem, Message, UserRef, utcnow
from salience.store.base import Store, open_store
from tests.conftest import STORE_BACKENDS

ALICE = UserRef("tenant-a", "alice")
ALICE_ELSEWHERE = UserRef("tenant-b", "alice")


@pytest.fixture
def store(each_store: Store) -> Store:
    return each_store


def memory(memory_id: str, text: str, **kwargs) -> MemoryItem:
    now = utcnow()
    return MemoryItem(
        id=memory_id, text=text, kind="fact", importance=0.5, speaker="user", created_at=now,
        last_reinforced_at=now, sources=[f"msg_{memory_id}"], embedding=np.ones(4, dtype=np.float32) / 2, **kwargs,
    )


def job(job_id: str, user: UserRef = ALICE, text: str = "hello") -> ExtractionJob:
    return ExtractionJob(
        id=job_id, user=user, session_id="s1",
        messages=[Message(id=f"m-{job_id}", role="user", content=text, created_at=utcnow(), session_id="s1")],
    )


async def test_store_satisfies_the_protocol(store):
    assert isinstance(store, Store)


async def test_memories_are_scoped_by_tenant_and_user(store):
    await store.commit_extraction(job("j1"), [memory("m1", "My sister is Sarah.")], [])
    assert [m.id for m in await store.load_memories(ALICE)] == ["m1"]
    assert await store.load_memories(ALICE_ELSEWHERE) == []
    assert await store.get_memory(ALICE_ELSEWHERE, "m1") is None
    loaded = (await store.load_memories(ALICE))[0]
    np.testing.assert_allclose(loaded.embedding, np.ones(4) / 2)
    assert loaded.sources == ["msg_m1"]


async def test_existing_memory_ids_names_only_the_users_live_memories(store):
    await store.commit_extraction(job("j1"), [memory("m1", "a"), memory("m2", "b")], [])
    await store.delete_memory(ALICE, "m2")
    assert await store.existing_memory_ids(ALICE, ["m1", "m2", "m3"]) == {"m1"}
    assert await store.existing_memory_ids(ALICE_ELSEWHERE, ["m1"]) == set()
    assert await store.existing_memory_ids(ALICE, []) == set()


async def test_commit_is_applied_once_and_bumps_the_version(store):
    before = await store.memory_version(ALICE)
    queued = job("j1")
    await store.enqueue_extraction(queued, utcnow())
    [claimed] = await store.claim_extraction_jobs(10, utcnow(), timedelta(seconds=60))
    await store.commit_extraction(claimed, [memory("m1", "x")], [])
    after_first = await store.memory_version(ALICE)
    reinforced = memory("m1", "x", mention_count=2)
    await store.commit_extraction(claimed, [], [reinforced])  # a second delivery of the same job
    assert (await store.get_memory(ALICE, "m1")).mention_count == 1
    assert after_first > before
    assert await store.memory_version(ALICE) == after_first
    assert await store.pending_extractions() == 0


async def test_enqueue_is_idempotent_and_jobs_are_leased(store):
    now = utcnow()
    assert await store.enqueue_extraction(job("j1"), now) is True
    assert await store.enqueue_extraction(job("j1"), now) is False
    assert await store.pending_extractions(ALICE) == 1
    assert await store.pending_extractions(ALICE_ELSEWHERE) == 0
    [first] = await store.claim_extraction_jobs(10, now, timedelta(seconds=30))
    assert first.messages[0].content == "hello" and first.attempts == 1
    assert await store.claim_extraction_jobs(10, now + timedelta(seconds=10), timedelta(seconds=30)) == []
    # the worker that held it died: its lease runs out and the job is delivered again
    [again] = await store.claim_extraction_jobs(10, now + timedelta(seconds=31), timedelta(seconds=30))
    assert again.id == "j1" and again.attempts == 2


async def test_retry_later_and_give_up(store):
    now = utcnow()
    await store.enqueue_extraction(job("j1"), now)
    await store.claim_extraction_jobs(10, now, timedelta(seconds=30))
    await store.retry_extraction("j1", "boom", now + timedelta(seconds=5))
    assert await store.claim_extraction_jobs(10, now, timedelta(seconds=30)) == []
    [retried] = await store.claim_extraction_jobs(10, now + timedelta(seconds=6), timedelta(seconds=30))
    await store.retry_extraction(retried.id, "boom again", None)
    assert await store.pending_extractions() == 0
    assert await store.claim_extraction_jobs(10, now + timedelta(days=1), timedelta(seconds=30)) == []


async def test_sessions_continue_within_the_gap_and_restart_after(store):
    now = utcnow()
    gap = timedelta(minutes=30)
    first = await store.resolve_session(ALICE, None, now, gap)
    assert await store.resolve_session(ALICE, None, now + timedelta(minutes=29), gap) == first
    later = await store.resolve_session(ALICE, None, now + timedelta(minutes=29 + 31), gap)
    assert later != first
    assert await store.resolve_session(ALICE, "explicit", now, gap) == "explicit"
    assert await store.resolve_session(ALICE_ELSEWHERE, None, now, gap) not in {first, later}


async def test_paging_and_traces(store):
    await store.commit_extraction(job("j1"), [memory(f"m{i}", f"fact {i}") for i in range(5)], [])
    page1, more1 = await store.list_memories(ALICE, 2)
    page2, more2 = await store.list_memories(ALICE, 2, after=page1[-1].id)
    page3, more3 = await store.list_memories(ALICE, 2, after=page2[-1].id)
    assert [m.id for m in page1 + page2 + page3] == [f"m{i}" for i in range(5)]
    assert (more1, more2, more3) == (True, True, False)
    await store.save_trace("tenant-a", "t1", {"messages": [1, 2]}, utcnow())
    assert await store.get_trace("tenant-a", "t1") == {"messages": [1, 2]}
    assert await store.get_trace("tenant-b", "t1") is None


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        return server.url
    return f"sqlite:///{tmp_path / 'durable.db'}"


async def test_data_survives_a_restart(store_url):
    first = open_store(store_url)
    await first.open()
    await first.enqueue_extraction(job("j1"), utcnow())
    await first.commit_extraction(job("j2"), [memory("m1", "kept")], [])
    await first.close()
    second = open_store(store_url)
    await second.open()  # schema set-up runs again: a no-op
    assert [m.text for m in await second.load_memories(ALICE)] == ["kept"]
    assert await second.pending_extractions() == 1
    await second.close()


async def test_two_replicas_share_memories_versions_and_the_queue(store_url):
    replica_a, replica_b = open_store(store_url), open_store(store_url)
    await replica_a.open()
    await replica_b.open()
    try:
        version = await replica_b.memory_version(ALICE)
        await replica_a.commit_extraction(job("j0"), [memory("m1", "written through A")], [])
        assert await replica_b.memory_version(ALICE) > version  # B's cache sees the change
        assert [m.text for m in await replica_b.load_memories(ALICE)] == ["written through A"]
        now = utcnow()
        for index in range(6):
            await replica_a.enqueue_extraction(job(f"j{index + 1}"), now)
        got_a = await replica_a.claim_extraction_jobs(3, now, timedelta(seconds=60))
        got_b = await replica_b.claim_extraction_jobs(10, now, timedelta(seconds=60))
        assert sorted(j.id for j in got_a + got_b) == [f"j{i}" for i in range(1, 7)]  # each job to one replica
        for claimed in got_b:
            await replica_b.commit_extraction(claimed, [], [])
        assert await replica_a.pending_extractions() == len(got_a)
    finally:
        await replica_a.close()
        await replica_b.close()


def test_unknown_store_url_is_refused():
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("mongodb://localhost")


# -- safety: the record, pinned memories, deletion, the outbox ---------------------------------
from salience.model import OutboxEvent, SafetyRecord  # noqa: E402


def event(event_id: str, tenant: str = "tenant-a") -> OutboxEvent:
    return OutboxEvent(id=event_id, tenant=tenant, kind="safety.escalation", payload={"id": event_id}, created_at=utcnow())


async def test_safety_update_is_saved_together_and_scoped(store):
    assert await store.get_safety_record(ALICE) is None
    now = utcnow()
    record = SafetyRecord(first_flagged_at=now, last_flagged_at=now, disclosures=1, latest_category="self_harm",
                          latest_severity="risk", seen_message_ids=["m1"], episode_id="ep1", episode_last_at=now,
                          escalated_severity="risk")
    pinned = memory("safe1", "self-harm; latest severity: risk", pinned=True)
    pinned.kind, pinned.embedding = "safety", None
    before = await store.memory_version(ALICE)
    await store.save_safety_update(ALICE, record, [pinned], [event("e1")], now)
    assert await store.get_safety_record(ALICE) == record
    assert await store.get_safety_record(ALICE_ELSEWHERE) is None
    assert await store.memory_version(ALICE) > before
    [loaded] = await store.load_memories(ALICE)
    assert loaded.pinned and loaded.kind == "safety" and loaded.embedding is None
    assert await store.pending_outbox("tenant-a") == 1 and await store.pending_outbox("tenant-b") == 0

    pinned.mention_count = 2
    await store.save_safety_update(ALICE, record, [pinned], [event("e1")], now)  # same event id: not queued twice
    assert (await store.get_memory(ALICE, "safe1")).mention_count == 2
    assert await store.pending_outbox() == 1


async def test_delete_memory_removes_it_and_bumps_the_version(store):
    await store.commit_extraction(job("j1"), [memory("m1", "x"), memory("m2", "y")], [])
    before = await store.memory_version(ALICE)
    assert await store.delete_memory(ALICE_ELSEWHERE, "m1") is False
    assert await store.delete_memory(ALICE, "m1") is True
    assert [m.id for m in await store.load_memories(ALICE)] == ["m2"]
    assert await store.memory_version(ALICE) > before
    assert await store.delete_memory(ALICE, "m1") is False


async def test_outbox_claims_leases_retries_and_acks(store):
    now = utcnow()
    assert await store.enqueue_outbox(event("e1"), now) is True
    assert await store.enqueue_outbox(event("e1"), now) is False
    [claimed] = await store.claim_outbox(10, now, timedelta(seconds=30))
    assert claimed.id == "e1" and claimed.attempts == 1 and claimed.payload == {"id": "e1"}
    assert await store.claim_outbox(10, now, timedelta(seconds=30)) == []  # leased
    await store.retry_outbox("e1", "HTTP 503", now + timedelta(seconds=5))
    assert await store.claim_outbox(10, now, timedelta(seconds=30)) == []  # not due yet
    [again] = await store.claim_outbox(10, now + timedelta(seconds=6), timedelta(seconds=30))
    assert again.attempts == 2
    await store.ack_outbox("e1", now)
    assert await store.claim_outbox(10, now + timedelta(hours=1), timedelta(seconds=30)) == []
    assert await store.pending_outbox() == 0


async def test_an_expired_outbox_lease_is_claimable_again_and_giving_up_is_final(store):
    now = utcnow()
    await store.enqueue_outbox(event("e1"), now)
    await store.claim_outbox(10, now, timedelta(seconds=30))
    [reclaimed] = await store.claim_outbox(10, now + timedelta(seconds=31), timedelta(seconds=30))
    assert reclaimed.attempts == 2
    await store.retry_outbox("e1", "gave up", None)
    assert await store.claim_outbox(10, now + timedelta(days=1), timedelta(seconds=30)) == []
    assert await store.pending_outbox() == 0


# -- the person model: entities and message signals ------------------------------------------


def entity(entity_id: str, name: str, aliases: list[str], relation: str | None = None):
    from salience.model import Entity

    return Entity(id=entity_id, type="person", name=name, aliases=aliases, relation=relation,
                  first_seen=utcnow(), last_seen=utcnow())


async def test_entities_keep_their_aliases_and_links_and_bump_the_version(store):
    before = await store.memory_version(ALICE)
    await store.save_entities(ALICE, [entity("e1", "my sister", ["my sister"], "sister")], [("e1", "m1")])
    await store.save_entities(ALICE, [entity("e1", "Sarah", ["Sarah"], "sister")], [("e1", "m2"), ("e1", "m1")])
    assert await store.memory_version(ALICE) > before
    [sarah] = await store.load_entities(ALICE)
    assert (sarah.name, sarah.relation) == ("Sarah", "sister")
    assert sarah.aliases == ["my sister", "Sarah"]  # a later save never loses an alias
    assert sorted(sarah.memory_ids) == ["m1", "m2"]
    assert await store.load_entities(ALICE_ELSEWHERE) == []


async def test_deleting_a_memory_removes_its_links_and_entities_left_without_memories(store):
    await store.commit_extraction(job("j1"), [memory("m1", "My sister Sarah is ill."), memory("m2", "Sarah is better.")], [])
    await store.save_entities(
        ALICE,
        [entity("sarah", "Sarah", ["Sarah"], "sister"), entity("tom", "Tom", ["Tom"])],
        [("sarah", "m1"), ("sarah", "m2"), ("tom", "m1")],
    )
    assert await store.delete_memory(ALICE, "m1")
    [sarah] = await store.load_entities(ALICE)
    assert sarah.id == "sarah" and sarah.memory_ids == ["m2"]
    await store.unlink_memory(ALICE, "m2")  # erasure of derived data alone, the memory stays
    assert await store.load_entities(ALICE) == []
    assert await store.get_memory(ALICE, "m2") is not None


async def test_message_signals_are_keyed_by_message_and_read_oldest_first(store):
    from salience.model import MessageSignal

    now = utcnow()
    later = MessageSignal("msg-2", "s2", now, -0.5, ["health"], flagged=True)
    earlier = MessageSignal("msg-1", "s1", now - timedelta(days=1), 0.4, ["work"])
    await store.save_message_signals(ALICE, [later, earlier])
    await store.save_message_signals(ALICE, [later])  # saving again changes nothing
    loaded = await store.load_message_signals(ALICE)
    assert [(s.message_id, s.session_id, s.mood, s.topics, s.flagged) for s in loaded] == [
        ("msg-1", "s1", 0.4, ["work"], False), ("msg-2", "s2", -0.5, ["health"], True),
    ]
    assert await store.load_message_signals(ALICE_ELSEWHERE) == []


async def test_message_signal_changes_name_what_was_written_since_and_count_erasures(store):
    from salience.model import MessageSignal

    now = utcnow()
    await store.save_message_signals(ALICE, [MessageSignal("msg-1", "s1", now, 0.4), MessageSignal("msg-2", "s1", now, 0.1)])
    held = await store.memory_version(ALICE)
    everything = await store.message_signal_changes(ALICE, 0, 10)
    assert sorted(s.message_id for s in everything.changed) == ["msg-1", "msg-2"] and everything.count == 2
    await store.save_message_signals(ALICE, [MessageSignal("msg-3", "s2", now, -0.3, ["work"])])
    since = await store.message_signal_changes(ALICE, held, 10)
    assert [(s.message_id, s.topics) for s in since.changed] == [("msg-3", ["work"])]
    assert since.count == 3 and since.version == await store.memory_version(ALICE) > held
    assert (await store.message_signal_changes(ALICE, held, 0)).changed is None  # more than the limit
    assert (await store.message_signal_changes(ALICE_ELSEWHERE, 0, 10)).changed == []
    # erasing the memory a message's signal came with: the count says one went
    await store.commit_extraction(job("j-signals"), [replace(memory("mem-s", "I started a new job."), sources=["msg-1"])], [])
    latest = await store.memory_version(ALICE)
    await store.erase_memory(ALICE, "mem-s", now)
    after = await store.message_signal_changes(ALICE, latest, 10)
    assert after.changed == [] and after.count == 2


# -- memory_changes: what a cache holding an older version reads to catch up --------------------


async def test_memory_changes_name_the_memories_written_since_a_version(store):
    await store.commit_extraction(job("j1"), [memory("m1", "My sister is Sarah."), memory("m2", "I like tea.")], [])
    held = await store.memory_version(ALICE)
    reinforced = memory("m1", "My sister is Sarah.", mention_count=2)
    reinforced.sources = ["msg_m1", "m-j2"]
    await store.commit_extraction(job("j2"), [memory("m3", "I moved to Lyon.")], [reinforced])

    changes = await store.memory_changes(ALICE, held, limit=100)
    assert changes.version == await store.memory_version(ALICE) > held
    assert changes.count == 3
    assert [m.id for m in changes.changed] == ["m1", "m3"]  # load order, the untouched m2 left out
    assert changes.changed[0].mention_count == 2 and changes.changed[0].sources == ["msg_m1", "m-j2"]
    assert changes.changed[1].text == "I moved to Lyon."
    np.testing.assert_allclose(changes.changed[1].embedding, np.ones(4) / 2)

    current = await store.memory_changes(ALICE, changes.version, limit=100)
    assert (current.version, current.count, current.changed) == (changes.version, 3, [])


async def test_memory_changes_count_tells_a_deletion_and_a_large_change_is_not_listed(store):
    await store.commit_extraction(job("j1"), [memory("m1", "a"), memory("m2", "b"), memory("m3", "c")], [])
    held = await store.memory_version(ALICE)
    await store.delete_memory(ALICE, "m2")
    changes = await store.memory_changes(ALICE, held, limit=100)
    assert changes.version > held and changes.count == 2 and changes.changed == []

    everything = await store.memory_changes(ALICE, 0, limit=1)
    assert everything.changed is None and everything.count == 2  # more than the limit: load in full
    assert [m.id for m in (await store.memory_changes(ALICE, 0, limit=2)).changed or []] == ["m1", "m3"]


async def test_memory_changes_include_replaced_pinned_memories(store):
    now = utcnow()
    record = SafetyRecord(first_flagged_at=now, last_flagged_at=now)
    pinned = memory("safe1", "self-harm; latest severity: risk", pinned=True)
    await store.save_safety_update(ALICE, record, [pinned], [], now)
    await store.commit_extraction(job("j1"), [memory("m1", "a")], [])
    held = await store.memory_version(ALICE)
    pinned.mention_count = 2
    await store.save_safety_update(ALICE, record, [pinned], [], now)
    changes = await store.memory_changes(ALICE, held, limit=100)
    assert [(m.id, m.pinned, m.mention_count) for m in changes.changed] == [("safe1", True, 2)]
    assert changes.count == 2


async def test_memory_changes_are_per_tenant_and_user(store):
    bob = UserRef("tenant-a", "bob")
    await store.commit_extraction(job("j1"), [memory("m1", "a")], [])
    await store.commit_extraction(job("j2", user=ALICE_ELSEWHERE), [memory("m9", "z")], [])
    for other in (ALICE_ELSEWHERE, bob):
        assert [m.id for m in (await store.memory_changes(other, 0, limit=10)).changed] == (["m9"] if other == ALICE_ELSEWHERE else [])
    nobody = await store.memory_changes(bob, 0, limit=10)
    assert (nobody.version, nobody.count, nobody.changed) == (0, 0, [])
    mine = await store.memory_changes(ALICE, 0, limit=10)
    assert [m.id for m in mine.changed] == ["m1"] and mine.count == 1
