"""The extraction worker: drains the durable queue, off the response path.

A job is leased, extracted, embedded, consolidated against the user's memories and
committed in one store transaction that also marks it done. A worker that dies mid-job
leaves a lease that runs out, and the job is claimed again; committing twice is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import numpy as np

from salience.background import Poller, at_once
from salience.memory.consolidate import consolidate, replacement
from salience.memory.embed import Embedder
from salience.memory.extract import Extractor
from salience.memory.memory_cache import MemoryCache
from salience.memory.memory_set import MemorySet
from salience.memory.person import update_person_model
from salience.memory.vectors import similarities
from salience.model import ExtractionJob, MemoryItem, Message, UserRef, utcnow
from salience.safety.detect import RuleBasedDetector
from salience.store.base import Store

log = logging.getLogger("salience.worker")

MAX_ATTEMPTS = 5
RELATED = 8  # existing memories shown to an extractor that decides ADD / UPDATE / DELETE / NOOP
LEASE = timedelta(seconds=120)  # the default; salience.yaml extraction.lease_seconds sets it
CACHED_USERS = 64  # memory sets the worker keeps between jobs


class ExtractionWorker:
    def __init__(
        self,
        store: Store,
        extractor: Extractor,
        embedder: Embedder,
        poll_seconds: float = 1.0,
        batch: int = 8,
        lease: timedelta = LEASE,
        gather_seconds: float = 0.0,
        hold_back: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``hold_back``: awaited before each step of a job; waits while the serving process
        prepares replies (``ReplyGauge.hold_back``)."""
        self.store = store
        self.hold_back = hold_back or at_once
        self.lease = lease
        self.extractor = extractor
        self.embedder = embedder
        # The memories each job is consolidated against, kept current with what was written
        # since the last job rather than loaded whole every time (10k memories: ~0.5 s).
        self.memories = MemoryCache(store, max_users=CACHED_USERS, serve_stale=False, lexical=False)
        self.poll_seconds = poll_seconds
        self.batch = batch
        # Told of every job committed (the audit log); set by ``Services``.
        self.on_commit: Callable[[ExtractionJob, list[MemoryItem], list[MemoryItem]], Awaitable[None]] | None = None
        # Told of the user of each job as it is committed (the serving process's caches catch up
        # in the background then, rather than in a reply that comes while the batch is still
        # being committed); set by ``Services``.
        self.on_user_committed: Callable[[UserRef], None] | None = None
        self._detector = RuleBasedDetector()  # arc signals: which messages came close to a crisis
        self._poller = Poller("salience-extraction-worker", self.run_once, poll_seconds, gather_seconds)
        # When extraction runs in another process (worker_process.py): how to nudge it instead.
        self.elsewhere: Callable[[], None] | None = None

    async def process(self, job: ExtractionJob) -> tuple[int, int]:
        """Extract one job's memories and commit them; returns (added, reinforced).

        The idempotency key is the message: a message some memory already came from is not
        extracted again. Entities and arc signals are written before the commit (they are
        keyed by stable ids, so a job that runs again rewrites the same rows)."""
        memories = None
        await self.hold_back()
        if getattr(self.extractor, "uses_known_memories", False):
            memories = await self.memories.get(job.user)
            fresh = [m for m in job.messages if m.id not in memories.counted_sources()]
            known = await self._related(fresh, memories)
            candidates = []
            if fresh:  # ``known`` only for an extractor that asks for it: the protocol's older form still works
                candidates = await (self.extractor.extract(fresh, known) if known else self.extractor.extract(fresh))
        else:
            # Extract first: most turns yield nothing, and then the user's memories are not
            # needed. An extractor not shown known memories (the offline one) reads each message
            # on its own, so dropping the candidates of messages already counted is the same as
            # extracting only the others.
            candidates = await self.extractor.extract(job.messages) if job.messages else []
            if candidates:
                await self.hold_back()
                memories = await self.memories.get(job.user)
                counted = memories.counted_sources()
                candidates = [c for c in candidates if not set(c.sources) <= counted]
        edits = [c for c in candidates if c.action != "add"]
        additions = [c for c in candidates if c.action == "add"]
        added: list[MemoryItem] = []
        reinforced: list[MemoryItem] = []
        if additions and memories is not None:
            await self.hold_back()
            embeddings = await self.embedder.embed([c.text for c in additions])
            added, reinforced = consolidate(job.user, additions, embeddings, memories.items, memories.matrix)
        for edit in edits:  # the LLM extractor's UPDATE / DELETE of a memory it was shown
            target = memories.item(edit.target) if memories is not None else None
            if target is not None and edit.action == "update":
                vector = (await self.embedder.embed([edit.text]))[0]
                added.append(replacement(job.user, edit, target, vector))
        await self.hold_back()
        await update_person_model(self.store, job.user, job.messages, added, self._flagged)
        for edit in edits:
            if memories is not None and memories.item(edit.target) is not None:
                await self.store.delete_memory(job.user, edit.target)
        await self.store.commit_extraction(job, added, reinforced)
        if self.on_commit is not None:  # also with nothing added: the arc signals were written
            await self.on_commit(job, added, reinforced)
        return len(added), len(reinforced)

    async def _related(self, messages: list[Message], memories: MemorySet) -> list[MemoryItem]:
        """The user's memories closest to what the exchange says: what an UPDATE or DELETE can name."""
        text = " ".join(m.content for m in messages if m.role == "user").strip()
        if not text or not memories.items:
            return []
        query = (await self.embedder.embed([text]))[0]
        similarity = similarities(memories.matrix, query)
        return [memories.items[int(i)] for i in np.argsort(-similarity)[:RELATED]]

    def _flagged(self, text: str) -> bool:
        return bool(self._detector.detect_sync(text))

    async def run_once(self) -> int:
        """Claim and process the jobs that are due now; returns how many were claimed."""
        jobs = await self.store.claim_extraction_jobs(self.batch, utcnow(), self.lease)
        for job in jobs:
            try:
                await self.process(job)
                if self.on_user_committed is not None:
                    self.on_user_committed(job.user)
            except Exception as exc:  # one bad job must not stop the queue
                give_up = job.attempts >= MAX_ATTEMPTS
                retry_at = None if give_up else utcnow() + timedelta(seconds=2**job.attempts)
                log.warning(
                    "extraction job %s failed (attempt %d, %s): %s",
                    job.id, job.attempts, "giving up" if give_up else "will retry", type(exc).__name__,
                )
                await self.store.retry_extraction(job.id, f"{type(exc).__name__}: {exc}", retry_at)
        return len(jobs)

    def notify(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        if self.elsewhere is not None:
            self.elsewhere()
        else:
            self._poller.notify()

    async def drain(self) -> None:
        """Process until no job is due (used by import, the demo and tests)."""
        while await self.run_once():
            pass

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
