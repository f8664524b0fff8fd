"""What both bench scripts need: a private redis-server and salience replicas, loopback only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/, for processes.py

from processes import PrivateRedis, Service, free_port  # noqa: E402

__all__ = ["PrivateRedis", "start_replica"]


def start_replica(config_dir: Path, store_url: str, log_file: Path, extra_env: dict[str, str]) -> Service:
    """``python -m salience serve`` on a free port, sharing ``store_url`` with the others."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALIENCE_")}
    env.update(HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", SALIENCE_STORE_URL=store_url, **extra_env)
    argv = [sys.executable, "-m", "salience", "serve", "--config", str(config_dir), "--port", str(port)]
    return Service(f"replica on port {port}", argv, port, "/healthz", log_file, env)
