from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx


async def wait_for_memories(http: httpx.AsyncClient, user: str, at_least: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    """Poll the memory API until the user has ``at_least`` memories (extraction is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(f"/v1/users/{user}/memories", params={"limit": 1000})
        if response.status_code == 503 and time.monotonic() < deadline:  # the store is coming back
            await asyncio.sleep(0.1)
            continue
        if response.status_code == 404:  # the user's first exchange is not stored yet
            if time.monotonic() > deadline:
                return []
            await asyncio.sleep(0.1)
            continue
        response.raise_for_status()
        data = response.json()["data"]
        if len(data) >= at_least or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.1)


async def wait_for_arc(http: httpx.AsyncClient, user: str, sessions: int = 1, timeout: float = 30) -> dict[str, Any]:
    """Poll the arc API until the user's arc counts ``sessions`` (its signals are written by
    extraction, which is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(f"/v1/users/{user}/arc")
        arc = response.json() if response.status_code == 200 else {}
        if arc.get("sessions_considered", 0) >= sessions or time.monotonic() > deadline:
            return arc
        await asyncio.sleep(0.1)


def memory_block(messages: list[dict[str, Any]]) -> str:
    """The injected memory message's content, or '' when nothing was injected."""
    blocks = [m["content"] for m in messages if m.get("role") == "system" and "<salience_memory>" in str(m.get("content"))]
    assert len(blocks) <= 1, "memory must be injected as one message"
    return blocks[0] if blocks else ""
