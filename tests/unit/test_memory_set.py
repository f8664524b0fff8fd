"""A memory set brought up to date with what changed answers as one built afresh, and the cache
brings it up to date before answering, on every store backend."""

from __future__ import annotations

import asyncio
import functools
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bm25s
import numpy as np
import pytest

import Stemmer

from salience.memory.lexical import LexicalIndex, words
from salience.memory.memory_cache import MemoryCache
from salience.memory.memory_set import MemorySet
from salience.model import ExtractionJob, MemoryItem, UserRef, utcnow
from salience.store.base import Store, open_store

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
PEOPLE = ["Sarah", "Tom", "my mom", "Alex", "the neighbour"]
DOINGS = ["lives in Lisbon", "is a nurse", "hates running", "adopted a grey cat", "visited the lake", "called me"]
QUERIES = ["Where does Sarah live?", "Is Tom a nurse?", "grey cat", "What did Alex do at the lake?",
           "running running", "nothing like this zzz", "the a of"]


def memories(first: int, count: int, rng: random.Random) -> list[MemoryItem]:
    vectors = np.random.default_rng(first).standard_normal((count, 8)).astype(np.float32)
    return [
        MemoryItem(
            id=f"mem_{n}", text=f"{rng.choice(PEOPLE)} {rng.choice(DOINGS)}.", kind="fact", importance=rng.random(),
            speaker=rng.choice(["user", "Caroline", "Melanie"]), created_at=START + timedelta(hours=n),
            sources=[f"msg_{n // 3}"],  # three memories a message: ``best_in_message`` groups them
            session_id=f"s{n // 10}", embedding=vectors[n - first],
        )
        for n in range(first, first + count)
    ]


def bm25s_words(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False, show_progress=False)


