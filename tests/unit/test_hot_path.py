"""The fast paths of recall keep its answers: the ONNX embedder, batched queries, the memory cache."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from salience.memory.embed import LocalMiniLMEmbedder
from salience.memory.person import PersonCache
from salience.memory.recall import MemoryCache, Recaller
from salience.memory.shared_embeddings import SharedEmbeddings
from salience.model import ExtractionJob, MemoryItem, MessageSignal, UserRef, utcnow
from salience.settings import MemorySettings
from salience.store.base import open_store

TEXTS = ["My sister Sarah was just diagnosed with breast cancer.", "I start my new job as a nurse on Monday.",
         "word " * 300, "Ünïcödé façade, 東京 🙂", "a"]


def float_onnx() -> LocalMiniLMEmbedder:
    embedder = LocalMiniLMEmbedder(runtime="onnx")
    embedder.load()
    return embedder


def test_onnx_and_torch_runtimes_give_the_same_vectors():
    """Stored embeddings stay valid whichever float runtime computed them: no re-embedding."""
    torch_embedder = LocalMiniLMEmbedder(runtime="torch")
    torch_embedder.load()
    float_embedder = float_onnx()
    onnx = float_embedder.embed_sync(TEXTS)
    reference = torch_embedder.embed_sync(TEXTS)
    assert float_embedder.runtime == "onnx"
    assert onnx.shape == reference.shape == (len(TEXTS), 384)
    assert float((onnx * reference).sum(axis=1).min()) > 0.999


def test_the_int8_runtime_stays_close_to_the_float_vectors_and_ranks_alike(embedder: LocalMiniLMEmbedder):
    """The default, ``onnx-int8``, can sit beside vectors stored by the float runtime: close,
    and the same nearest memory."""
    quantized, embedder = embedder, float_onnx()
    assert quantized.runtime == "onnx-int8"  # what "auto" picks when onnxruntime is installed
    memories = embedder.embed_sync(TEXTS[:2] + ["We had pancakes for breakfast.", "The bus was late again today."])
    questions = ["How is my sister doing?", "What is my new job?", "What did we eat in the morning?"]
    close = quantized.embed_sync(TEXTS)
    assert float((close * embedder.embed_sync(TEXTS)).sum(axis=1).min()) > 0.98
    for expected, question in enumerate(questions):
        assert int(np.argmax(memories @ quantized.embed_sync([question])[0])) == [0, 1, 2][expected]


def test_the_int8_weights_fit_in_seven_bits_so_every_cpu_computes_the_same_vector(embedder: LocalMiniLMEmbedder):
    """AVX2's u8 x s8 instruction sums pairs in 16 bits and saturates past 32,767; AVX-512 VNNI
    does not. With |weight| <= 64 a pair is at most 2 x 255 x 64 = 32,640, so every CPU's
    integer kernel gives the exact sums, and a message is screened alike on every machine."""
    import onnx
    from onnx import numpy_helper

    from salience.memory.onnx_minilm import model_dir, quantized_path

    assert embedder.runtime == "onnx-int8"
    graph = onnx.load(str(quantized_path(model_dir())))
    weights = [numpy_helper.to_array(t) for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 36  # six layers of six quantised products
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64


def test_the_int8_runtime_runs_a_graph_with_constant_reshapes_that_computes_the_same_vectors(
    embedder: LocalMiniLMEmbedder,
):
    """The graph the int8 runtime loads has its attention reshapes' target shapes as constants
    (far fewer kernels a run) and gives the quantised graph's outputs to the bit."""
    import onnx
    import onnxruntime

    from salience.memory.onnx_minilm import constant_reshapes_path, model_dir, quantized_path

    embedder.load()
    loaded = embedder._model.session
    faster, quantized = constant_reshapes_path(model_dir()), quantized_path(model_dir())
    assert embedder._model.graph_path == faster
    nodes = [len(onnx.load(str(path)).graph.node) for path in (faster, quantized)]
    assert nodes[0] < nodes[1] - 100
    reference = onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    texts = ["a", "How is my sister doing?", *TEXTS, "word " * 300]  # the last one truncated at 256 tokens
    for batch in ([t] for t in texts), [texts[:3]], [texts[2:]]:
        for chunk in batch:
            encodings = embedder._model.tokenizer.encode_batch(chunk)
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            assert np.array_equal(loaded.run(None, feeds)[0], reference.run(None, feeds)[0])


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


