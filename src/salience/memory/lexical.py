"""Lexical relevance: BM25 (the ``bm25s`` library) with English stemming, over one user's memories."""

from __future__ import annotations

import bm25s
import numpy as np
import Stemmer

_STEMMER = Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> bm25s.tokenization.Tokenized:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, show_progress=False)


class LexicalIndex:
    def __init__(self, texts: list[str]) -> None:
        self.size = len(texts)
        self._index = bm25s.BM25()
        if texts:
            self._index.index(tokenize(texts), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """One BM25 score per indexed text, scaled so the best is 1 (all 0 when nothing matches)."""
        if self.size == 0:
            return np.zeros(0, dtype=np.float32)
        tokens = tokenize([query])
        vocab = self._index.vocab_dict
        words = [word for word, _ in sorted(tokens.vocab.items(), key=lambda kv: kv[1])]
        query_words = [words[i] for i in tokens.ids[0] if words[i] in vocab]
        if not query_words:
            return np.zeros(self.size, dtype=np.float32)
        raw = np.asarray(self._index.get_scores(query_words), dtype=np.float32)
        best = float(raw.max())
        return raw / best if best > 0 else raw
