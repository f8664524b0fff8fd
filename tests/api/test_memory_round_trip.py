"""The first memory round trip: told in one session, remembered in the next."""

from __future__ import annotations

import asyncio
import time

from datetime import datetime, timedelta, timezone

import pytest

from salience.memory.dates import day
from salience.memory.extract import SelfDisclosureExtractor
from salience.store.base import open_store
from tests.conftest import STORE_BACKENDS
from tests.helpers import memory_block, wait_for_memories

pytestmark = pytest.mark.parametrize("store_backend", STORE_BACKENDS, indirect=True)

DISCLOSURE = "My sister Sarah was just diagnosed with breast cancer."
SYSTEM = {"role": "system", "content": "You are a caring companion."}


async def say(client, user: str, session: str, text: str, **kwargs):
    return await client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=[SYSTEM, {"role": "user", "content": text}],
        extra_headers={"X-Salience-User": user, "X-Salience-Session": session},
        **kwargs,
    )


async def test_disclosure_in_session_one_is_injected_in_session_two_for_that_user_only(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client, proxy.http() as http:
        await say(client, "alice", "s1", DISCLOSURE + " I don't know what to do.")
        memories = await wait_for_memories(http, "alice")
        assert any("Sarah" in m["text"] for m in memories)

        raw = await say(client, "alice", "s2", "How can I support my sister this week?")
        block = memory_block(upstream.last_messages())
        assert DISCLOSURE.removesuffix(".") in block
        # the app's system prompt keeps its place on top; memory follows it
        assert upstream.last_messages()[0] == SYSTEM
        assert upstream.last_messages()[1]["content"] == block
        assert raw.headers["x-salience-session"] == "s2"
        injected = raw.headers["x-salience-memories"].split(",")
        assert injected and set(injected) <= {m["id"] for m in memories}

        await say(client, "bob", "s9", "How can I support my sister this week?")
        assert memory_block(upstream.last_messages()) == ""
        assert "Sarah" not in str(upstream.last_messages())


async def test_streamed_exchange_is_extracted_after_the_stream(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client, proxy.http() as http:
        stream = await client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "I lost my job at the bakery last week."}],
            stream=True,
            extra_headers={"X-Salience-User": "carol"},
        )
        async for _ in stream:
            pass
        memories = await wait_for_memories(http, "carol")
    last_week = day(datetime.now(timezone.utc) - timedelta(weeks=1))
    assert [m["text"] for m in memories] == [f"I lost my job at the bakery last week (the week of {last_week})."]
    assert memories[0]["speaker"] == "user"
    assert len(memories[0]["sources"]) == 1


async def test_body_user_identifies_and_the_header_wins(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client, proxy.http() as http:
        await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "My dog Biscuit is fourteen years old."}],
            user="dana",
        )
        await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "I have been learning the cello for a year."}],
            user="dana", extra_headers={"X-Salience-User": "erin"},
        )
        dana = await wait_for_memories(http, "dana")
        erin = await wait_for_memories(http, "erin")
    assert [m["text"] for m in dana] == ["My dog Biscuit is fourteen years old."]
    assert [m["text"] for m in erin] == ["I have been learning the cello for a year."]
    assert upstream.requests[-1]["user"] == "dana"  # the body is forwarded untouched


async def test_without_a_user_nothing_is_remembered_or_injected(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": DISCLOSURE}]
        )
        assert raw.headers["x-salience-memory"] == "off"
        assert "x-salience-trace" not in raw.headers
        await asyncio.sleep(1.0)
        store = open_store(proxy.config.server.resolved_store_url)
        await store.open()
        assert await store.pending_extractions() == 0
        await store.close()
    assert upstream.last_messages() == [{"role": "user", "content": DISCLOSURE}]


