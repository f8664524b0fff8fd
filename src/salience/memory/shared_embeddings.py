"""One embedding per text per request: a small memo in front of any ``Embedder``.

The request path embeds the user's latest message twice over: safety screening (the
classifier reads its embedding) and recall (the query vector). Both go through this
wrapper, so the second asks for a vector the first already paid for, also while it is
still being computed: the request path ``start``s the embedding as soon as it has the
text and screening and recall both wait for that one run, doing their other work
meanwhile. Only the most recent texts are kept (in memory, never logged).

With a ``VectorTable`` (``memory/vector_table.py``) the vectors are also shared with the other
process on the table: the serving process writes each one it computes, and the extraction
worker reads a text's vector there before embedding it again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Awaitable, Sequence

import numpy as np

from salience.memory.embed import Embedder, SubmitsEarly
from salience.memory.vector_table import VectorTable


class SharedEmbeddings:
    """An ``Embedder`` that remembers the vectors of the last ``size`` texts it embedded."""

    def __init__(self, inner: Embedder, size: int = 512, table: VectorTable | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.size = size
        self.table = table
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}  # texts being embedded now

    def start(self, text: str) -> None:
        """Begin embedding ``text`` now, in the background; ``embed`` of it waits for this run."""
        if not text or text in self._recent or self._running_here(text) is not None:
            return
        inner = self.inner
        running = self._keep(text, inner.submit(text)) if isinstance(inner, SubmitsEarly) else self._embed_missing([text])
        task = asyncio.get_running_loop().create_task(running)
        self._running[text] = task
        task.add_done_callback(lambda done: self._finished(text, done))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        running = {task for text in texts if (task := self._running_here(text)) is not None}
        if running:  # a failed run is retried below, where the error reaches this caller
            await asyncio.gather(*running, return_exceptions=True)
        missing = [t for t in dict.fromkeys(texts) if t not in self._recent and not self._from_table(t)]
        if missing:
            await self._embed_missing(missing)
        if not texts:
            return await self.inner.embed([])
        return np.stack([self._recent[t] if t in self._recent else (await self.inner.embed([t]))[0] for t in texts])

    async def _keep(self, text: str, vector: Awaitable[np.ndarray]) -> None:
        self._remember(text, await vector)

    def _from_table(self, text: str) -> bool:
        """Whether the table had the text's vector (now kept here too)."""
        vector = self.table.get(self.name, text) if self.table is not None else None
        if vector is None:
            return False
        self._remember(text, vector, computed=False)
        return True

    def _remember(self, text: str, vector: np.ndarray, computed: bool = True) -> None:
        if computed and self.table is not None:
            self.table.put(self.name, text, vector)
        self._recent[text] = vector
        self._recent.move_to_end(text)
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)

    async def _embed_missing(self, texts: list[str]) -> None:
        for text, vector in zip(texts, await self.inner.embed(texts)):
            self._remember(text, vector)

    def _running_here(self, text: str) -> asyncio.Task[None] | None:
        """The run for ``text`` on this event loop (one left on a closed loop never finishes)."""
        task = self._running.get(text)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    def _finished(self, text: str, task: asyncio.Task[None]) -> None:
        if self._running.get(text) is task:
            del self._running[text]
        if not task.cancelled():
            task.exception()  # retrieved: a caller that needs the vector embeds again and sees it

    def __getattr__(self, name: str):  # load(), embed_sync() and the like of the wrapped embedder
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
