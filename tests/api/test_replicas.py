"""Two replicas on one Redis: what one learns, the other remembers on the very next request."""

from __future__ import annotations

import pytest

from tests.helpers import memory_block, wait_for_memories

pytestmark = pytest.mark.parametrize("store_backend", ["redis"], indirect=True)


async def say(client, text: str):
    return await client.chat.completions.with_raw_response.create(
        model="fake-model", messages=[{"role": "user", "content": text}], extra_headers={"X-Salience-User": "noor"}
    )


async def test_a_memory_written_through_a_is_recalled_through_b(make_proxy, upstream):
    replica_a = make_proxy(upstream)
    replica_b = make_proxy(upstream)
    async with replica_a.client() as via_a, replica_b.client() as via_b, replica_a.http() as http_a:
        await say(via_b, "How are you today?")  # B has now cached noor's (empty) memory set
        assert memory_block(upstream.last_messages()) == ""

        await say(via_a, "My brother Tom is getting married in June.")
        await wait_for_memories(http_a, "noor")

        raw = await say(via_b, "What should I say at my brother's wedding?")
    assert "My brother Tom is getting married in June." in memory_block(upstream.last_messages())
    assert raw.headers["x-salience-memory"] == "on"
