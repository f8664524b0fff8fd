"""The extraction worker: drains the durable queue, off the response path.

A job is leased, extracted, embedded, consolidated against the user's memories and
committed in one store transaction that also marks it done. A worker that dies mid-job
leaves a lease that runs out, and the job is claimed again; committing twice is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from salience.background import Poller
from salience.memory.consolidate import consolidate
from salience.memory.embed import Embedder
from salience.memory.extract import Extractor
from salience.model import ExtractionJob, MemoryItem, utcnow
from salience.store.base import Store

log = logging.getLogger("salience.worker")

MAX_ATTEMPTS = 5
LEASE = timedelta(seconds=120)  # the default; salience.yaml extraction.lease_seconds sets it


class ExtractionWorker:
    def __init__(
        self,
        store: Store,
        extractor: Extractor,
        embedder: Embedder,
        poll_seconds: float = 1.0,
        batch: int = 8,
        lease: timedelta = LEASE,
    ) -> None:
        self.store = store
        self.lease = lease
        self.extractor = extractor
        self.embedder = embedder
        self.poll_seconds = poll_seconds
        self.batch = batch
        # Told of every commit (the audit log); set by ``Services``.
        self.on_commit: Callable[[ExtractionJob, list[MemoryItem], list[MemoryItem]], Awaitable[None]] | None = None
        self._poller = Poller("salience-extraction-worker", self.run_once, poll_seconds)

    async def process(self, job: ExtractionJob) -> tuple[int, int]:
        """Extract one job's memories and commit them; returns (added, reinforced)."""
        candidates = await self.extractor.extract(job.messages)
        if candidates:
            embeddings = await self.embedder.embed([c.text for c in candidates])
            existing = await self.store.load_memories(job.user)
            added, reinforced = consolidate(job.user, candidates, embeddings, existing)
        else:
            added, reinforced = [], []
        await self.store.commit_extraction(job, added, reinforced)
        if self.on_commit is not None and (added or reinforced):
            await self.on_commit(job, added, reinforced)
        return len(added), len(reinforced)

    async def run_once(self) -> int:
        """Claim and process the jobs that are due now; returns how many were claimed."""
        jobs = await self.store.claim_extraction_jobs(self.batch, utcnow(), self.lease)
        for job in jobs:
            try:
                await self.process(job)
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
        self._poller.notify()

    async def drain(self) -> None:
        """Process until no job is due (used by import, the demo and tests)."""
        while await self.run_once():
            pass

    def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()
