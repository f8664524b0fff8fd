"""What the benchmarks share to run servers on this machine, loopback only: a free port, a
private redis-server, and a server process waited for until it answers.

The scripts live one folder down (bench/<name>/), so each puts this folder on ``sys.path``
before importing from here: the benchmarks are scripts, not a package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """redis-server on a free 127.0.0.1 port, no persistence, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        self.client = redis.Redis(port=self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Service:
    """A server process on ``port``, waited for until ``ready_path`` answers; its output goes to ``log``."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log: Path, env: dict[str, str]) -> None:
        self.name, self.port, self.ready_path, self.log = name, port, ready_path, log
        self.url = f"http://127.0.0.1:{port}"
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start; its log ({self.log}):\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
