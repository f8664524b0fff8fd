"""Reading a JSON request body with a size limit and OpenAI-style errors."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from salience.errors import SalienceError


async def read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise SalienceError(413, f"request body exceeds {max_bytes} bytes", code="request_too_large")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > max_bytes:
            raise SalienceError(413, f"request body exceeds {max_bytes} bytes", code="request_too_large")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SalienceError(400, f"the request body is not valid JSON: {exc.msg}", code="invalid_json") from None
