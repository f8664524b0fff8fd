"""A fake OpenAI-compatible upstream on 127.0.0.1: the only thing the tests mock.

It records every request body it receives and answers with fixed bytes, so tests can
check that salience relays replies byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

# Deliberately unusual formatting and an extra field: a re-encoding proxy would change these bytes.
COMPLETION_BYTES = (
    b'{"id": "chatcmpl-fake-001", "object": "chat.completion", "created": 1700000000,'
    b' "model": "fake-model", "system_fingerprint": "fp_fake",'
    b' "choices": [{"index": 0, "message": {"role": "assistant", "content": "I am here for you."},'
    b' "logprobs": null, "finish_reason": "stop"}],'
    b' "usage": {"prompt_tokens": 42, "completion_tokens": 6, "total_tokens": 48},'
    b' "x_provider_extra": {"kept": true}}'
)

TOOL_CALL_BYTES = (
    b'{"id":"chatcmpl-fake-tool","object":"chat.completion","created":1700000001,"model":"fake-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1",'
    b'"type":"function","function":{"name":"get_weather","arguments":"{\\"city\\": \\"Oslo\\"}"}}]},'
    b'"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}'
)


def stream_frames(words: list[str], include_usage: bool) -> list[bytes]:
    frames = []
    for index, word in enumerate(words):
        delta: dict[str, Any] = {"content": word}
        if index == 0:
            delta["role"] = "assistant"
        chunk = {
            "id": "chatcmpl-fake-stream",
            "object": "chat.completion.chunk",
            "created": 1700000002,
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        frames.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    final = {
        "id": "chatcmpl-fake-stream",
        "object": "chat.completion.chunk",
        "created": 1700000002,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    frames.append(b"data: " + json.dumps(final).encode() + b"\n\n")
    if include_usage:
        usage = {
            "id": "chatcmpl-fake-stream",
            "object": "chat.completion.chunk",
            "created": 1700000002,
            "model": "fake-model",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": len(words), "total_tokens": 9 + len(words)},
        }
        frames.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


STREAM_WORDS = ["I ", "am ", "here ", "for ", "you."]


@dataclass
class FakeUpstream:
    """Behaviour is set per test through ``mode`` (and ``status``/``delay``)."""

    mode: str = "ok"  # ok | tools | error | stall (a stream that stops after its first frame)
    status: int = 500
    error_body: bytes = b'{"error": {"message": "upstream says no", "type": "server_error", "param": null, "code": null}}'
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    content: str | None = None  # when set, non-streamed replies carry this text instead of the fixed bytes

    def last_messages(self) -> list[dict[str, Any]]:
        return self.requests[-1]["messages"]

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.mode == "error":
                return Response(self.error_body, status_code=self.status, media_type="application/json",
                                headers={"retry-after": "7"} if self.status == 429 else None)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                frames = stream_frames(STREAM_WORDS, include_usage)

                async def gen():
                    for frame in frames:
                        yield frame
                        if self.mode == "stall":
                            await asyncio.sleep(30)

                return StreamingResponse(gen(), media_type="text/event-stream")
            payload = TOOL_CALL_BYTES if self.mode == "tools" else COMPLETION_BYTES
            if self.content is not None and self.mode == "ok":
                reply = json.loads(COMPLETION_BYTES)
                reply["choices"][0]["message"]["content"] = self.content
                payload = json.dumps(reply).encode()
            return Response(payload, media_type="application/json", headers={"x-request-id": "req-fake-1"})

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
