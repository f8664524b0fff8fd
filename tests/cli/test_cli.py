"""The ``salience`` command, run as a user runs it: as a separate process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI

from salience.model import UserRef
from salience.store.base import open_store
from tests.conftest import write_config
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SALIENCE = [sys.executable, "-m", "salience"]


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALIENCE_")}
    env.update(HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", NO_COLOR="1", COLUMNS="200", **extra)
    return env


def test_demo_runs_offline_and_shows_memory_injected_in_session_two():
    result = subprocess.run(SALIENCE + ["demo"], capture_output=True, text=True, timeout=300, env=offline_env())
    assert result.returncode == 0, result.stderr[-2000:]
    session_two = result.stdout.split("session-2", 1)[1]
    injected = session_two.split("injected", 1)[1].split("reply", 1)[0]
    assert "<salience_memory>" in injected
    assert "My sister Sarah was just diagnosed with breast cancer." in injected
    assert "I remember:" in session_two


def test_serve_starts_on_the_example_config_and_answers_the_openai_client(tmp_path):
    port = free_port()
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    env = offline_env(SALIENCE_DEMO_API_KEY="sk-readme-example", SALIENCE_DATA_DIR=str(tmp_path / "data"))
    server = subprocess.Popen(
        SALIENCE + ["serve", "--config", str(config), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.poll() is not None else "timeout"
            time.sleep(0.2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-readme-example", max_retries=0)
        completion = client.chat.completions.create(
            model="salience-echo", messages=[{"role": "user", "content": "Hello!"}], user="readme-user"
        )
        assert completion.choices[0].message.content == "You said: Hello!"
        assert (tmp_path / "data" / "salience.db").exists()
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "sk-readme-example" not in output  # no secrets in logs
    assert "Hello!" not in output  # no conversation content in logs


def test_serve_refuses_a_bad_config_naming_file_field_and_reason(tmp_path):
    write_config(tmp_path, {"acme": {"upstream": {"timeout_seconds": -1}}})
    result = subprocess.run(SALIENCE + ["serve", "--config", str(tmp_path)], capture_output=True, text=True,
                            timeout=120, env=offline_env())
    assert result.returncode == 2
    assert "acme.yaml" in result.stderr and "upstream.timeout_seconds" in result.stderr and "greater than 0" in result.stderr


def test_import_command_imports_a_transcript_with_progress(tmp_path):
    write_config(tmp_path, {"demo": {}})
    transcript = tmp_path / "transcript.json"
    transcript.write_text(json.dumps({"sessions": [
        {"id": f"s{i}", "started_at": f"2024-0{i}-01T10:00:00Z",
         "messages": [{"id": f"s{i}:1", "role": "user", "content": text}]}
        for i, text in enumerate(["My cat Miso is twelve years old.", "I started a pottery class on Mondays."], start=1)
    ]}))
    result = subprocess.run(
        SALIENCE + ["import", str(transcript), "--user", "pat", "--config", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=offline_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "importing" in result.stderr and "2/2" in result.stderr
    assert "2 sessions, 2 messages: 2 memories added" in result.stderr

    async def stored() -> list[str]:
        store = open_store(f"sqlite:///{tmp_path / 'data' / 'salience.db'}")
        await store.open()
        try:
            return [m.text for m in await store.load_memories(UserRef("demo", "pat"))]
        finally:
            await store.close()

    assert asyncio.run(stored()) == ["My cat Miso is twelve years old.", "I started a pottery class on Mondays."]
