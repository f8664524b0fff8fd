"""The learned half of the offline detector: a linear classifier over a message's embedding.

Features: the message's sentence embedding (all-MiniLM-L6-v2, the embedder recall uses, so
the request path computes it once for both) and hashed word unigrams and bigrams of the
normalised text (stateless: no vocabulary to ship). Model: one multinomial logistic
regression over six classes, "none" and the five categories, fitted by ``salience.safety.train``
and shipped as plain arrays in ``data/classifier.npz`` (no pickle). Scoring a message is a
dot product and a softmax.

The thresholds are in the file too: they were chosen by cross-validation on the training
data only (docs/safety.md has the method and the numbers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from salience.safety.rules import Category

DATA = Path(__file__).parent / "data"
WEIGHTS = DATA / "classifier.npz"
NONE = "none"
HASHED_FEATURES = 2**18
# The embedder the weights were fitted on; another model's vectors mean nothing to them.
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
SENTENCE_SPLIT_CHARS = 200  # longer messages may also be scored sentence by sentence (hybrid.SENTENCES_FROM)


def hashing_vectorizer():
    """Word unigrams and bigrams, hashed. The same object at training and at scoring time."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=HASHED_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm="l2",
        token_pattern=r"(?u)\b\w[\w']*\b", lowercase=False,
    )


