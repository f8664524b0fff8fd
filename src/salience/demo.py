"""``salience demo``: see memory work in one command, offline, with no API key.

Runs the real proxy in-process on a free local port in front of the built-in echo
upstream and talks to it with the ``openai`` client, as an app would.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import tempfile
from pathlib import Path

from rich.console import Console

from salience.model import UserRef
from salience.settings import Config, ServerSettings, TenantSettings, UpstreamSettings

SCRIPT: list[tuple[str, list[str]]] = [
    (
        "session-1",
        [
            "Hi, I'm Maya. It has been a rough week.",
            "My sister Sarah was just diagnosed with breast cancer. I'm scared for her.",
            "I also started a new job as a night-shift nurse last month, so I'm exhausted.",
        ],
    ),
    (
        "session-2",
        [
            "Hey, it's me again. How can I support my sister this week?",
        ],
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_demo(out: Console) -> None:
    import uvicorn
    from openai import AsyncOpenAI

    from salience.app import create_app
    from salience.services import Services

    api_key = "sk-demo-" + secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="salience-demo-") as data_dir:
        config = Config(
            directory=Path(data_dir),
            server=ServerSettings(data_dir=Path(data_dir)),
            tenants={
                "demo": TenantSettings(
                    id="demo", api_keys=[api_key], upstream=UpstreamSettings(transport="echo"), debug_headers=True
                )
            },
        )
        services = Services.build(config)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(config, services), host="127.0.0.1", port=port, log_level="warning")
        )
        out.print("[dim]starting salience and loading the embedding model (a few seconds)…[/dim]")
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key)
        user = UserRef("demo", "maya")
        try:
            for session_id, turns in SCRIPT:
                out.rule(f"[bold]{session_id}[/bold]")
                history: list[dict[str, str]] = [{"role": "system", "content": "You are a warm, caring companion."}]
                for turn in turns:
                    history.append({"role": "user", "content": turn})
                    raw = await client.chat.completions.with_raw_response.create(
                        model="salience-echo",
                        messages=history,  # type: ignore[arg-type]
                        extra_headers={"X-Salience-User": user.user, "X-Salience-Session": session_id},
                    )
                    reply = raw.parse().choices[0].message.content or ""
                    history.append({"role": "assistant", "content": reply})
                    trace = await client.get(f"/traces/{raw.headers['x-salience-trace']}", cast_to=dict)
                    injected = [m["content"] for m in trace["messages"] if "<salience_memory>" in str(m["content"])]
                    out.print(f"[bold cyan]user[/bold cyan]  {turn}")
                    if injected:
                        out.print(
                            f"[bold magenta]injected[/bold magenta] ({raw.headers['x-salience-context-tokens']} tokens, "
                            f"confidence {raw.headers['x-salience-confidence']})"
                        )
                        out.print(injected[0], markup=False, highlight=False)
                    else:
                        out.print("[bold magenta]injected[/bold magenta] nothing")
                    out.print(f"[bold green]reply[/bold green] {reply}", markup=True, highlight=False)
                    await _wait_for_extraction(services, user)
                memories, _ = await services.store.list_memories(user, limit=100)
                out.print(f"[bold yellow]remembered so far[/bold yellow] ({len(memories)})")
                for item in memories:
                    out.print(f"  • [{item.kind}, importance {item.importance:.2f}] {item.text}", markup=False)
        finally:
            await client.close()
            server.should_exit = True
            await serving


async def _wait_for_extraction(services, user: UserRef, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await services.store.pending_extractions(user) and loop.time() < deadline:
        await asyncio.sleep(0.05)
