"""Detection latency per message: rules only, rules + classifier, against baselines in the same run.

    PYTHONPATH=src python bench/safety/bench_detect.py [--rounds 20]

Messages are the labelled corpus in tests/safety (short chat messages) plus the same
messages padded to ~600 characters (a long, rambling turn). Rows:

- no-op, and one plain regex pass: what measuring costs, and the cheapest possible detector;
- rules only: ``RuleBasedDetector``;
- rules + classifier, embedding precomputed: ``HybridDetector`` whose embedder hands back
  vectors computed beforehand; this is its cost on the request path, where recall needs
  the same embedding anyway (``SharedEmbeddings``);
- rules + classifier, embedding included: all-MiniLM-L6-v2 on the CPU inside the timing
  (a request that does not recall, or a hosted embedder for recall), no vector cache;
- real long turns that are not a crisis (corpus and training data, over 200 characters and
  several sentences), with the shipped ``SENTENCES_FROM`` gate and with every long message
  split into sentences (as before the gate).

Prints p50/p95 in microseconds.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from salience.memory.embed import LocalMiniLMEmbedder
from salience.safety.classifier import SENTENCE_SPLIT_CHARS, sentences
from salience.safety.detect import RuleBasedDetector
from salience.safety import hybrid
from salience.safety.hybrid import HybridDetector
from salience.safety.train import TRAINING_FILES

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "safety"
PLAIN_REGEX = re.compile(r"suicid|kill myself|self[- ]harm|hurt myself|overdos|hits me|want to die", re.IGNORECASE)
# Whole sentences, so a padded message that gets split is split as a real long turn would be.
FILLER = " Honestly the week has been long. Work was busy. I saw my sister and we talked about the holidays."


def corpus() -> list[str]:
    texts = []
    for path in sorted(CORPUS.glob("corpus_*.yaml")):
        texts.extend(m["text"] for m in yaml.safe_load(path.read_text())["messages"])
    return texts


def long_ordinary_turns() -> list[str]:
    """Real long turns that are not a crisis (over ``SENTENCE_SPLIT_CHARS``, several sentences),
    from the corpus and the classifier's training data."""
    paths = [*sorted(CORPUS.glob("corpus_*.yaml")), *TRAINING_FILES]
    return [m["text"] for path in paths for m in yaml.safe_load(Path(path).read_text())["messages"]
            if m["label"] == "none" and len(m["text"]) > SENTENCE_SPLIT_CHARS and len(sentences(m["text"])) > 1]


class Precomputed:
    """An embedder that already holds every vector (what recall's shared embedding gives)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


class InlineMiniLM:
    """all-MiniLM-L6-v2 computed inside the call (no thread hop, so it can be timed synchronously)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model: LocalMiniLMEmbedder) -> None:
        self.model = model

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.embed_sync(texts)


def run(coroutine):
    """Drive a coroutine that never waits on the event loop (both embedders above)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine waited on something")


def measure(fn, texts: list[str], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        for text in texts:
            start = time.perf_counter_ns()
            fn(text)
            samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--embedding-rounds", type=int, default=2, help="rounds for the rows that run the model")
    args = parser.parse_args()
    rules = RuleBasedDetector()
    short = corpus()
    long = [(text + FILLER * 6)[:600] for text in short]
    ordinary_long = long_ordinary_turns()
    model = LocalMiniLMEmbedder(query_cache=0)  # every text embedded anew, as a new message is
    model.load()
    every_text = [*short, *long, *(s for t in [*short, *long] if len(t) > SENTENCE_SPLIT_CHARS for s in sentences(t))]
    unique = list(dict.fromkeys(every_text))
    precomputed = HybridDetector(Precomputed(dict(zip(unique, model.embed_sync(unique)))))
    inline = HybridDetector(InlineMiniLM(model))

    def every_sentence(text: str):
        """Detection as before ``SENTENCES_FROM``: every long message scored sentence by sentence."""
        gate, hybrid.SENTENCES_FROM = hybrid.SENTENCES_FROM, 0.0
        try:
            return run(inline.detect(text))
        finally:
            hybrid.SENTENCES_FROM = gate
    print(f"{len(short)} messages x {args.rounds} rounds; Python {platform.python_version()} on {platform.machine()}")
    print(f"{'':56}{'p50 us':>10}{'p95 us':>10}")
    for name, fn, rounds in (
        ("no-op", lambda text: None, args.rounds),
        ("plain regex pass", PLAIN_REGEX.search, args.rounds),
        ("rules only", rules.detect_sync, args.rounds),
        ("rules + classifier, embedding precomputed", lambda text: run(precomputed.detect(text)), args.rounds),
        ("rules + classifier, embedding included", lambda text: run(inline.detect(text)), args.embedding_rounds),
        ("(the embedding alone)", lambda text: model.embed_sync([text]), args.embedding_rounds),
    ):
        for label, texts in (("short", short), ("600 chars", long)):
            p50, p95 = measure(fn, texts, rounds)
            print(f"{name + ' (' + label + ')':56}{p50:>10.1f}{p95:>10.1f}")
    for name, fn in (("rules + classifier, embedding included", lambda text: run(inline.detect(text))),
                     ("the same, every long message split", every_sentence)):
        p50, p95 = measure(fn, ordinary_long, args.embedding_rounds)
        print(f"{name + f' ({len(ordinary_long)} long ordinary turns)':56}{p50:>10.1f}{p95:>10.1f}")


if __name__ == "__main__":
    main()
