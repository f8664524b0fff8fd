"""False alarms on ordinary conversation: the detector over every turn of LoCoMo.

    PYTHONPATH=src python bench/safety/ordinary_chat.py [--data ../shared/data/locomo/locomo10.json]

LoCoMo's conversations (public, CC BY-NC 4.0, not shipped) are long, friendly chats between two
people over months: hobbies, family, work, plans, encouragement. None of its 5,882 turns is a
crisis disclosure, so every flag is a false alarm: a pinned safety memory, crisis resources in
every later conversation and perhaps a webhook to the app's safety team, for an ordinary user.
The set is never training data, though the registers of ``training_chat_2.yaml`` were chosen from
its false alarms, so it no longer measures the shipped classifier blind. Rows, in the same run:
the rules alone, and the shipped detector (rules + classifier), each as a share of turns flagged,
by category, and for turns over ``SENTENCE_SPLIT_CHARS``. Writes
``bench/results/safety_ordinary_chat.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
from collections import Counter
from pathlib import Path

from rich.progress import track

from salience.eval.locomo_data import load_conversations
from salience.memory.embed import LocalMiniLMEmbedder
from salience.safety.classifier import SENTENCE_SPLIT_CHARS
from salience.safety.detect import RuleBasedDetector, SafetyDetector
from salience.safety.hybrid import HybridDetector

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo10.json"


def turns(path: Path) -> list[str]:
    """Every turn as the LoCoMo benchmark imports it (a shared photo's caption included)."""
    return [turn.text for conversation in load_conversations(path) for turn in conversation.turns if turn.text]


async def flagged(detector: SafetyDetector, texts: list[str], label: str) -> list[tuple[str, str]]:
    """(text, strongest category) of every flagged text."""
    hits = []
    for text in track(texts, description=label):
        flags = await detector.detect(text)
        if flags:
            hits.append((text, flags[0].category))
    return hits


def row(name: str, texts: list[str], hits: list[tuple[str, str]]) -> str:
    long = [t for t in texts if len(t) > SENTENCE_SPLIT_CHARS]
    long_hits = [h for h in hits if len(h[0]) > SENTENCE_SPLIT_CHARS]
    categories = ", ".join(f"{c} {n}" for c, n in Counter(c for _, c in hits).most_common())
    return (f"| {name} | {len(hits)} / {len(texts)} | {len(hits) / len(texts):.4f} | "
            f"{len(long_hits)} / {len(long)} | {categories or '-'} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "safety_ordinary_chat.md")
    args = parser.parse_args()
    texts = turns(args.data)
    embedder = LocalMiniLMEmbedder(query_cache=0)
    embedder.load()
    rows = [row("rules only", texts, await flagged(RuleBasedDetector(), texts, "rules")),
            row("rules + classifier (shipped)", texts, await flagged(HybridDetector(embedder), texts, "hybrid"))]
    report = "\n".join([
        "# False alarms on ordinary conversation (LoCoMo)", "",
        f"`bench/safety/ordinary_chat.py`: every turn of the {len(load_conversations(args.data))} LoCoMo "
        f"conversations, none of them a crisis. Python {platform.python_version()}, embedder runtime "
        f"{embedder.runtime}. Not a blind measure of the shipped classifier: the registers of "
        "`training_chat_2.yaml` were chosen from this benchmark's false alarms (docs/safety.md); "
        "`tests/safety/corpus_ordinary_chat.yaml` is the blind one.", "",
        "| detector | turns flagged | false-alarm rate | of them over 200 characters | strongest category |",
        "|---|---|---:|---|---|",
        *rows, "",
    ])
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    asyncio.run(main())
