"""Screening and recall share one embedding of the user's message."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from salience.memory.shared_embeddings import SharedEmbeddings


class CountingEmbedder:
    name = "counting"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32).reshape(len(texts), 2)


async def test_a_text_embedded_once_is_not_embedded_again():
    inner = CountingEmbedder()
    shared = SharedEmbeddings(inner, size=2)
    first = await shared.embed(["I feel low", "hello"])
    again = await shared.embed(["hello", "I feel low"])
    assert inner.embedded == ["I feel low", "hello"]
    assert np.array_equal(again, first[::-1])
    assert shared.name == "counting"


async def test_only_the_most_recent_texts_are_kept():
    inner = CountingEmbedder()
    shared = SharedEmbeddings(inner, size=2)
    for text in ["a", "bb", "ccc", "a"]:
        await shared.embed([text])
    assert inner.embedded == ["a", "bb", "ccc", "a"]
    assert (await shared.embed([])).shape[0] == 0
