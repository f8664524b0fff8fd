"""Request bodies: a size limit on every route, and JSON with OpenAI-style errors."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from salience.api.errors import error_response
from salience.errors import SalienceError


def too_large(max_bytes: int) -> SalienceError:
    return SalienceError(413, f"request body exceeds {max_bytes} bytes", code="request_too_large")


class BodySizeLimit:
    """Refuses bodies over ``max_bytes`` before they are read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(too_large(self.max_bytes))(scope, receive, send)
            return
        # Read the body here, up to the limit, then hand it on: a route that parses bodies
        # itself would otherwise turn an overflow into a generic parse error.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await error_response(too_large(self.max_bytes))(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        message = getattr(exc, "msg", "cannot be decoded")
        raise SalienceError(400, f"the request body is not valid JSON: {message}", code="invalid_json") from None
