"""Splitting a message into sentences: one sentence is known without asking pysbd, and the
result is pysbd's either way."""

from __future__ import annotations

import pysbd
import pytest

from salience.memory.sentences import split_sentences

TEXTS = [
    "I visited my sister at the hospital on day 5 and she looked much better.",
    "we got a puppy",
    "Can you believe it?!",
    "I don't know anymore...",
    "  My dad, who's 70, ran the half-marathon in 2:05 — can you believe that  ",
    "Dr. Smith said the scan was clear.",
    "It cost $3.50 at the market. Then we went home.",
    "I moved to the U.S. in 2019 and loved it!",
    "First line\nsecond line",
    "She said \"no\" and left. I stayed.",
    "Wow! That is great news. Tell me more?",
    "I feel like I'm drowning (not literally) in work",
    "",
    "   ",
]


def pysbd_sentences(text: str) -> list[str]:
    return [s.strip() for s in pysbd.Segmenter(language="en", clean=False).segment(text) if s.strip()]


@pytest.mark.parametrize("text", TEXTS)
def test_sentences_are_pysbds(text: str):
    assert split_sentences(text) == pysbd_sentences(text)


def test_a_one_sentence_turn_is_one_sentence_and_others_are_split():
    assert split_sentences("we got a puppy") == ["we got a puppy"]
    assert split_sentences("Wow! That is great news. Tell me more?") == ["Wow!", "That is great news.", "Tell me more?"]
