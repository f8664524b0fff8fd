"""``salience serve`` extracts through a supervised child process (``salience worker``)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import write_config
from tests.processes import ProxyProcess, offline_env

KEY = "sk-worker-process-key"


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def worker_child(pid: int, other_than: int | None = None, timeout: float = 60) -> int:
    """The serving process's ``salience worker`` child, waiting for it to (re)appear."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children(pid):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"worker" in argv and child != other_than:
                return child
        time.sleep(0.1)
    raise AssertionError("no extraction worker process")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def memories(http: httpx.Client, user: str) -> list[str]:
    return [m["text"] for m in http.get(f"/v1/users/{user}/memories").json()["data"]]


def say(http: httpx.Client, user: str, text: str) -> None:
    reply = http.post(
        "/v1/chat/completions",
        headers={"x-salience-user": user},
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
    )
    assert reply.status_code == 200


def wait_for_memory(http: httpx.Client, user: str, word: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(word in text for text in memories(http, user)):
        assert time.monotonic() < deadline, f"no memory with {word!r} for {user}"
        time.sleep(0.2)


def test_serve_extracts_in_a_supervised_worker_process(tmp_path):
    config = write_config(tmp_path / "config", {"demo": {"api_keys": [KEY], "upstream": {"transport": "echo"}}})
    assert not (tmp_path / "config" / "data" / "salience.db").exists()
    proxy = ProxyProcess(config, offline_env(), tmp_path / "proxy.log").start()
    assert proxy.process is not None
    try:
        worker = worker_child(proxy.process.pid)
        with httpx.Client(base_url=proxy.url, headers={"authorization": f"Bearer {KEY}"}, timeout=30) as http:
            say(http, "ana", "I adopted a grey cat called Pebble last spring.")
            wait_for_memory(http, "ana", "Pebble")
            # it yields the CPU to serving when cores are short
            assert os.getpriority(os.PRIO_PROCESS, worker) > os.getpriority(os.PRIO_PROCESS, proxy.process.pid)
            # ... at once: every one of its threads is preempted by any serving thread (SCHED_IDLE)
            threads = [int(task.name) for task in Path(f"/proc/{worker}/task").iterdir()]
            assert len(threads) > 1 and all(os.sched_getscheduler(tid) == os.SCHED_IDLE for tid in threads)
            assert os.sched_getscheduler(proxy.process.pid) == os.SCHED_OTHER
            # it shares the serving process's count of replies and the vectors that process embedded
            held = " ".join(os.readlink(fd) for fd in Path(f"/proc/{worker}/fd").iterdir())
            assert "salience-replies" in held and "eventfd" in held and "salience-vectors" in held
            assert (tmp_path / "config" / "data" / "salience.db").exists()  # a real SQLite file, shared

            # Extraction happens in the child only: frozen, nothing is extracted; thawed, it is.
            os.kill(worker, signal.SIGSTOP)
            try:
                say(http, "ben", "My brother Farid is getting married in June.")
                time.sleep(3)
                assert memories(http, "ben") == []
            finally:
                os.kill(worker, signal.SIGCONT)
            wait_for_memory(http, "ben", "Farid")

            # A worker that dies is started again, and extraction goes on.
            os.kill(worker, signal.SIGKILL)
            restarted = worker_child(proxy.process.pid, other_than=worker)
            say(http, "cleo", "I have been learning to play the violin on weekends.")
            wait_for_memory(http, "cleo", "violin")
    finally:
        proxy.stop()
    assert not alive(restarted), "the worker must stop with serve"
    log = (tmp_path / "proxy.log").read_text()
    assert "extraction worker process exited" in log
    assert "Pebble" not in log and KEY not in log  # no memory content, no secrets in logs


def test_a_killed_serve_takes_its_worker_with_it(tmp_path):
    config = write_config(tmp_path / "config", {"demo": {"api_keys": [KEY], "upstream": {"transport": "echo"}}})
    proxy = ProxyProcess(config, offline_env(), tmp_path / "proxy.log").start()
    assert proxy.process is not None
    worker = worker_child(proxy.process.pid)
    proxy.kill()  # SIGKILL: no shutdown hook runs
    deadline = time.monotonic() + 30
    while alive(worker):
        assert time.monotonic() < deadline, "the worker outlived the serving process"
        time.sleep(0.1)


def test_inline_extraction_starts_no_worker_process(tmp_path):
    config = write_config(
        tmp_path / "config",
        {"demo": {"api_keys": [KEY], "upstream": {"transport": "echo"}}},
        {"extraction": {"process": "inline"}},
    )
    proxy = ProxyProcess(config, offline_env(), tmp_path / "proxy.log").start()
    assert proxy.process is not None
    try:
        with httpx.Client(base_url=proxy.url, headers={"authorization": f"Bearer {KEY}"}, timeout=30) as http:
            say(http, "ana", "I adopted a grey cat called Pebble last spring.")
            wait_for_memory(http, "ana", "Pebble")
        assert children(proxy.process.pid) == []
    finally:
        proxy.stop()


def test_a_worker_whose_serve_is_gone_stops_even_with_its_pipe_still_open(tmp_path):
    """The serving process died before the worker ran, and something else still holds the
    pipe (no end of file): the worker sees it has another parent and stops."""
    import subprocess
    import sys

    config = write_config(tmp_path / "config", {"demo": {"api_keys": [KEY], "upstream": {"transport": "echo"}}})
    read_end, write_end = os.pipe()
    try:
        starter = (
            "import os, subprocess, sys; from salience.worker_process import worker_argv; "
            f"p = subprocess.Popen(worker_argv(__import__('pathlib').Path({str(config)!r})), stdin={read_end}, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True); print(p.pid)"
        )
        started = subprocess.run(
            [sys.executable, "-c", starter], env=offline_env(), capture_output=True, text=True, pass_fds=(read_end,),
            check=True,
        )
        worker = int(started.stdout.split()[0])
        deadline = time.monotonic() + 60
        while alive(worker):
            if time.monotonic() > deadline:
                os.kill(worker, signal.SIGKILL)
                raise AssertionError("the worker outlived the process that started it")
            time.sleep(0.2)
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_the_serving_process_hears_of_each_job_the_worker_commits():
    """The worker names each user whose job it committed on a pipe of its own; a line that is
    not one is skipped, and the supervisor keeps listening."""
    import asyncio
    import sys

    from salience.model import UserRef
    from salience.worker_process import ExtractionProcess

    child = (
        "import sys, os\n"
        "from salience.model import UserRef\n"
        "from salience.worker_process import commit_announcer\n"
        "fd = int(sys.argv[sys.argv.index('--commits-fd') + 1])\n"
        "os.write(fd, b'not json\\n')\n"
        "announce = commit_announcer(fd)\n"
        "announce(UserRef('demo', 'ada')); announce(UserRef('acme', 'b\\u00e9a'))\n"
        "sys.stdin.read()\n"  # until the supervisor stops it
    )
    heard: list[UserRef] = []
    process = ExtractionProcess([sys.executable, "-c", child])
    process.on_commit = heard.append
    process.start()
    try:
        for _ in range(200):
            if len(heard) == 2:
                break
            await asyncio.sleep(0.05)
        assert heard == [UserRef("demo", "ada"), UserRef("acme", "béa")]
    finally:
        await process.stop()
