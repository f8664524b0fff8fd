"""One place that turns every failure into OpenAI's error body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from salience.errors import SalienceError
from salience.store.base import MasterKeyMissing, StoreUnavailable

log = logging.getLogger("salience.api")


def error_response(error: SalienceError) -> Response:
    return Response(error.body(), status_code=error.status, headers=error.headers, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SalienceError)
    async def salience_error(request: Request, exc: SalienceError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return error_response(SalienceError(400, "the request body is not valid JSON", code="invalid_json"))
        location = [str(part) for part in first.get("loc", ())]
        if location and location[0] in {"body", "query", "path", "header"}:
            location = location[1:]  # where it was, not what it was
        param = ".".join(location) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return error_response(SalienceError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"unknown path {request.url.path}"
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(SalienceError(exc.status_code, message))

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        # Completions degrade to pass-through; the memory API has nothing to answer with.
        return error_response(
            SalienceError(503, "the memory store is unreachable; try again shortly", type="api_error",
                          code="store_unavailable", headers={"retry-after": "2"})
        )

    @app.exception_handler(MasterKeyMissing)
    async def master_key_missing(request: Request, exc: MasterKeyMissing) -> Response:
        log.error("tenant %s: stored data is encrypted but no master key is configured", exc)
        return error_response(
            SalienceError(500, "stored data is encrypted and the tenant's master key is not configured",
                          type="api_error", code="master_key_missing")
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        # The type only: exception text can carry memory content or secrets.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(SalienceError(500, "internal error in salience", type="api_error", code="internal_error"))
