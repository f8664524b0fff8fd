"""Lexical relevance: BM25 with English stemming, over one user's memories.

Texts are tokenized by ``bm25s`` (stopwords out, Snowball stemming) and scored with its default
method (Lucene's BM25, k1 = 1.5, b = 0.75) to the bit: the tests compare with ``bm25s`` itself.
The index is our own because ``bm25s`` indexes a corpus in one go, in Python loops over its
documents (~110 ms for 10k memories), and a memory set is brought up to date after nearly every
turn. Here each document's term counts are kept as arrays, so a set with a few memories removed
only re-sorts the counts by term (~0.6 ms for 10k), and one with memories added only inserts
their postings (~0.3 ms). The weights all depend on the corpus (its average length, each
term's document frequency), so they are worked out when a query reads its terms' postings,
for those terms only.
"""

from __future__ import annotations

import logging
import math
import re

import bm25s
import bm25s.stopwords
import numpy as np
import Stemmer
from scipy import sparse

_STEMMER = Stemmer.Stemmer("english")
# bm25s sets its own logger to DEBUG: without this, every tokenization writes a line to the log
logging.getLogger("bm25s").setLevel(logging.WARNING)

K1 = 1.5
B = 0.75


def tokenize(texts: list[str]) -> bm25s.tokenization.Tokenized:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, show_progress=False)


# bm25s.tokenize's own steps and settings, for ``words``
_SPLIT = re.compile(r"(?u)\b\w\w+\b").findall  # its default token pattern
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)  # what stopwords="en" stands for


def words(texts: list[str]) -> list[list[str]]:
    """Each text's words as the index holds them, one list per text: what
    ``bm25s.tokenize(texts, stopwords="en", stemmer=..., return_ids=False)`` returns (lowercased,
    split by its pattern, its English stopwords out, Snowball stems), without its per-call set-up:
    a query's words took 0.2 ms there, mostly building the stopword set again and progress bars
    that are never shown, on the request path of every remembered turn."""
    return [_STEMMER.stemWords([token for token in _SPLIT(text.lower()) if token not in _STOPWORDS]) for text in texts]


