"""Detection latency per message: the offline detector against baselines measured in the same run.

    PYTHONPATH=src python bench/safety/bench_detect.py [--rounds 20]

Messages are the labelled corpus in tests/safety (short chat messages) plus the same
messages padded to ~600 characters (a long, rambling turn). Baselines: a no-op, and one
plain regex pass (the cheapest thing a detector could do). Prints p50/p95 in microseconds.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from pathlib import Path

import yaml

from salience.safety.detect import RuleBasedDetector

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "safety"
PLAIN_REGEX = re.compile(r"suicid|kill myself|self[- ]harm|hurt myself|overdos|hits me|want to die", re.IGNORECASE)
FILLER = " and honestly the week has been long, work was busy, I saw my sister, we talked about the holidays"


def corpus() -> list[str]:
    texts = []
    for path in sorted(CORPUS.glob("corpus_*.yaml")):
        texts.extend(m["text"] for m in yaml.safe_load(path.read_text())["messages"])
    return texts


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
    rounds = parser.parse_args().rounds
    detector = RuleBasedDetector()
    short = corpus()
    long = [(text + FILLER * 6)[:600] for text in short]
    print(f"{len(short)} messages x {rounds} rounds; Python {platform.python_version()} on {platform.machine()}")
    print(f"{'':32}{'p50 us':>10}{'p95 us':>10}")
    for name, fn in (
        ("no-op", lambda text: None),
        ("plain regex pass", PLAIN_REGEX.search),
        ("offline detector", detector.detect_sync),
    ):
        for label, texts in (("short", short), ("600 chars", long)):
            p50, p95 = measure(fn, texts, rounds)
            print(f"{name + ' (' + label + ')':32}{p50:>10.1f}{p95:>10.1f}")


if __name__ == "__main__":
    main()