def hashed_rows(analyze: Callable[[str], list[str]], texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays (indices, indptr, data) ``hashing_vectorizer().transform(texts)`` makes, to
    the bit, from its analyzer's features, scikit-learn's own hash and its arithmetic: each
    feature's column is its signed 32-bit MurmurHash3 folded into ``HASHED_FEATURES`` as
    ``FeatureHasher`` folds it, repeats add up, and each row is divided by its L2 norm. On the
    request path ``transform`` spent most of a call in per-call input checks and output wrappers
    around this (py-spy: 12% of the serving thread's time with memory on)."""
    from sklearn.utils import murmurhash3_32

    indices: list[int] = []
    data: list[float] = []
    indptr = [0]
    for text in texts:
        counts = Counter(_fold(murmurhash3_32(feature, seed=0)) for feature in analyze(text))
        columns = sorted(counts)
        values = np.array([counts[column] for column in columns], dtype=np.float64)
        norm = float(np.sqrt(values @ values))  # integer counts: the sum of squares is exact in any order
        indices.extend(columns)
        data.extend((values / norm if norm > 0 else values).tolist())
        indptr.append(len(indices))
    return np.array(indices, dtype=np.int32), np.array(indptr, dtype=np.int32), np.array(data, dtype=np.float64)


def _fold(h: int) -> int:
    """``FeatureHasher``'s column for a signed 32-bit hash (its special case included)."""
    if h == -(2**31):
        return (2**31 - 1 - (HASHED_FEATURES - 1)) % HASHED_FEATURES
    return abs(h) % HASHED_FEATURES


@dataclass(frozen=True)
class Thresholds:
    flag_at: float  # P(crisis) from which the classifier flags a message on its own
    risk_at: float  # P(crisis) from which its flag is "risk" rather than "concern"
    confirm_at: float  # a rule's flag stands unless P(crisis) is below this (the classifier's veto)


@dataclass(frozen=True)
class Score:
    crisis: float  # 1 - P(none)
    category: Category  # the most likely crisis category
    category_probability: float


class SafetyClassifier:
    """Weights and thresholds loaded from a ``.npz`` written by ``salience.safety.train``."""

    def __init__(
        self,
        classes: list[str],
        embedding_coef: np.ndarray,
        hashed_columns: np.ndarray,
        hashed_coef: np.ndarray,
        intercept: np.ndarray,
        thresholds: Thresholds,
        embedding_model: str = EMBEDDING_MODEL,
        metrics: dict[str, float] | None = None,
    ) -> None:
        self.classes = classes
        self.embedding_coef = embedding_coef.astype(np.float32)  # (classes, dim)
        self.hashed_columns = hashed_columns.astype(np.int64)  # the hashed features with a weight
        self.hashed_coef = hashed_coef.astype(np.float32)  # (classes, len(hashed_columns))
        self.intercept = intercept.astype(np.float32)
        self.thresholds = thresholds
        self.embedding_model = embedding_model
        self.metrics = metrics or {}
        self._none = classes.index(NONE)
        # hashed feature -> its column in hashed_coef, -1 for the features that weigh nothing
        self._position_of = np.full(HASHED_FEATURES, -1, dtype=np.int64)
        self._position_of[self.hashed_columns] = np.arange(len(self.hashed_columns))

    @property
    def dimension(self) -> int:
        return int(self.embedding_coef.shape[1])

    @cached_property
    def analyze(self) -> Callable[[str], list[str]]:
        """The hashed features' words and word pairs, as the fitted vectorizer reads a text."""
        return hashing_vectorizer().build_analyzer()

    def word_logits(self, normalised_texts: list[str]) -> np.ndarray:
        """The words' share of the logits, one row per text. It needs no embedding, so the
        request path computes it while the embedding is still running."""
        indices, indptr, data = hashed_rows(self.analyze, normalised_texts)
        logits = np.zeros((len(normalised_texts), len(self.classes)), dtype=np.float32)
        positions = self._position_of[indices]
        weighed = positions >= 0  # a word pair never seen in training weighs nothing
        rows = np.repeat(np.arange(len(normalised_texts)), np.diff(indptr))[weighed]
        contributions = self.hashed_coef[:, positions[weighed]].T * data[weighed, None].astype(np.float32)
        np.add.at(logits, rows, contributions)
        return logits

    def probabilities(self, embeddings: np.ndarray, normalised_texts: list[str]) -> np.ndarray:
        """Class probabilities, one row per text (embeddings: one unit vector per text)."""
        return self.probabilities_with(embeddings, self.word_logits(normalised_texts))

    def probabilities_with(self, embeddings: np.ndarray, word_logits: np.ndarray) -> np.ndarray:
        """``probabilities`` from the texts' ``word_logits``, computed beforehand."""
        logits = embeddings.astype(np.float32) @ self.embedding_coef.T + self.intercept + word_logits
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def score(self, embeddings: np.ndarray, normalised_texts: list[str]) -> Score:
        """The strongest of the rows (a message, or a message and its sentences)."""
        return self.score_with(embeddings, self.word_logits(normalised_texts))

    def score_with(self, embeddings: np.ndarray, word_logits: np.ndarray) -> Score:
        """``score`` from the texts' ``word_logits``, computed beforehand."""
        probabilities = self.probabilities_with(embeddings, word_logits)
        row = int(np.argmin(probabilities[:, self._none]))
        crisis = np.delete(probabilities[row], self._none)
        names = [c for c in self.classes if c != NONE]
        best = int(np.argmax(crisis))
        return Score(float(1.0 - probabilities[row, self._none]), names[best], float(crisis[best]))  # type: ignore[arg-type]

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            classes=np.array(self.classes),
            embedding_coef=self.embedding_coef,
            hashed_columns=self.hashed_columns,
            hashed_coef=self.hashed_coef,
            intercept=self.intercept,
            thresholds=np.array([self.thresholds.flag_at, self.thresholds.risk_at, self.thresholds.confirm_at]),
            embedding_model=np.array(self.embedding_model),
            metric_names=np.array(sorted(self.metrics)),
            metric_values=np.array([self.metrics[k] for k in sorted(self.metrics)], dtype=np.float64),
        )

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> "SafetyClassifier":
        with np.load(path, allow_pickle=False) as data:
            flag_at, risk_at, confirm_at = (float(v) for v in data["thresholds"])
            return cls(
                classes=[str(c) for c in data["classes"]],
                embedding_coef=data["embedding_coef"],
                hashed_columns=data["hashed_columns"],
                hashed_coef=data["hashed_coef"],
                intercept=data["intercept"],
                thresholds=Thresholds(flag_at, risk_at, confirm_at),
                embedding_model=str(data["embedding_model"]),
                metrics=dict(zip((str(n) for n in data["metric_names"]), (float(v) for v in data["metric_values"]))),
            )