class SlowExtractor:
    """Extraction that takes seconds, as an LLM extractor might."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.inner = SelfDisclosureExtractor()

    async def extract(self, messages):
        await asyncio.sleep(self.seconds)
        return await self.inner.extract(messages)


async def test_response_does_not_wait_for_slow_extraction(make_proxy, upstream):
    proxy = make_proxy(upstream, extractor=SlowExtractor(3.0))
    async with proxy.client() as client, proxy.http() as http:
        await say(client, "frank", "s1", "ok")
        started = time.perf_counter()
        await say(client, "frank", "s1", "My father moved into a care home in March.")
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "I started running again."}], stream=True,
            extra_headers={"X-Salience-User": "frank"},
        )
        async for _ in stream:
            pass
        elapsed = time.perf_counter() - started
        # both replies came back while their extraction (3 s each) was still running
        assert elapsed < 1.5, elapsed
        memories = await wait_for_memories(http, "frank", at_least=2, timeout=30)
    assert {m["text"] for m in memories} == {"My father moved into a care home in March.", "I started running again."}


async def test_debug_headers_and_trace_show_exactly_what_went_upstream(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client, proxy.http() as http:
        await say(client, "gina", "s1", "My brother Tom is getting married in June.")
        await wait_for_memories(http, "gina")
        raw = await say(client, "gina", "s2", "What should I say in my speech at my brother's wedding?")
        assert int(raw.headers["x-salience-context-tokens"]) > 0
        assert 0 < float(raw.headers["x-salience-confidence"]) <= 1
        trace = (await http.get(f"/v1/traces/{raw.headers['x-salience-trace']}")).json()
    assert trace["messages"] == upstream.last_messages()
    assert trace["memories"] == raw.headers["x-salience-memories"].split(",")


async def test_debug_headers_are_off_unless_the_tenant_enables_them(make_proxy, upstream):
    proxy = make_proxy(upstream, tenant={"debug_headers": False})
    async with proxy.client() as client, proxy.http() as http:
        await say(client, "hana", "s1", "My mother died two years ago.")
        await wait_for_memories(http, "hana")
        raw = await say(client, "hana", "s2", "I keep thinking about my mother.")
        assert "My mother died" in memory_block(upstream.last_messages())
        for header in ("x-salience-memories", "x-salience-context-tokens", "x-salience-confidence", "x-salience-trace"):
            assert header not in raw.headers
        assert raw.headers["x-salience-memory"] == "on"


async def test_injected_memory_never_exceeds_the_tenant_budget(make_proxy, upstream):
    proxy = make_proxy(upstream, memory={"budget_tokens": 80, "min_relevance": 0.0})
    async with proxy.client() as client, proxy.http() as http:
        for index, fact in enumerate([
            "My sister Sarah lives in Leeds with her two kids and works as a teacher.",
            "My sister Sarah and I used to go hiking every summer in the Lake District.",
            "My sister Sarah was just diagnosed with breast cancer and starts chemo soon.",
        ]):
            await say(client, "ivan", f"s{index}", fact)
        await wait_for_memories(http, "ivan", at_least=3)
        raw = await say(client, "ivan", "s9", "Tell me what you know about my sister Sarah.")
    tokens = int(raw.headers["x-salience-context-tokens"])
    assert 0 < tokens <= 80
    from salience.memory.tokens import count_tokens

    assert count_tokens(memory_block(upstream.last_messages())) == tokens
    assert len(raw.headers["x-salience-memories"].split(",")) < 3


async def test_a_new_session_begins_after_the_inactivity_gap(make_proxy, upstream):
    proxy = make_proxy(upstream, memory={"session_gap_minutes": 0.02})  # 1.2 s
    async with proxy.client() as client:
        async def session_of() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="fake-model", messages=[{"role": "user", "content": "hi"}], user="jo"
            )
            return raw.headers["x-salience-session"]

        first = await session_of()
        assert await session_of() == first
        await asyncio.sleep(1.6)
        assert await session_of() != first


async def test_a_memory_extracted_after_the_set_was_cached_is_recalled_on_the_next_turn(make_proxy, upstream):
    """A large set used to be served as it was while it was rebuilt in the background, so the
    newest turn's memory reached recall only a turn or more later; now the cached set catches
    up with what was written before answering."""
    proxy = make_proxy(upstream)
    proxy.services.recaller.cache.REBUILD_IN_BACKGROUND_FROM = 1  # every set counts as large
    async with proxy.client() as client, proxy.http() as http:
        await say(client, "mia", "s1", "My brother Tom is getting married in June.")
        await wait_for_memories(http, "mia", at_least=1)
        await say(client, "mia", "s1", "What should I say at my brother's wedding?")  # the set is cached
        assert "Tom is getting married" in memory_block(upstream.last_messages())

        await say(client, "mia", "s1", "I lost my job at the bakery last week.")
        memories = await wait_for_memories(http, "mia", at_least=2)
        bakery = next(m for m in memories if "bakery" in m["text"])
        raw = await say(client, "mia", "s1", "How will I find work after the bakery?")
    assert "I lost my job at the bakery" in memory_block(upstream.last_messages())
    assert bakery["id"] in raw.headers["x-salience-memories"].split(",")
