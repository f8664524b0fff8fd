"""Providers that do not speak OpenAI's wire format go through litellm.acompletion.

The fake upstream speaks OpenAI's format, so here litellm's OpenAI provider is forced
(transport: litellm) to exercise that path end to end without a network.
"""

from __future__ import annotations

import openai
import pytest

from tests.fake_upstream import STREAM_WORDS
from tests.helpers import memory_block, wait_for_memories

LITELLM = {"upstream": {"transport": "litellm", "model": "openai/fake-model"}}


async def test_completion_and_memory_through_litellm(make_proxy, upstream):
    proxy = make_proxy(upstream, tenant=LITELLM)
    async with proxy.client() as client, proxy.http() as http:
        completion = await client.chat.completions.create(
            model="app-model", messages=[{"role": "user", "content": "My son Leo starts school in September."}],
            user="kim", temperature=0.2, seed=3,
        )
        assert completion.choices[0].message.content == "I am here for you."
        assert completion.id == "chatcmpl-fake-001"
        assert completion.usage.total_tokens == 48
        sent = upstream.requests[-1]
        assert sent["temperature"] == 0.2 and sent["seed"] == 3 and sent["model"] == "fake-model"
        await wait_for_memories(http, "kim")
        stream = await client.chat.completions.create(
            model="app-model", messages=[{"role": "user", "content": "Any tips for my son's first school day?"}],
            user="kim", stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "".join(STREAM_WORDS)
    assert "My son Leo starts school in September." in memory_block(upstream.last_messages())


async def test_litellm_errors_keep_their_status(make_proxy, upstream):
    upstream.mode, upstream.status = "error", 429
    proxy = make_proxy(upstream, tenant=LITELLM)
    async with proxy.client() as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert set(caught.value.body) >= {"message", "type", "code"}
