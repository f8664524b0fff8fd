"""Lexical relevance: BM25 (the ``bm25s`` library) with English stemming, over one user's memories."""

from __future__ import annotations

import logging

import bm25s
import numpy as np
import Stemmer

_STEMMER = Stemmer.Stemmer("english")
# bm25s sets its own logger to DEBUG: without this, every index build writes a line to the log
logging.getLogger("bm25s").setLevel(logging.WARNING)


def tokenize(texts: list[str]) -> bm25s.tokenization.Tokenized:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, show_progress=False)


def words(texts: list[str]) -> list[list[str]]:
    """Each text's words as the index holds them (stopwords out, stemmed), one list per text."""
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


class LexicalIndex:
    def __init__(self, texts: list[str], known: dict[str, list[str]] | None = None) -> None:
        """``known``: the words of texts indexed before (``self.words`` of the index this one
        replaces). A memory set rebuilt after a few memories were added tokenizes only those:
        tokenizing is about half of building the index."""
        self.size = len(texts)
        self._index = bm25s.BM25()
        known = known or {}
        new = [text for text in dict.fromkeys(texts) if text not in known]
        fresh = dict(zip(new, words(new))) if new else {}
        self.words: dict[str, list[str]] = {text: known[text] if text in known else fresh[text] for text in texts}
        if texts:
            self._index.index([self.words[text] for text in texts], show_progress=False)

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
