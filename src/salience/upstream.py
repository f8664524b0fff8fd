"""Calling the upstream model, and nothing else.

Three transports behind one ``Upstream`` protocol, chosen per tenant:

- ``RelayUpstream`` (aiohttp) for upstreams that speak OpenAI's chat-completions wire format (OpenAI,
  vLLM, llama.cpp, most gateways). The request body goes out as the app sent it (only the
  messages gain the injected context) and the reply's bytes, streamed or not, come back
  untouched. litellm's response objects re-encode a reply (streamed chunks get a new
  ``created``, absent fields appear as ``null``), which would break "the reply reaches the
  client untouched", so for this wire format salience relays instead.
- ``LiteLLMUpstream`` for every other provider litellm supports (Anthropic, Azure, Bedrock,
  Ollama, ...): ``litellm.acompletion``; the reply is litellm's OpenAI-shaped response.
- ``EchoUpstream``, the built-in local upstream for ``salience demo`` and first runs with no
  model configured: it answers with what it was sent, so memory injection can be seen.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from salience.errors import UpstreamError
from salience.model import content_text
from salience.settings import UpstreamSettings

FORWARDED_HEADERS = ("content-type", "x-request-id", "openai-processing-ms", "openai-version", "retry-after")


@dataclass
class UpstreamReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class UpstreamStream:
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class Upstream(Protocol):
    async def complete(self, body: dict[str, Any]) -> UpstreamReply:
        """A non-streamed completion; raises ``UpstreamError`` on any failure."""

    async def stream(self, body: dict[str, Any]) -> UpstreamStream:
        """Open a streamed completion. Raises ``UpstreamError`` before the first byte if the
        upstream refuses, so the client gets a proper status instead of a broken stream."""

    def model_ids(self) -> list[str]: ...

    async def aclose(self) -> None: ...


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name.lower() in FORWARDED_HEADERS or name.lower().startswith("x-ratelimit-")
    }


def _timeout_error(seconds: float) -> UpstreamError:
    return UpstreamError(408, f"the upstream did not answer within {seconds:g} s", code="upstream_timeout")


def _unreachable_error(exc: Exception) -> UpstreamError:
    return UpstreamError(502, f"the upstream could not be reached ({type(exc).__name__})", code="upstream_unavailable")


class RelayUpstream:
    """POSTs the body with aiohttp and hands the reply's bytes back as they came.

    aiohttp rather than httpx: in the gateway benchmark's client comparison (64 concurrent
    requests to a local upstream), httpx spent 2.4 ms of CPU a request and managed 355
    requests/s; aiohttp 0.12 ms and 2,180 requests/s. On a proxy that CPU is the budget.
    """

    def __init__(self, settings: UpstreamSettings) -> None:
        assert settings.api_base, "a relay upstream needs api_base"
        self.settings = settings
        self.url = settings.api_base.rstrip("/") + "/chat/completions"
        headers = {"accept-encoding": "identity", "content-type": "application/json", **settings.extra_headers}
        if settings.api_key:
            headers["authorization"] = f"Bearer {settings.api_key}"
        self.headers = headers
        # like httpx.Timeout(t): connecting and each read may take t, a long stream as long as it flows
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.timeout_seconds,
                                             sock_read=settings.timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        """One session per event loop (made on first use: aiohttp binds it to the running loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                timeout=self.timeout,
                # Idle connections are dropped after 4 s, before common servers close theirs
                # (uvicorn: 5 s): reusing one the server is closing fails the request (seen under
                # load in the gateway benchmark as ServerDisconnectedError / connection reset).
                connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300, keepalive_timeout=4.0),
                auto_decompress=False,  # the reply's bytes, exactly as the upstream sent them
                skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

    def _prepare(self, body: dict[str, Any]) -> bytes:
        if self.settings.upstream_model_name:
            body = {**body, "model": self.settings.upstream_model_name}
        return json.dumps(body).encode()

    async def _open(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        try:
            response = await self._client().post(self.url, data=self._prepare(body))
        except asyncio.TimeoutError:
            raise _timeout_error(self.settings.timeout_seconds) from None
        except aiohttp.ClientError as exc:
            raise _unreachable_error(exc) from None
        if response.status >= 400:
            try:
                content = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                content = b""
            finally:
                response.release()
            raise UpstreamError.from_response(response.status, content, dict(response.headers))
        return response

    async def complete(self, body: dict[str, Any]) -> UpstreamReply:
        response = await self._open(body)
        try:
            content = await response.read()
        except asyncio.TimeoutError:
            raise _timeout_error(self.settings.timeout_seconds) from None
        except aiohttp.ClientError as exc:
            raise _unreachable_error(exc) from None
        finally:
            response.release()
        return UpstreamReply(response.status, content, _forwarded(response.headers))

    async def stream(self, body: dict[str, Any]) -> UpstreamStream:
        response = await self._open(body)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # Headers are gone already: say what happened in the stream, as OpenAI does.
                error = _timeout_error(self.settings.timeout_seconds) if isinstance(
                    exc, asyncio.TimeoutError) else _unreachable_error(exc)
                yield b"\n\ndata: " + error.body() + b"\n\n"
            finally:
                if response.content.at_eof():
                    response.release()  # the connection goes back to the pool
                else:
                    response.close()  # a stream cut short: the connection cannot be reused

        return UpstreamStream(_forwarded(response.headers), chunks())

    def model_ids(self) -> list[str]:
        return [self.settings.model] if self.settings.model else []

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


LITELLM_STATUS_BY_NAME = {
    "Timeout": 408,
    "RateLimitError": 429,
    "AuthenticationError": 401,
    "PermissionDeniedError": 403,
    "NotFoundError": 404,
    "BadRequestError": 400,
    "ContextWindowExceededError": 400,
    "UnprocessableEntityError": 422,
    "APIConnectionError": 502,
    "ServiceUnavailableError": 503,
    "InternalServerError": 500,
}


def _from_litellm(exc: Exception) -> UpstreamError:
    status = LITELLM_STATUS_BY_NAME.get(type(exc).__name__) or getattr(exc, "status_code", None) or 502
    return UpstreamError(int(status), str(getattr(exc, "message", exc))[:1000], code="upstream_error")


class LiteLLMUpstream:
    def __init__(self, settings: UpstreamSettings) -> None:
        import litellm  # imported only for tenants that need it: it takes seconds to load

        self._litellm = litellm
        self.settings = settings

    def _arguments(self, body: dict[str, Any]) -> dict[str, Any]:
        arguments = dict(body)
        if self.settings.model:
            arguments["model"] = self.settings.model
        arguments.update(
            api_base=self.settings.api_base,
            api_key=self.settings.api_key,
            timeout=self.settings.timeout_seconds,
            num_retries=0,
        )
        if self.settings.extra_headers:
            arguments["extra_headers"] = self.settings.extra_headers
        return arguments

    async def complete(self, body: dict[str, Any]) -> UpstreamReply:
        try:
            response = await self._litellm.acompletion(**self._arguments({**body, "stream": False}))
        except Exception as exc:  # litellm raises its own exception family; map them all
            raise _from_litellm(exc) from None
        return UpstreamReply(200, response.model_dump_json().encode(), {"content-type": "application/json"})

    async def stream(self, body: dict[str, Any]) -> UpstreamStream:
        try:
            response = await self._litellm.acompletion(**self._arguments({**body, "stream": True}))
        except Exception as exc:
            raise _from_litellm(exc) from None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response:
                    yield b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
            except Exception as exc:
                error = _from_litellm(exc)
                yield b"data: " + error.body() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return UpstreamStream({"content-type": "text/event-stream"}, chunks())

    def model_ids(self) -> list[str]:
        return [self.settings.model] if self.settings.model else []

    async def aclose(self) -> None:
        return None


class EchoUpstream:
    """Answers locally with what it received: the last user message and any memory block."""

    MODEL = "salience-echo"

    def _reply_text(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        said = content_text(last_user.get("content"))
        memory = next(
            (content_text(m.get("content")) for m in messages if "<salience_memory>" in content_text(m.get("content"))), ""
        )
        remembered = [line[2:] for line in memory.splitlines() if line.startswith("- ")]
        reply = f"You said: {said}"
        if remembered:
            reply += " | I remember: " + " ; ".join(remembered)
        return reply

    async def complete(self, body: dict[str, Any]) -> UpstreamReply:
        text = self._reply_text(body)
        payload = {
            "id": f"chatcmpl-echo-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()), "total_tokens": len(text.split())},
        }
        return UpstreamReply(200, json.dumps(payload).encode(), {"content-type": "application/json"})

    async def stream(self, body: dict[str, Any]) -> UpstreamStream:
        text = self._reply_text(body)
        completion_id = f"chatcmpl-echo-{uuid.uuid4().hex[:12]}"
        model = body.get("model") or self.MODEL

        def frame(delta: dict[str, Any], finish: str | None) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        async def chunks() -> AsyncIterator[bytes]:
            yield frame({"role": "assistant", "content": ""}, None)
            for word in text.split(" "):
                yield frame({"content": word + " "}, None)
            yield frame({}, "stop")
            yield b"data: [DONE]\n\n"

        return UpstreamStream({"content-type": "text/event-stream"}, chunks())

    def model_ids(self) -> list[str]:
        return [self.MODEL]

    async def aclose(self) -> None:
        return None


def build_upstream(settings: UpstreamSettings) -> Upstream:
    transport = settings.resolved_transport
    if transport == "relay":
        return RelayUpstream(settings)
    if transport == "litellm":
        return LiteLLMUpstream(settings)
    return EchoUpstream()
