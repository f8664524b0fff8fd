"""The offline detector against the labelled corpus in this folder.

corpus_dev.yaml was written with the rules; corpus_holdout*.yaml were each written after a
round of rule changes, measured once, then used for the next round; together they are the
"tuning corpus" that must meet the bar. corpus_final_holdout.yaml was written after the last
change and never used to tune: its numbers are the honest estimate for unseen phrasings
(docs/safety.md), guarded here against regressions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from salience.safety.detect import RuleBasedDetector

HERE = Path(__file__).parent
TUNING = sorted(p.name for p in HERE.glob("corpus_*.yaml") if p.name != "corpus_final_holdout.yaml")
FINAL = "corpus_final_holdout.yaml"


@dataclass
class Confusion:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    right_category: int = 0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn)

    @property
    def false_positive_rate(self) -> float:
        return self.fp / (self.fp + self.tn)

    def __str__(self) -> str:
        return (f"TP={self.tp} FN={self.fn} FP={self.fp} TN={self.tn} recall={self.recall:.3f} "
                f"FPR={self.false_positive_rate:.3f} category right on {self.right_category}/{self.tp}")


def messages(*files: str) -> list[dict]:
    return [m for name in files for m in yaml.safe_load((HERE / name).read_text())["messages"]]


def confusion(corpus: list[dict]) -> tuple[Confusion, list[str]]:
    detector, result, mistakes = RuleBasedDetector(), Confusion(), []
    for message in corpus:
        flags = detector.detect_sync(message["text"])
        crisis = message["label"] != "none"
        if crisis and flags:
            result.tp += 1
            result.right_category += any(f.category == message["label"] for f in flags)
        elif crisis:
            result.fn += 1
            mistakes.append(f"missed {message['label']}: {message['text']}")
        elif flags:
            result.fp += 1
            mistakes.append(f"false alarm ({message['kind']}): {message['text']}")
        else:
            result.tn += 1
    return result, mistakes


def test_the_corpus_is_large_and_covers_every_kind():
    corpus = messages(*TUNING, FINAL)
    assert len(corpus) >= 150
    labels = {m["label"] for m in corpus}
    assert labels >= {"suicidal_ideation", "self_harm", "abuse_or_violence", "harm_to_others", "medical_emergency", "none"}
    kinds = {m["kind"] for m in corpus if m["label"] == "none"}
    assert kinds >= {"negation", "idiom", "third_person", "media", "ordinary"}
    assert {m["kind"] for m in corpus if m["label"] != "none"} >= {"direct", "indirect", "history"}


def test_recall_and_false_positive_rate_on_the_tuning_corpus():
    result, mistakes = confusion(messages(*TUNING))
    print(f"\ntuning corpus ({', '.join(TUNING)}): {result}")
    assert result.recall >= 0.95, mistakes
    assert result.false_positive_rate <= 0.05, mistakes
    assert result.right_category == result.tp


def test_the_final_held_out_part_does_not_regress():
    """Measured once, after the last rule change: recall 0.524, FPR 0.000 (see docs/safety.md)."""
    result, mistakes = confusion(messages(FINAL))
    print(f"\nfinal held-out ({FINAL}): {result}")
    assert result.false_positive_rate <= 0.05, mistakes
    assert result.recall >= 0.52, mistakes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I want to die.", [("suicidal_ideation", "risk")]),
        ("I want to die tonight, I have the pills", [("suicidal_ideation", "imminent")]),
        ("I tried to kill myself years ago, I'm doing well now", [("suicidal_ideation", "concern")]),
        ("I tried to kill myself last week", [("suicidal_ideation", "risk")]),
        ("lol i want to die", [("suicidal_ideation", "concern")]),
        ("I'd never kill myself", []),
        ("I can't stop thinking about killing myself", [("suicidal_ideation", "risk")]),
        ("I don't know why I want to die", [("suicidal_ideation", "risk")]),
        ("No, I want to die", [("suicidal_ideation", "risk")]),
        ('My sister keeps singing "I want to die" from that musical', []),
        ('I told her "I want to die"', [("suicidal_ideation", "risk")]),
        ("My husband hits me and I cut myself last night", [("abuse_or_violence", "risk"), ("self_harm", "risk")]),
    ],
)
def test_negation_distance_quotes_and_severity(text, expected):
    flags = RuleBasedDetector().detect_sync(text)
    assert sorted((f.category, f.severity) for f in flags) == sorted(expected)


def test_detection_stays_well_under_five_milliseconds_per_message():
    """The budget on the reply path (bench/safety has the full numbers against baselines)."""
    import statistics
    import time

    detector = RuleBasedDetector()
    corpus = [m["text"] for m in messages(*TUNING, FINAL)]
    samples = []
    for text in corpus * 3:
        start = time.perf_counter()
        detector.detect_sync(text)
        samples.append(time.perf_counter() - start)
    assert statistics.median(samples) < 0.005
