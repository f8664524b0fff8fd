"""The proxy surface: what an app sees when it changes only base_url and the key."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fake_upstream import COMPLETION_BYTES, STREAM_WORDS, TOOL_CALL_BYTES, stream_frames

MESSAGES = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello there"}]


async def test_non_stream_reply_arrives_byte_for_byte(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES)
    assert raw.http_response.content == COMPLETION_BYTES
    completion = raw.parse()
    assert completion.id == "chatcmpl-fake-001"
    assert completion.usage.total_tokens == 48
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-request-id"] == "req-fake-1"
    assert raw.headers["x-salience-memory"] == "off"  # no user: pass-through


async def test_stream_arrives_byte_for_byte_with_usage(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        async with client.chat.completions.with_streaming_response.create(
            model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True},
            extra_headers={"X-Salience-User": "u1"},
        ) as response:
            body = b"".join([chunk async for chunk in response.iter_bytes()])
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-salience-memory"] == "on"
    assert body == b"".join(stream_frames(STREAM_WORDS, include_usage=True))
    assert body.endswith(b"data: [DONE]\n\n")
    assert upstream.requests[-1]["stream_options"] == {"include_usage": True}


async def test_stream_parses_in_the_openai_client(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == "".join(STREAM_WORDS)


async def test_every_request_field_reaches_the_upstream_untouched(make_proxy, upstream):
    upstream.mode = "tools"
    proxy = make_proxy(upstream)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
              "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    fields = dict(
        tools=tools, tool_choice="auto", temperature=0.3, seed=7, n=1, logprobs=True, top_logprobs=2,
        max_tokens=55, response_format={"type": "text"}, stop=["\n\n"], presence_penalty=0.1,
        frequency_penalty=0.2, user="app-user-7", metadata={"k": "v"},
    )
    async with proxy.client() as client:
        completion = await client.chat.completions.create(
            model="fake-model", messages=MESSAGES, extra_body={"vendor_specific": {"x": 1}}, **fields
        )
    sent = upstream.requests[-1]
    for name, value in fields.items():
        assert sent[name] == value, name
    assert sent["vendor_specific"] == {"x": 1}
    assert sent["model"] == "fake-model"
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_tool_call_reply_is_relayed_byte_for_byte(make_proxy, upstream):
    upstream.mode = "tools"
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="fake-model", messages=MESSAGES, extra_headers={"X-Salience-User": "u2"}
        )
    assert raw.http_response.content == TOOL_CALL_BYTES


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
        (503, openai.InternalServerError),
    ],
)
async def test_upstream_errors_keep_their_status_and_openai_body(make_proxy, upstream, status, error_class):
    upstream.mode, upstream.status = "error", status
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        with pytest.raises(error_class) as caught:
            await client.chat.completions.create(
                model="fake-model", messages=MESSAGES, extra_headers={"X-Salience-User": "u3"}
            )
    assert caught.value.status_code == status
    assert caught.value.body["message"] == "upstream says no"
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "7"


async def test_stream_refused_upstream_gets_a_status_not_a_broken_stream(make_proxy, upstream):
    upstream.mode, upstream.status = "error", 429
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)


async def test_upstream_error_that_is_not_json_is_wrapped_in_openai_format(make_proxy, upstream):
    upstream.mode, upstream.status, upstream.error_body = "error", 502, b"<html>bad gateway</html>"
    proxy = make_proxy(upstream)
    async with proxy.http() as http:
        response = await http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "bad gateway" in error["message"]
    assert error["type"] == "api_error"


async def test_upstream_timeout_is_408(make_proxy, upstream):
    upstream.delay = 3
    proxy = make_proxy(upstream, tenant={"upstream": {"timeout_seconds": 0.5}})
    async with proxy.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert caught.value.status_code == 408
    assert caught.value.body["code"] == "upstream_timeout"


async def test_unreachable_upstream_is_502(make_proxy, upstream):
    proxy = make_proxy(upstream, tenant={"upstream": {"api_base": "http://127.0.0.1:9/v1"}})
    async with proxy.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unavailable"


async def test_wrong_or_missing_key_is_401_in_openai_format(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client(api_key="sk-not-a-key-of-anyone") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert caught.value.body["code"] == "invalid_api_key"
    async with httpx.AsyncClient(base_url=proxy.url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": MESSAGES, "user": 5}, "user"),
    ],
)
async def test_bad_requests_are_400_with_the_param_named(make_proxy, upstream, body, param):
    proxy = make_proxy(upstream)
    async with proxy.http() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []


async def test_invalid_json_and_oversized_bodies(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.http() as http:
        bad = await http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        huge = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]},
        )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"


async def test_models_lists_the_tenants_model(make_proxy, upstream):
    proxy = make_proxy(upstream, tenant={"upstream": {"model": "openai/fake-model"}})
    async with proxy.client() as client:
        models = await client.models.list()
        await client.chat.completions.create(model="whatever-the-app-says", messages=MESSAGES)
    assert [m.id for m in models.data] == ["openai/fake-model"]
    assert upstream.requests[-1]["model"] == "fake-model"  # provider prefix is for routing only


async def test_unknown_path_is_404_in_openai_format(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.http() as http:
        response = await http.get("/v1/nothing-here")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_stream_that_stalls_ends_with_an_openai_error_frame(make_proxy, upstream):
    upstream.mode = "stall"
    proxy = make_proxy(upstream, tenant={"upstream": {"timeout_seconds": 0.5}})
    async with proxy.client() as client:
        stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        received = []
        with pytest.raises(openai.APIError, match="did not answer"):
            async for chunk in stream:
                received.append(chunk)
    assert received and received[0].choices[0].delta.content == STREAM_WORDS[0]


async def test_every_route_limits_the_body_size(make_proxy, upstream):
    proxy = make_proxy(upstream)

    async def chunked():
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    async with proxy.http() as http:
        declared = await http.post("/v1/users/u/import", content=b"x" * (9 * 1024 * 1024))
        streamed = await http.post("/v1/users/u/recall", content=chunked())
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"


async def test_a_blank_user_header_does_not_hide_the_body_user_and_long_ids_are_refused(make_proxy, upstream):
    proxy = make_proxy(upstream)
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="fake-model", messages=MESSAGES, user="body-user", extra_headers={"X-Salience-User": ""}
        )
        assert raw.headers["x-salience-memory"] == "on"
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="fake-model", messages=MESSAGES, user="u" * 300)
    assert caught.value.body["param"] == "user"


async def test_a_reply_counts_as_being_prepared_until_it_goes_upstream(make_proxy, upstream):
    """The extraction worker holds back while replies are prepared (reply_gauge.py): a reply
    counts from its request until its upstream call, with memory and without, and not after."""
    proxy = make_proxy(upstream)
    services = proxy.services
    seen: list[tuple[str, int]] = []
    recall, classify, relay = services.recaller.recall, services.safety.classify, services.upstreams["demo"]
    complete = relay.complete

    async def recording_recall(*args, **kwargs):
        seen.append(("recall", services.replies.replies_preparing))
        return await recall(*args, **kwargs)

    async def recording_classify(*args, **kwargs):
        seen.append(("screening", services.replies.replies_preparing))
        return await classify(*args, **kwargs)

    async def recording_complete(body):
        seen.append(("upstream", services.replies.replies_preparing))
        return await complete(body)

    services.recaller.recall, services.safety.classify, relay.complete = recording_recall, recording_classify, recording_complete
    async with proxy.client() as client:
        await client.chat.completions.create(model="fake-model", messages=MESSAGES, extra_headers={"X-Salience-User": "u1"})
        await client.chat.completions.create(model="fake-model", messages=MESSAGES)  # no user: no memory
    assert seen == [("recall", 1), ("screening", 1), ("upstream", 0), ("screening", 1), ("upstream", 0)]
    assert services.replies.replies_preparing == 0
