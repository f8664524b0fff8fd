"""A fake OpenAI-compatible upstream for the gateway benchmark: 127.0.0.1 only.

Every completion waits a fixed delay (the "model"), then answers with fixed bytes; a
streamed one sends its first chunk after the delay and then ``--chunks`` chunks in all,
``--chunk-gap`` seconds apart. ``GET /v1/models`` answers for LiteLLM's health checks.

    python bench/gateway/fake_upstream.py --port 9000 [--delay 0.02] [--chunks 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "I am here for you."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 42, "completion_tokens": 6, "total_tokens": 48},
}).encode()


def frame(content: str | None, finish: str | None) -> bytes:
    delta = {"content": content} if content is not None else {}
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "bench-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def build_app(delay: float, chunks: int, gap: float) -> Starlette:
    frames = [frame(f"word{i} ", None) for i in range(chunks - 1)] + [frame(None, "stop")]

    async def completions(request: Request) -> Response:
        body = json.loads(await request.body())
        await asyncio.sleep(delay)
        if not body.get("stream"):
            return Response(COMPLETION, media_type="application/json")

        async def stream():
            for index, data in enumerate(frames):
                if index and gap:
                    await asyncio.sleep(gap)
                yield data
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "bench"}]})

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--chunk-gap", type=float, default=0.001)
    args = parser.parse_args()
    uvicorn.run(build_app(args.delay, args.chunks, args.chunk_gap), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