class LexicalIndex:
    """BM25 over a list of texts; ``updated`` derives the index of a list with texts removed or added."""

    def __init__(self, texts: list[str], known: dict[str, list[str]] | None = None) -> None:
        """``known``: the words of texts indexed before (``self.words`` of the index this one
        replaces). A memory set rebuilt after a few memories were added tokenizes only those."""
        self.words: dict[str, list[str]] = {}
        self.vocab: dict[str, int] = {}
        self._learn(texts, known or {})
        terms, counts, ptr, lengths = self._count(texts)
        self._assemble(len(texts), terms, counts, ptr, lengths, list(texts))

    def updated(self, kept: np.ndarray, added: list[str]) -> "LexicalIndex":
        """The index of this one's texts at positions ``kept`` (in that order), then ``added``.

        Only the added texts are tokenized and counted; the kept documents' counts are sliced
        out of this index's arrays."""
        index = LexicalIndex.__new__(LexicalIndex)
        kept = np.asarray(kept, dtype=np.int64)
        index.vocab = self.vocab
        everything = len(kept) == self.size and bool((kept == np.arange(self.size)).all())
        if everything:  # the words of texts only ever join: one dict, shared with the index before
            index.words = self.words
            kept_texts = list(self._texts)
        else:  # texts removed: their words go too (an erased memory leaves nothing behind)
            index.words = dict(self.words)
            kept_texts = [self._texts[i] for i in kept.tolist()]
            for text in set(self._texts) - set(kept_texts):
                del index.words[text]
        index._learn(added, self.words)
        if everything:  # only additions: the entries as they are
            terms, counts, ptr, lengths = self._terms, self._counts, self._ptr, self._lengths
        else:  # the kept documents' entries, in their new order
            starts, ends = self._ptr[kept], self._ptr[kept + 1]
            sizes = ends - starts
            ptr = np.zeros(len(kept) + 1, dtype=np.int64)
            np.cumsum(sizes, out=ptr[1:])
            entries = np.repeat(starts - ptr[:-1], sizes) + np.arange(ptr[-1], dtype=np.int64)
            terms, counts, lengths = self._terms[entries], self._counts[entries], self._lengths[kept]
        grown_from = None
        if added:
            new_terms, new_counts, new_ptr, new_lengths = index._count(added)
            if everything and self.size:
                new_docs = np.repeat(np.arange(self.size, self.size + len(added), dtype=np.int32), np.diff(new_ptr))
                grown_from = (self, new_terms, new_counts, new_docs)
            terms = np.concatenate([terms, new_terms])
            counts = np.concatenate([counts, new_counts])
            ptr = np.concatenate([ptr, new_ptr[1:] + ptr[-1]])
            lengths = np.concatenate([lengths, new_lengths])
        index._assemble(len(kept) + len(added), terms, counts, ptr, lengths, kept_texts + added, grown_from)
        return index

    def _learn(self, texts: list[str], known: dict[str, list[str]]) -> None:
        """Tokenize the texts not known yet; give their new words an id (in a copy of the
        vocabulary: the index this one replaces may be scoring a query meanwhile)."""
        new = [text for text in dict.fromkeys(texts) if text not in known and text not in self.words]
        fresh = dict(zip(new, words(new))) if new else {}
        for text in dict.fromkeys(texts):
            self.words[text] = known[text] if text in known else fresh[text]
        unseen = [w for text in dict.fromkeys(texts) for w in self.words[text] if w not in self.vocab]
        if unseen:
            self.vocab = dict(self.vocab)
            for word in unseen:
                self.vocab.setdefault(word, len(self.vocab))

    def _count(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per document, in order: its distinct terms and how often each occurs (flat, with
        offsets), and its length in tokens."""
        vocab = self.vocab
        token_lists = [[vocab[w] for w in self.words[text]] for text in texts]
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(texts))
        tokens = np.fromiter((t for ts in token_lists for t in ts), dtype=np.int64, count=int(lengths.sum()))
        docs = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        pairs, counts = np.unique(docs * max(len(vocab), 1) + tokens, return_counts=True)
        doc_of_pair, terms = np.divmod(pairs, max(len(vocab), 1))
        ptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(doc_of_pair, minlength=len(texts)), out=ptr[1:])
        return terms.astype(np.int32), counts.astype(np.float32), ptr, lengths

    def _assemble(
        self, size: int, terms: np.ndarray, counts: np.ndarray, ptr: np.ndarray, lengths: np.ndarray, texts: list[str],
        grown_from: tuple["LexicalIndex", np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """The term-major matrix of term counts queries read, and the corpus' average length.
        ``grown_from``: the index this one only adds documents to, with the added entries (terms,
        counts, documents): their postings are inserted into its postings instead of re-sorting
        every entry (0.6 ms at 10k memories, on every catch-up).

        Weights are worked out at query time, for the query's terms only: every weight depends on
        the corpus (its size, average length and the term's document frequency), so weights kept
        here would all have to be recomputed whenever a memory joins (~3 ms at 10k, after every
        extraction), where a query reads a few terms' postings."""
        self.size = size
        self._terms, self._counts, self._ptr, self._lengths = terms, counts, ptr, lengths
        self._texts = texts
        n_vocab = len(self.vocab)
        if size == 0:
            self._indptr = np.zeros(n_vocab + 1, dtype=np.int64)
            self._docs = np.zeros(0, dtype=np.int32)
            self._frequencies = np.zeros(0, dtype=np.float32)
            return
        self._average = np.float64(int(lengths.sum())) / size
        if grown_from is not None:
            self._indptr, self._docs, self._frequencies = grown_from[0]._postings_with(*grown_from[1:], n_vocab)
            return
        by_term = sparse.csr_matrix((counts, terms, ptr), shape=(size, n_vocab)).tocsc()
        self._indptr, self._docs, self._frequencies = by_term.indptr, by_term.indices, by_term.data

    def _postings_with(
        self, terms: np.ndarray, counts: np.ndarray, docs: np.ndarray, n_vocab: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This index's postings with entries of documents numbered after all of its own: each
        goes at the end of its term's postings, so every term's documents stay in order, as
        a term-major matrix built afresh has them."""
        indptr = self._indptr
        if len(indptr) <= n_vocab:  # words learnt since: no postings before
            indptr = np.concatenate([indptr, np.full(n_vocab + 1 - len(indptr), indptr[-1], dtype=indptr.dtype)])
        order = np.argsort(terms, kind="stable")  # by term, each term's entries still in document order
        at = indptr[terms[order] + 1]
        added = np.zeros(n_vocab + 1, dtype=np.int64)
        np.cumsum(np.bincount(terms, minlength=n_vocab), out=added[1:])
        return (indptr + added, np.insert(self._docs, at, docs[order]),
                np.insert(self._frequencies, at, counts[order]))

    def _weights(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """The documents holding ``term`` and its BM25 weight in each, in ``bm25s``' arithmetic
        (IDF by ``math.log``, float64, stored as float32), so that scores are identical."""
        start, end = int(self._indptr[term]), int(self._indptr[term + 1])
        docs = self._docs[start:end]
        frequency = end - start
        idf = np.float32(math.log(1 + (self.size - frequency + 0.5) / (frequency + 0.5)))
        length = self._lengths[docs].astype(np.float64)
        tf = self._frequencies[start:end].astype(np.float64)
        weights = (np.float64(idf) * (tf / (K1 * ((1 - B) + B * length / self._average) + tf))).astype(np.float32)
        return docs, weights

    def scores(self, query: str) -> np.ndarray:
        """One BM25 score per indexed text, scaled so the best is 1 (all 0 when nothing matches)."""
        if self.size == 0:
            return np.zeros(0, dtype=np.float32)
        n_terms = len(self._indptr) - 1
        ids = [self.vocab[word] for word in words([query])[0] if word in self.vocab]
        ids = [i for i in ids if i < n_terms]  # a word a newer index learnt meanwhile
        raw = np.zeros(self.size, dtype=np.float32)
        for term in ids:  # term by term, in float32, as bm25s adds them up
            np.add.at(raw, *self._weights(term))
        best = float(raw.max())
        return raw / best if best > 0 else raw
