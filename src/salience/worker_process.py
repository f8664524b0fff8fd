"""Extraction in its own OS process: ``salience worker``, and its supervisor in ``salience serve``.

Extracting a job for a user with a large memory loads and scans that memory, which holds the
GIL for hundreds of milliseconds: run in the serving process it slows every reply on it (the
gateway benchmark measured 6x on the turns that add memories). So by default ``salience
serve`` starts ``salience worker`` as a child process (``extraction.process: separate``) and
the two share only the store, which is where the queue already is.

The child's stdin is a pipe from the serving process:
  - a byte on it means "a job was queued": the worker looks after ``extraction.gather_seconds``
    (the turns queued meanwhile make one batch) rather than at its next poll;
  - end of file means the serving process is gone (even SIGKILLed): the worker stops, and any
    job it held is taken over when its lease runs out, as after any crash.
The child writes back on a second pipe (``--commits-fd``): one line, the tenant and user ids,
for each job as it is committed. The serving process then brings that user's memory set and
person model up to date in the background (``Recaller.refresh``), while it is otherwise waiting
for an upstream, instead of in the user's next reply. A line lost (a full pipe) only leaves that
work to the next reply, as before.
A third descriptor (``--replies-fd``) is the serving process's count of replies being prepared
(``reply_gauge.py``): the worker holds back while it is not zero, woken by the serving process
when it falls to zero (``--replies-wake-fd``). Another (``--vectors-fd``)
is the table of the vectors the serving process embedded (``memory/vector_table.py``): the
worker reads a turn's vector there instead of embedding the text again.
The supervisor restarts a child that dies, after a pause that grows while it keeps dying, and
stops it when serving stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from collections.abc import Callable

from salience.background import cancel_task
from salience.model import UserRef
from salience.settings import Config

log = logging.getLogger("salience.worker_process")

RESTART_PAUSE_MIN = 0.5  # seconds before a dead worker is started again
RESTART_PAUSE_MAX = 30.0  # ... doubling while it keeps dying soon after starting
STABLE_AFTER = 60.0  # a worker that ran this long before dying starts again at the shortest pause
STOP_GRACE = 10.0  # seconds a stopping worker gets before it is killed
# The supervised worker runs at a lower CPU priority than the serving process: on a machine
# short of cores it takes what serving leaves, instead of slowing replies (the gateway
# benchmark's throughput fell by a quarter with the worker at the same priority). On Linux it
# also runs under SCHED_IDLE, which any runnable serving thread preempts at once: with niceness
# alone a woken serving thread could wait for the worker's slice (extraction on/off p50 was
# 1.05-1.08 with niceness alone, 1.03-1.06 with SCHED_IDLE, docs/performance.md).
WORKER_NICENESS = 10
PARENT_CHECK_SECONDS = 1.0


def worker_argv(config_dir: Path) -> list[str]:
    return [sys.executable, "-m", "salience", "worker", "--config", str(config_dir), "--supervised-by", str(os.getpid())]


class ExtractionProcess:
    """Runs ``salience worker`` as a child process of ``salience serve`` and keeps it running."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.restarts = 0
        self.on_commit: Callable[[UserRef], None] | None = None  # a job of this user was committed
        self.replies_fd: int | None = None  # the serving process's ReplyGauge, handed to each child
        self.replies_wake_fd: int | None = None  # ... the gauge's wake-up
        self.vectors_fd: int | None = None  # ... and its VectorTable
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def for_config(cls, config: Config) -> "ExtractionProcess":
        return cls(worker_argv(config.directory))

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def notify(self) -> None:
        """A job was queued: nudge the worker (a lost nudge only costs a poll interval)."""
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            return
        try:
            process.stdin.write(b"\n")
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            pass  # it is dying; the supervisor starts another

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._supervise(), name="salience-extraction-process")

    async def _supervise(self) -> None:
        pause = RESTART_PAUSE_MIN
        while not self._stopping:
            started = time.monotonic()
            commits_read, commits_write = os.pipe()
            listening = None
            try:
                # its own session: a Ctrl-C in the terminal reaches serve, which stops it in order
                shared = {"--replies-fd": self.replies_fd, "--replies-wake-fd": self.replies_wake_fd,
                          "--vectors-fd": self.vectors_fd}
                shared_fds = {option: fd for option, fd in shared.items() if fd is not None}
                self._process = await asyncio.create_subprocess_exec(
                    *self.argv, "--commits-fd", str(commits_write),
                    *(word for option, fd in shared_fds.items() for word in (option, str(fd))),
                    stdin=asyncio.subprocess.PIPE, start_new_session=True, pass_fds=(commits_write, *shared_fds.values()),
                )
                os.close(commits_write)
                commits_write = -1
                listening = asyncio.create_task(self._hear_commits(commits_read))
                commits_read = -1  # the reader owns it now
                code = await self._process.wait()
            except OSError as exc:
                code = None
                log.error("could not start the extraction worker process: %s", type(exc).__name__)
            finally:
                await cancel_task(listening)
                for fd in (commits_read, commits_write):
                    if fd >= 0:
                        os.close(fd)
            if self._stopping:
                return
            if time.monotonic() - started >= STABLE_AFTER:
                pause = RESTART_PAUSE_MIN
            log.warning("extraction worker process exited (code %s): starting it again in %.1f s", code, pause)
            self.restarts += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_PAUSE_MAX)

    async def _hear_commits(self, fd: int) -> None:
        """Each line from the worker names a user whose job it committed."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                try:
                    said = json.loads(line)
                    user = UserRef(str(said["tenant"]), str(said["user"]))
                except (ValueError, KeyError, TypeError):
                    continue
                if self.on_commit is not None:
                    self.on_commit(user)
        finally:
            transport.close()

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
        await cancel_task(self._task)
        self._task = None
        self._process = None


async def run_worker(
    config: Config, supervised_by: int | None = None, commits_fd: int | None = None, replies_fd: int | None = None,
    replies_wake_fd: int | None = None, vectors_fd: int | None = None,
) -> None:
    """The body of ``salience worker``: the extraction worker alone, until SIGTERM / SIGINT,
    or (``supervised_by`` the serving process's pid) until the process that started it is gone.
    ``commits_fd``: where to name each user whose job was committed (the serving process).
    ``replies_fd``, ``replies_wake_fd``: the serving process's ``ReplyGauge``, to hold back for its replies.
    ``vectors_fd``: the serving process's ``VectorTable``, the vectors it embedded."""
    from salience.memory.vector_table import VectorTable
    from salience.reply_gauge import ReplyGauge

    from salience.memory.embed import build_embedder
    from salience.services import Services

    embedder = None
    if supervised_by is not None:  # beside a serving process: background work, one core at most
        lower_priority()
        embedder = build_embedder(config.server.embedder, threads=1)
    services = Services.build(
        config, embedder=embedder, replies=ReplyGauge(replies_fd, replies_wake_fd) if replies_fd is not None else None,
        vectors=VectorTable(vectors_fd) if vectors_fd is not None else None,
    )
    if commits_fd is not None:
        services.announce_commit = commit_announcer(commits_fd)
    await services.start(run_worker=False)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    watcher = asyncio.create_task(_follow_parent(services, done, supervised_by)) if supervised_by is not None else None
    try:
        warm = getattr(services.embedder, "load", None)
        if warm is not None:
            await asyncio.to_thread(warm)
        services.worker.start()
        log.info("extraction worker running")
        await done.wait()
    finally:
        await cancel_task(watcher)
        # Bounded: a worker was seen never finishing its stop with Redis down. Exiting without
        # it is a crash as far as the queue is concerned: leased jobs are taken over later.
        stopping = asyncio.create_task(services.stop())
        finished, _ = await asyncio.wait({stopping}, timeout=STOP_GRACE)
        if not finished:
            log.error("the extraction worker did not stop within %.0f s: exiting", STOP_GRACE)
            logging.shutdown()
            os._exit(1)


def lower_priority() -> None:
    """This process yields the CPU to serving: its threads so far (Linux sets both per thread;
    BLAS starts its own on import) and, by inheritance, every thread it starts from now on."""
    threads = [int(task) for task in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    for thread in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, thread, WORKER_NICENESS)
            if hasattr(os, "SCHED_IDLE"):
                os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # the thread ended meanwhile, or the platform refused: niceness alone
            continue


def commit_announcer(fd: int) -> Callable[[UserRef], None]:
    """Writes one line per user to ``fd`` (per committed job), never blocking: with the pipe full
    (the serving process not reading), the line is dropped and the next reply catches up itself."""
    os.set_blocking(fd, False)

    def announce(user: UserRef) -> None:
        line = json.dumps({"tenant": user.tenant, "user": user.user}).encode() + b"\n"
        try:
            os.write(fd, line)  # at most PIPE_BUF bytes: written whole or not at all
        except (BlockingIOError, BrokenPipeError):
            pass

    return announce


async def _follow_parent(services: object, done: asyncio.Event, parent: int) -> None:
    """Nudges from the serving process on stdin; end of file, or a new parent process (ours
    died and we were handed to init), means it is gone: stop."""
    async def orphaned() -> None:
        # a second watch: a worker was once seen outliving a serve SIGKILLed as it started it
        # (and a serve killed before the worker ran leaves it with another parent from the start)
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_SECONDS)

    async def nudges() -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        worker = services.worker  # type: ignore[attr-defined]
        while await reader.read(4096):
            worker.notify()

    watches = [asyncio.create_task(orphaned()), asyncio.create_task(nudges())]
    try:
        await asyncio.wait(watches, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for watch in watches:
            await cancel_task(watch)
        done.set()