async def test_a_started_query_is_embedded_while_the_event_loop_is_still_busy(
    embedder: LocalMiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
):
    """``start`` hands the run to its thread at once: the model works while the request path
    goes on with the rules and the store on the event loop, not from the loop's next turn."""
    embedder.load()
    assert embedder._model.runs_async  # on ONNX Runtime's own thread: no Python thread to wake
    embedded = threading.Event()
    pooled = embedder._model._pooled

    def pool_and_tell(hidden: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        vectors = pooled(hidden, feeds)
        embedded.set()
        return vectors

    monkeypatch.setattr(embedder._model, "_pooled", pool_and_tell)
    handed: list[str] = []
    encode_one_async = embedder._model.encode_one_async

    def handed_to_its_thread(text: str, done) -> None:
        handed.append(text)
        encode_one_async(text, done)

    monkeypatch.setattr(embedder._model, "encode_one_async", handed_to_its_thread)
    shared = SharedEmbeddings(embedder)
    query = "What did my sister say about the new treatment, the one from last week?"
    shared.start(query)
    assert embedded.wait(30)  # a blocking wait: the event loop never turns meanwhile
    assert handed == [query]
    alone = LocalMiniLMEmbedder(query_cache=0)
    alone.load()
    assert float((await shared.embed([query]))[0] @ alone.embed_sync([query])[0]) > 0.9999


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
        cache.CATCH_UP_LIMIT = 0  # every change too large to catch up with: a full build
        assert len((await cache.get(user)).items) == 5  # a first set is built before answering

        await store.commit_extraction(ExtractionJob(id="j2", user=user, session_id="s", messages=[]), memories(5, 1), [])
        served = await cache.get(user)
        assert len(served.items) == 5  # the set as it was, while it is rebuilt
        assert cache._no_catch_up[user] == served.version  # and no catch-up tried again
        await asyncio.gather(*cache._rebuilds.running.values())
        assert len((await cache.get(user)).items) == 6

        cache.REBUILD_IN_BACKGROUND_FROM = 100  # small sets are rebuilt before answering
        await store.commit_extraction(ExtractionJob(id="j3", user=user, session_id="s", messages=[]), memories(6, 1), [])
        assert len((await cache.get(user)).items) == 7
    finally:
        await store.close()


async def test_a_stale_set_never_injects_a_memory_erased_since(tmp_path: Path, embedder: LocalMiniLMEmbedder):
    """Erased through another replica: this process's cached set still holds the memory while
    it is rebuilt, but recall checks what it is about to inject against the store."""
    store = open_store(f"sqlite:///{tmp_path / 'stale.db'}")
    await store.open()
    user = UserRef("t", "u")
    texts = ["My brother Tomasz lives in Gdansk.", "I work as a nurse.", "My dog Biscuit loves tennis balls.",
             "I am learning the cello.", "My favourite food is ramen."]
    vectors = embedder.embed_sync(texts)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    items = [MemoryItem(id=f"mem_{n}", text=text, kind="fact", importance=0.5, speaker="user",
                        created_at=start + timedelta(minutes=n), sources=[f"msg_{n}"], embedding=vectors[n])
             for n, text in enumerate(texts)]
    try:
        await store.commit_extraction(ExtractionJob(id="j1", user=user, session_id="s", messages=[]), items, [])
        recaller = Recaller(store, embedder)
        recaller.cache.REBUILD_IN_BACKGROUND_FROM = 3  # "large": served stale while rebuilt
        recaller.cache.CATCH_UP_LIMIT = 0  # and no change small enough to catch up with
        settings = MemorySettings()
        query = "Where does my brother Tomasz live?"
        assert "mem_0" in (await recaller.recall(user, query, settings)).ids
        await store.erase_memory(user, "mem_0", utcnow())  # another replica; this cache is not told
        await store.commit_extraction(ExtractionJob(id="j2", user=user, session_id="s", messages=[]), [
            MemoryItem(id="mem_5", text="I play chess.", kind="fact", importance=0.5, speaker="user",
                       created_at=start + timedelta(minutes=5), sources=["msg_5"], embedding=vectors[4])], [])
        after = await recaller.recall(user, query, settings)
        assert "mem_0" not in after.ids and "Gdansk" not in after.context
        assert "mem_2" in (await recaller.recall(user, "What does my dog Biscuit love?", settings)).ids
    finally:
        await asyncio.gather(*recaller.cache._rebuilds.running.values(), return_exceptions=True)
        await store.close()


async def test_the_person_model_catches_up_with_new_signals_and_erasure_drops_it(tmp_path: Path):
    """The person model (entities, arc signals) grows with the conversation; loading it whole on
    every turn would cost every reply. A turn's new signals are read on their own; when that is
    not possible, a large model is served as it was while it is reloaded in the background;
    ``forget`` (erasure) drops it at once."""
    store = open_store(f"sqlite:///{tmp_path / 'person.db'}")
    await store.open()
    user = UserRef("t", "u")
    people = PersonCache(store)
    people.RELOAD_IN_BACKGROUND_FROM = 1  # "large" for this test
    loads = 0
    load_signals = store.load_message_signals

    async def counted_load(user_ref):
        nonlocal loads
        loads += 1
        return await load_signals(user_ref)

    store.load_message_signals = counted_load  # type: ignore[method-assign]
    try:
        await store.save_message_signals(user, [MessageSignal("m1", "s1", utcnow(), 0.1, ["Sarah"])])
        first = await people.get(user, await store.memory_version(user))  # a first model is loaded before answering
        assert [s.message_id for s in first.signals] == ["m1"] and loads == 1

        await store.save_message_signals(user, [MessageSignal("m2", "s1", utcnow(), -0.2, ["Tom"])])
        caught_up = await people.get(user, await store.memory_version(user))
        assert [s.message_id for s in caught_up.signals] == ["m1", "m2"] and loads == 1  # only m2 was read

        people.CATCH_UP_LIMIT = 0  # more written since than a catch-up reads: a full load, in the background
        await store.save_message_signals(user, [MessageSignal("m3", "s1", utcnow(), 0.0, [])])
        assert await people.get(user, await store.memory_version(user)) is caught_up  # as it was, while reloaded
        await asyncio.gather(*people._reloads.running.values())
        latest = await people.get(user, await store.memory_version(user))
        assert [s.message_id for s in latest.signals] == ["m1", "m2", "m3"] and loads == 2

        people.forget(user)
        reloaded = await people.get(user, await store.memory_version(user))  # loaded again before answering
        assert [s.message_id for s in reloaded.signals] == ["m1", "m2", "m3"] and loads == 3
    finally:
        await asyncio.gather(*people._reloads.running.values(), return_exceptions=True)
        await store.close()


async def test_a_users_concurrent_turns_and_the_refresh_after_a_commit_catch_the_person_model_up_once(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path / 'shared.db'}")
    await store.open()
    user = UserRef("t", "u")
    people = PersonCache(store)
    reads = 0
    read_changes = store.message_signal_changes

    async def counted(*args):
        nonlocal reads
        reads += 1
        return await read_changes(*args)

    store.message_signal_changes = counted  # type: ignore[method-assign]
    try:
        await store.save_message_signals(user, [MessageSignal("m1", "s1", utcnow(), 0.1, ["Sarah"])])
        await people.get(user, await store.memory_version(user))
        await store.save_message_signals(user, [MessageSignal("m2", "s1", utcnow(), -0.2, ["Tom"])])
        version = await store.memory_version(user)
        models = await asyncio.gather(*(people.get(user, version) for _ in range(4)))
        assert reads == 1 and len({id(m) for m in models}) == 1
        assert [s.message_id for s in models[0].signals] == ["m1", "m2"]
    finally:
        await store.close()


async def test_the_arc_of_a_caught_up_person_model_is_the_arc_counted_from_scratch(tmp_path: Path):
    """The arc is read on every turn: a caught-up model adds the new signals to its sessions'
    tallies instead of counting every signal again, and must say exactly what a model loaded
    whole says (sessions, moods, themes, crisis adjacency), also when a signal is rewritten."""
    from salience.memory.arc import compute_arc

    store = open_store(f"sqlite:///{tmp_path / 'arc.db'}")
    await store.open()
    user = UserRef("t", "u")
    people = PersonCache(store)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    moods = [0.6, 0.5, 0.1, -0.2, -0.3, -0.5, -0.7]
    topics = [["work"], ["work", "sleep"], ["family"], ["work", "family"], ["sleep"], ["work"], ["family", "work"]]
    try:
        models = []
        for n, (mood, labels) in enumerate(zip(moods, topics)):
            for k in range(2):  # two messages a session, the second flagged in the last session
                signal = MessageSignal(f"m{n}-{k}", f"s{n}", start + timedelta(days=7 * n, minutes=k), mood - 0.05 * k,
                                       labels, flagged=n == len(moods) - 1 and k == 1)
                await store.save_message_signals(user, [signal])
                model = await people.get(user, await store.memory_version(user))
                model.arc()
                models.append(model)
        # a rewritten signal (a job that ran again with other topics) is counted anew
        await store.save_message_signals(user, [MessageSignal("m6-1", "s6", start + timedelta(days=42, minutes=1), 0.9,
                                                              ["money"], flagged=True)])
        models.append(await people.get(user, await store.memory_version(user)))

        assert models[-2].tallies is not None and models[-3].tallies is not None  # caught up, not reloaded
        for model in models:
            assert model.arc() == compute_arc(await store.load_message_signals(user) if model is models[-1] else model.signals, [])
        latest = models[-1].arc()
        assert latest.sessions[-1].messages == 2 and latest.sessions[-1].mood == np.mean([-0.7, 0.9])
        assert latest.crisis_adjacent == ["family", "money", "work"]
    finally:
        await store.close()


async def test_a_commit_announced_brings_the_users_memory_up_to_date_before_the_next_recall(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path / 'refresh.db'}")
    await store.open()
    user = UserRef("t", "u")
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    vectors = np.eye(384, dtype=np.float32)

    def memory(n: int) -> MemoryItem:
        return MemoryItem(id=f"mem_{n}", text=f"I went to place number {n}.", kind="event", importance=0.5,
                          speaker="user", created_at=start + timedelta(minutes=n), sources=[f"msg_{n}"],
                          embedding=vectors[n])

    try:
        await store.commit_extraction(ExtractionJob(id="j1", user=user, session_id="s", messages=[]), [memory(0)], [])
        recaller = Recaller(store, LocalMiniLMEmbedder())
        assert len((await recaller.cache.get(user)).items) == 1
        await store.commit_extraction(ExtractionJob(id="j2", user=user, session_id="s", messages=[]), [memory(1)], [])
        recaller.refresh(user)  # what the worker's announcement does
        for _ in range(100):
            cached = recaller.cache._sets.get(user)
            if cached is not None and cached.version == await store.memory_version(user):
                break
            await asyncio.sleep(0.02)
        assert [m.id for m in recaller.cache._sets[user].items] == ["mem_0", "mem_1"]
        assert recaller.people._models[user].version == await store.memory_version(user)
    finally:
        await store.close()


async def test_a_refresh_after_a_commit_waits_until_no_reply_is_being_prepared(tmp_path: Path):
    """A commit's catch-up holds the event loop; it runs once the replies being prepared have
    gone upstream, not in the middle of one of them."""
    from salience.reply_gauge import ReplyGauge

    store = open_store(f"sqlite:///{tmp_path / 'refresh.db'}")
    await store.open()
    user = UserRef("t", "u")
    vector = np.ones(384, dtype=np.float32) / np.sqrt(384)

    def memory(n: int) -> MemoryItem:
        return MemoryItem(id=f"m{n}", text=f"I went hiking {n}.", kind="event", importance=0.5, speaker="user",
                          created_at=utcnow() - timedelta(days=1), sources=[f"s{n}"], embedding=vector)

    try:
        await store.commit_extraction(ExtractionJob(id="j0", user=user, session_id="s", messages=[]), [memory(0)], [])
        gauge = ReplyGauge()
        recaller = Recaller(store, LocalMiniLMEmbedder(), until_no_replies=gauge.until_no_replies)
        await recaller.cache.get(user)
        caught_up: list[int] = []
        get_checked = recaller.cache.get_checked

        async def recording_get_checked(who: UserRef):
            found = await get_checked(who)
            caught_up.append(len(found[0].items))
            return found

        recaller.cache.get_checked = recording_get_checked  # type: ignore[method-assign]
        with gauge.preparing(), gauge.preparing():  # two replies on their way to the upstream
            await store.commit_extraction(ExtractionJob(id="j1", user=user, session_id="s", messages=[]), [memory(1)], [])
            recaller.refresh(user)
            await asyncio.sleep(0.05)
            assert caught_up == []  # not while a reply is being prepared
        await asyncio.sleep(0.05)
        assert caught_up == [2]  # then at once
        assert recaller.people._models[user].version == await store.memory_version(user)
    finally:
        gauge.close()
        await store.close()