def reference_scores(texts: list[str], query: str) -> np.ndarray:
    """What bm25s itself scores, its own tokenizer included, scaled as ``LexicalIndex.scores`` scales."""
    index = bm25s.BM25()
    index.index(bm25s_words(texts), show_progress=False)
    tokens = bm25s.tokenize([query], stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
    vocab = [w for w, _ in sorted(tokens.vocab.items(), key=lambda kv: kv[1])]
    query_words = [vocab[i] for i in tokens.ids[0] if vocab[i] in index.vocab_dict]
    if not query_words:
        return np.zeros(len(texts), dtype=np.float32)
    raw = np.asarray(index.get_scores(query_words), dtype=np.float32)
    return raw / raw.max() if raw.max() > 0 else raw


def assert_same(updated: MemorySet, fresh: MemorySet) -> None:
    assert [m.id for m in updated.items] == [m.id for m in fresh.items]
    assert updated.items == fresh.items
    for name in ("matrix", "created", "anchor", "importance", "reinforcements", "pinned", "message_group", "session_codes"):
        assert np.array_equal(getattr(updated, name), getattr(fresh, name)), name
    assert list(updated.session_ids) == list(fresh.session_ids)
    assert updated.speakers == fresh.speakers
    score = np.random.default_rng(0).random(len(fresh.items))
    assert np.array_equal(updated.best_in_message(score), fresh.best_in_message(score))
    assert updated.rows.quantized == fresh.rows.quantized
    query = np.random.default_rng(1).standard_normal(8).astype(np.float32)
    assert np.array_equal(updated.rows.scores(query), fresh.rows.scores(query))
    for query in QUERIES:
        assert np.array_equal(updated.lexical.scores(query), fresh.lexical.scores(query)), query
        named, about = updated.about(query)
        assert (named, about.tolist()) == (lambda r: (r[0], r[1].tolist()))(fresh.about(query)), query
    for n in range(len(fresh.items)):
        assert (updated.line_tokens(n), updated.day_label(n)) == (fresh.line_tokens(n), fresh.day_label(n))
    assert sorted(m.id for m in updated.pinned_items) == sorted(m.id for m in fresh.pinned_items)
    assert updated.held == fresh.held


def test_words_are_the_words_bm25s_makes_of_a_text():
    texts = [*QUERIES, *(f"{p} {d}" for p in PEOPLE for d in DOINGS), "", "the a of", "I'm don't it's O'Brien's",
             "Ünïcödé CAFÉ naïve façade", "x y z 1 22 333 a1 b_2 __ snake_case_words", "running runs ran runner",
             "tabs\tand\nnewlines  double  spaces", "emoji 🙂 and punctuation!?... (brackets) [x] {y}",
             "she sells sea-shells; well-being, e-mail"]
    assert words(texts) == bm25s_words(texts)


def test_the_lexical_index_scores_exactly_as_bm25s_built_afresh_or_updated():
    rng = random.Random(4)
    texts = [f"{rng.choice(PEOPLE)} {rng.choice(DOINGS)} {rng.choice(DOINGS)}" for _ in range(200)]
    texts += ["", "the a of", texts[3]]  # no words at all, stopwords only, a duplicate
    index = LexicalIndex(texts)
    for query in QUERIES:
        assert np.array_equal(index.scores(query), reference_scores(texts, query)), query

    kept = np.array([n for n in range(len(texts)) if n % 7])
    added = ["Sarah adopted a zebra", texts[10], "the a"]  # a word never seen, a text indexed before
    updated = index.updated(kept, added)
    now = [texts[n] for n in kept] + added
    for query in [*QUERIES, "zebra"]:
        assert np.array_equal(updated.scores(query), reference_scores(now, query)), query
        assert np.array_equal(index.scores(query), reference_scores(texts, query)), query  # the old one unchanged
    assert texts[7] not in updated.words  # a removed text leaves nothing behind
    before = {query: updated.scores(query) for query in QUERIES}
    grown = [*now, "Tom visited the zebra", "A quokka smiled at Sarah"]
    again = updated.updated(np.arange(len(now)), grown[len(now):])  # only additions: postings inserted
    for query in [*QUERIES, "zebra", "quokka"]:
        assert np.array_equal(again.scores(query), reference_scores(grown, query)), query
    assert all(np.array_equal(updated.scores(query), scores) for query, scores in before.items())
    fresh = LexicalIndex(grown)  # each word's postings as built afresh: its documents in order
    for word, term in fresh.vocab.items():
        postings = [index._indptr[t:t + 2] for index, t in ((again, again.vocab[word]), (fresh, term))]
        (a, b), (c, d) = postings
        assert np.array_equal(again._docs[a:b], fresh._docs[c:d]), word
        assert np.array_equal(again._frequencies[a:b], fresh._frequencies[c:d]), word
    assert np.array_equal(LexicalIndex([]).updated(np.zeros(0, int), ["a cat"]).scores("cat"), np.ones(1, np.float32))


@pytest.mark.parametrize("quantized", [False, True], ids=["float32", "int8"])
def test_an_updated_memory_set_scores_as_one_built_afresh(quantized: bool):
    rng = random.Random(7)
    held = memories(0, 60, rng)
    safety = replace(memories(500, 1, rng)[0], id="safe_1", pinned=True, kind="safety", embedding=None)
    build = functools.partial(MemorySet, quantized=quantized)
    previous = build(1, held, [safety], unranked=frozenset({"plain_1"}))
    assert previous.rows.quantized == quantized
    for n in (0, 5, 59):  # what recall worked out for some memories is carried over
        previous.line_tokens(n), previous.day_label(n)
    previous.about("Is Tom a nurse?")

    reinforced = replace(held[5], mention_count=3, importance=0.99, sources=[*held[5].sources, "msg_new"],
                         last_reinforced_at=START + timedelta(days=30))
    joining = memories(60, 4, rng)
    safety_again = replace(safety, mention_count=2)
    gone = {"mem_0", "mem_31", "plain_1"}
    updated = previous.updated(2, [reinforced, safety_again, *joining], gone)

    after = [reinforced if m.id == "mem_5" else m for m in held if m.id not in gone] + joining
    fresh = build(2, after, [safety_again])
    assert updated is not None and updated.version == 2
    assert_same(updated, fresh)
    assert [m.mention_count for m in updated.pinned_items] == [2]
    # again, with nothing removed: the appending path
    more = memories(64, 3, rng)
    again = updated.updated(3, more, set())
    assert again is not None
    assert_same(again, build(3, after + more, [safety_again]))
    # and the set it came from still answers for its own version
    assert_same(previous, build(1, held, [safety], unranked=frozenset({"plain_1"})))
    # two sets appended to the same one (a catch-up discarded, then done again): the second
    # does not write over the rows the first appended, and neither over their parent's
    branch_a, branch_b = memories(70, 2, rng), memories(80, 5, rng)
    first = again.updated(4, branch_a, set())
    second = again.updated(4, branch_b, set())
    assert first is not None and second is not None
    assert_same(first, build(4, after + more + branch_a, [safety_again]))
    assert_same(second, build(4, after + more + branch_b, [safety_again]))
    assert_same(again, build(3, after + more, [safety_again]))


def test_a_change_that_does_not_fit_in_place_asks_for_a_full_build():
    held = memories(0, 10, random.Random(1))
    memory_set = MemorySet(1, held)
    assert memory_set.updated(2, [replace(held[3], text="Something else entirely.")], set()) is None
    assert memory_set.updated(2, [replace(held[3], pinned=True)], set()) is None
    assert memory_set.updated(2, [replace(held[3], embedding=held[4].embedding)], set()) is None


# -- the cache, on a real store -----------------------------------------------------------


@pytest.fixture
def store(each_store: Store) -> Store:
    return each_store


USER = UserRef("t", "u")


def job(name: str) -> ExtractionJob:
    return ExtractionJob(id=name, user=USER, session_id="s", messages=[])


async def test_a_large_cached_set_catches_up_before_answering(store):
    rng = random.Random(2)
    held = memories(0, 30, rng)
    await store.commit_extraction(job("j1"), held, [])
    cache = MemoryCache(store)
    cache.REBUILD_IN_BACKGROUND_FROM = 3  # "large": before catch-ups, served stale while rebuilt
    first = await cache.get(USER)

    joining = memories(30, 3, rng)
    reinforced = replace(held[4], mention_count=2, sources=[*held[4].sources, "msg_j2"], last_reinforced_at=utcnow())
    await store.commit_extraction(job("j2"), joining, [reinforced])
    memory_set, current = await cache.get_checked(USER)
    assert current and not cache._rebuilds.running  # no background rebuild: the set is current already
    assert memory_set.version == await store.memory_version(USER)
    assert [m.id for m in memory_set.items[-3:]] == [m.id for m in joining]
    assert memory_set.items[4].mention_count == 2
    assert memory_set.lexical is not first.lexical and memory_set.matrix.shape == (33, 8)
    assert_same(memory_set, MemorySet(memory_set.version, await store.load_memories(USER)))


async def test_memories_deleted_elsewhere_leave_the_cached_set_at_once(store):
    """A worker's DELETE decision, or an erasure through another replica: the count of the
    user's memories gives it away, and the set asks which are gone."""
    rng = random.Random(3)
    await store.commit_extraction(job("j1"), memories(0, 20, rng), [])
    cache = MemoryCache(store)
    cache.REBUILD_IN_BACKGROUND_FROM = 3
    await cache.get(USER)
    await store.delete_memory(USER, "mem_7")
    await store.erase_memory(USER, "mem_12", utcnow())
    await store.commit_extraction(job("j2"), memories(20, 1, rng), [])
    memory_set, current = await cache.get_checked(USER)
    assert current and not cache._rebuilds.running
    assert {"mem_7", "mem_12"}.isdisjoint(memory_set.ids) and "mem_20" in memory_set.ids
    assert_same(memory_set, MemorySet(memory_set.version, await store.load_memories(USER)))


async def test_an_erased_user_seen_again_is_not_mixed_with_their_old_set(store):
    rng = random.Random(5)
    await store.commit_extraction(job("j1"), memories(0, 10, rng), [])
    cache = MemoryCache(store)  # another replica's cache: not told of the erasure
    cache.REBUILD_IN_BACKGROUND_FROM = 3
    await cache.get(USER)
    await store.erase_user(USER, utcnow())
    await store.commit_extraction(job("j2"), memories(10, 4, rng), [])
    memory_set, current = await cache.get_checked(USER)
    assert current and [m.id for m in memory_set.items] == ["mem_10", "mem_11", "mem_12", "mem_13"]


async def test_a_set_caught_up_while_the_user_was_erased_is_not_kept(tmp_path: Path):
    """An erasure committed (and ``forget`` called, as ``compliance.erasure`` does) while a
    catch-up had already read the changes: what it read is dropped, the set is loaded again."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    try:
        rng = random.Random(6)
        await store.commit_extraction(job("j1"), memories(0, 10, rng), [])
        cache = MemoryCache(store)
        await cache.get(USER)
        await store.commit_extraction(job("j2"), memories(10, 1, rng), [])
        read, proceed = asyncio.Event(), asyncio.Event()
        read_changes = store.memory_changes

        async def changes_read_before_the_erasure(*args):
            changes = await read_changes(*args)
            read.set()
            await proceed.wait()
            return changes

        store.memory_changes = changes_read_before_the_erasure  # type: ignore[method-assign]
        catching_up = asyncio.create_task(cache.get_checked(USER))
        await read.wait()
        store.memory_changes = read_changes  # type: ignore[method-assign]
        assert await store.erase_memory(USER, "mem_3", utcnow()) is not None
        cache.forget(USER)
        proceed.set()
        memory_set, current = await catching_up
        assert current and "mem_3" not in memory_set.ids and "mem_10" in memory_set.ids
        assert cache._sets[USER] is memory_set
    finally:
        await store.close()


async def test_concurrent_requests_share_one_catch_up(store):
    rng = random.Random(8)
    await store.commit_extraction(job("j1"), memories(0, 10, rng), [])
    cache = MemoryCache(store)
    await cache.get(USER)
    await store.commit_extraction(job("j2"), memories(10, 2, rng), [])
    results = await asyncio.gather(*(cache.get_checked(USER) for _ in range(5)))
    assert len({id(memory_set) for memory_set, _ in results}) == 1  # one set, worked out once
    assert all(current and len(memory_set.items) == 12 for memory_set, current in results)
    assert not cache._catching_up._running
