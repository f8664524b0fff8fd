"""Errors that reach the client, always in OpenAI's error format:
``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
from typing import Any

TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    return TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


class SalienceError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type_for(status)
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        payload: dict[str, Any] = {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        }
        return json.dumps(payload).encode()


class UpstreamError(SalienceError):
    """The upstream refused or failed. When it answered in OpenAI's format already, its
    body is relayed as it came (``raw``), so the app sees the provider's own error."""

    def __init__(self, status: int, message: str, *, raw: bytes | None = None, **kwargs: Any) -> None:
        super().__init__(status, message, **kwargs)
        self.raw = raw

    def body(self) -> bytes:
        return self.raw if self.raw is not None else super().body()

    @classmethod
    def from_response(cls, status: int, content: bytes, headers: dict[str, str]) -> "UpstreamError":
        forwarded = {k: v for k, v in headers.items() if k.lower() in {"retry-after", "x-request-id"}}
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            message = str(parsed["error"].get("message", ""))
            return cls(status, message, raw=content, headers=forwarded)
        text = content.decode("utf-8", "replace").strip()[:500] or f"upstream answered {status}"
        return cls(status, f"upstream error: {text}", code="upstream_error", headers=forwarded)
