"""The safety API: classify a text with the tenant's detectors, for apps and for evaluation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from salience.api.auth import tenant_of
from salience.services import Services
from salience.settings import TenantSettings

router = APIRouter()
MAX_CLASSIFY_CHARS = 20_000


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_CLASSIFY_CHARS)


@router.post("/v1/safety/classify")
async def classify(
    payload: ClassifyRequest, request: Request, tenant: TenantSettings = Depends(tenant_of)
) -> dict[str, Any]:
    """Nothing is stored and nothing is escalated: this only reads the text."""
    services: Services = request.app.state.services
    flags = await services.safety.classify(tenant, payload.text)
    return {"object": "salience.safety.classification", "flags": [flag.as_json() for flag in flags]}
