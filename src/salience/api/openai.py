"""The OpenAI-compatible surface: what an app reaches by changing only ``base_url``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from salience.api.auth import tenant_of
from salience.api.body import read_json
from salience.pipeline import chat_completion, validate_chat_body
from salience.services import Services
from salience.settings import TenantSettings

router = APIRouter()


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request, tenant: TenantSettings = Depends(tenant_of)) -> Response:
    body = validate_chat_body(await read_json(request))
    return await chat_completion(request, tenant, body)


@router.get("/v1/models")
async def list_models(request: Request, tenant: TenantSettings = Depends(tenant_of)) -> JSONResponse:
    services: Services = request.app.state.services
    models: list[dict[str, Any]] = [
        {"id": model_id, "object": "model", "created": 0, "owned_by": f"salience:{tenant.id}"}
        for model_id in services.upstreams[tenant.id].model_ids()
    ]
    return JSONResponse({"object": "list", "data": models})
