"""One embedding per text per request: a small memo in front of any ``Embedder``.

The request path embeds the user's latest message twice over: safety screening (the
classifier reads its embedding) and recall (the query vector). Both go through this
wrapper, so the second asks for a vector the first already paid for. Only the most
recent texts are kept (in memory, never logged).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from salience.memory.embed import Embedder


class SharedEmbeddings:
    """An ``Embedder`` that remembers the vectors of the last ``size`` texts it embedded."""

    def __init__(self, inner: Embedder, size: int = 512) -> None:
        self.inner = inner
        self.name = inner.name
        self.size = size
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._recent))
        if missing:
            for text, vector in zip(missing, await self.inner.embed(missing)):
                self._recent[text] = vector
                self._recent.move_to_end(text)
            while len(self._recent) > self.size:
                self._recent.popitem(last=False)
        if not texts:
            return await self.inner.embed([])
        return np.stack([self._recent[t] if t in self._recent else (await self.inner.embed([t]))[0] for t in texts])

    def __getattr__(self, name: str):  # load(), embed_sync() and the like of the wrapped embedder
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
