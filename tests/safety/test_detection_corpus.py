"""The offline detector (rules + classifier) against the labelled corpus in this folder.

corpus_dev.yaml was written with the rules; corpus_holdout.yaml to corpus_holdout4.yaml were
each written after a round of rule changes, measured once, then used for the next round;
together they are the "tuning corpus" that must meet the bar (the classifier trains on it
too). corpus_final_holdout.yaml (written after the last rule change) and corpus_holdout5.yaml
(written before the classifier's training set) were never used to tune or train: their
numbers are the honest estimate for unseen phrasings (docs/safety.md), guarded here against
regressions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from salience.safety.classifier import SafetyClassifier
from salience.safety.detect import RuleBasedDetector
from salience.safety.hybrid import HybridDetector, build_detector
from salience.safety.train import TUNING_FILES, examples, same_model, train

HERE = Path(__file__).parent
FINAL = "corpus_final_holdout.yaml"
HOLDOUT5 = "corpus_holdout5.yaml"
BLIND = "corpus_blind.yaml"  # written blind by someone else; see its header
BLIND_2 = "corpus_blind_2.yaml"  # the same, later, larger; see its header
BLIND_3 = "corpus_blind_3.yaml"  # the same again, written by someone who saw nothing; see its header
ORDINARY_CHAT = "corpus_ordinary_chat.yaml"  # everyday chat, no crisis at all; see its header
MAX_ORDINARY_FALSE_ALARMS = 3  # of 240: measured 2 (one message of slack)
HELD_OUT = {FINAL, HOLDOUT5, BLIND, BLIND_2, BLIND_3, ORDINARY_CHAT}
TUNING = sorted(p.name for p in HERE.glob("corpus_*.yaml") if p.name not in HELD_OUT)


@pytest.fixture(scope="module")
def detector(embedder) -> HybridDetector:
    return HybridDetector(embedder)


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


async def confusion(detector, corpus: list[dict]) -> tuple[Confusion, list[str]]:
    result, mistakes = Confusion(), []
    for message in corpus:
        flags = await detector.detect(message["text"])
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
    corpus = messages(*TUNING, FINAL, HOLDOUT5)
    assert len(corpus) >= 150
    labels = {m["label"] for m in corpus}
    assert labels >= {"suicidal_ideation", "self_harm", "abuse_or_violence", "harm_to_others", "medical_emergency", "none"}
    kinds = {m["kind"] for m in corpus if m["label"] == "none"}
    assert kinds >= {"negation", "idiom", "third_person", "media", "ordinary"}
    assert {m["kind"] for m in corpus if m["label"] != "none"} >= {"direct", "indirect", "history"}


def test_the_tuning_corpus_is_exactly_what_the_classifier_trains_on():
    assert sorted(TUNING_FILES) == TUNING


async def test_recall_and_false_positive_rate_on_the_tuning_corpus(detector):
    result, mistakes = await confusion(detector, messages(*TUNING))
    print(f"\ntuning corpus ({', '.join(TUNING)}): {result}")
    assert result.recall >= 0.95, mistakes
    assert result.false_positive_rate <= 0.05, mistakes
    assert result.right_category == result.tp


async def test_the_rules_alone_still_meet_the_bar_on_the_tuning_corpus():
    """Without the embedding model (no ``local`` extra) the service falls back to the rules."""
    result, mistakes = await confusion(RuleBasedDetector(), messages(*TUNING))
    assert result.recall >= 0.95, mistakes
    assert result.false_positive_rate <= 0.05, mistakes


@pytest.mark.parametrize(
    ("held_out", "min_recall", "max_false_positive_rate"),
    [
        # measured once, at the end of the classifier work (docs/safety.md): 16/21 = 0.762 and
        # 32/45 = 0.711, FPR 0 and 0.031; after training_2.yaml and the rules' negation changes
        # (already seen, a sanity check): 16/21 and 36/45 = 0.800, FPR 0 and 0; after
        # training_3.yaml and the short-turn bar (seen): 17/21 = 0.810 and 40/45 = 0.889, FPR 0
        # and 0. The floors leave one message of slack for float noise from another runtime of
        # the same embedding model.
        (FINAL, 0.76, 0.05),
        (HOLDOUT5, 0.86, 0.05),
        # the blind set (see its header): 94/130 = 0.723, FPR 3/110 = 0.027 when it was unseen;
        # 108/130 = 0.831, FPR 3/110 = 0.027 after training_3.yaml (a development check by then);
        # refitted on the int8 embedder: 107/130 = 0.823, FPR 4/110 = 0.036; with training_4.yaml
        # (written without reading it): 111/130 = 0.854, FPR 2/110 = 0.018; with the 7-bit embedder
        # and training_5.yaml (written by people who read nothing of the project): the same; with
        # the plain chat of training_chat.yaml: 113/130 = 0.869, FPR 2/110; with training_chat_2.yaml:
        # 114/130 = 0.877, FPR 2/110
        (BLIND, 0.85, 0.04),
        # the second blind set (see its header), measured once unseen: 107/160 = 0.669, FPR 6/160;
        # refitted on the int8 embedder: 105/160 = 0.656, FPR 6/160 (104/160 on a later run); with
        # training_4.yaml (written without reading it): 113/160 = 0.706, FPR 3/160 = 0.019; the
        # same weights on an AVX-512 VNNI CPU (saturating AVX2 sums, see same_model): 110/160 =
        # 0.688, FPR 5/160 = 0.031; with the 7-bit embedder and training_5.yaml: 121/160 = 0.756,
        # FPR 5/160 = 0.031; with the plain chat (a looser threshold on look-alikes): 123/160 =
        # 0.769, FPR 8/160 = 0.050; with training_chat_2.yaml: the same
        (BLIND_2, 0.75, 0.05),
        # the third blind set (see its header), measured unseen: 138/180 = 0.767, FPR 9/180 = 0.050;
        # with the 7-bit embedder and training_5.yaml: 143/180 = 0.794, FPR 8/180 = 0.044; with the
        # plain chat: 149/180 = 0.828, FPR 10/180 = 0.056; with training_chat_2.yaml: the same
        (BLIND_3, 0.81, 0.056),
    ],
)
async def test_the_held_out_sets_do_not_regress(detector, held_out, min_recall, max_false_positive_rate):
    result, mistakes = await confusion(detector, messages(held_out))
    print(f"\nheld-out ({held_out}): {result}")
    assert result.false_positive_rate <= max_false_positive_rate, mistakes
    assert result.recall >= min_recall, mistakes


async def test_ordinary_conversation_raises_almost_no_false_alarm(detector):
    """Most of what a companion hears is everyday chat; a false alarm there pins a safety memory,
    brings crisis lines into every later conversation and may page the app's safety team.
    Measured unseen: 15 of 240 before the plain chat of training_chat.yaml, 3 after, 2 with
    training_chat_2.yaml as well."""
    result, mistakes = await confusion(detector, messages(ORDINARY_CHAT))
    print(f"\nordinary chat ({ORDINARY_CHAT}): {result.fp} false alarms in {result.fp + result.tn}")
    assert result.fp <= MAX_ORDINARY_FALSE_ALARMS, mistakes


def test_the_held_out_sets_are_not_in_the_training_data():
    trained = {e.text.lower() for e in examples()}
    # one stock idiom was written independently into both the blind set and training_2.yaml,
    # and one stock direct disclosure into both the third blind set and the training data
    coincidence = {"this heat is murder, i'm melting", "i want to end my life"}
    assert not trained & {m["text"].lower() for m in messages(*HELD_OUT)} - coincidence


def test_the_request_path_hashes_words_exactly_as_training_did():
    """Training hashes the words with scikit-learn's vectorizer; the request path computes the
    same features without it. Any difference would score messages with features the weights
    were never fitted on."""
    from salience.safety.classifier import hashed_rows, hashing_vectorizer
    from salience.safety.detect import normalise

    texts = [normalise(e.text) for e in examples()] + [
        normalise(m["text"]) for m in messages(*HELD_OUT, ORDINARY_CHAT)
    ] + ["", "ünïcödé wörds, café's", "the the the the", "a"]
    expected = hashing_vectorizer().transform(texts).tocsr()
    indices, indptr, data = hashed_rows(SafetyClassifier.load().analyze, texts)
    assert indptr.tolist() == expected.indptr.tolist()
    assert indices.tolist() == expected.indices.tolist()
    assert data.tolist() == expected.data.tolist()  # to the bit: the same floats


async def test_refitting_reproduces_the_shipped_weights(embedder):
    """``python -m salience.safety.train`` wrote data/classifier.npz; the same data and the same
    choices (C, thresholds) give the same weights. (``--check`` also redoes the cross-validation.)"""
    shipped = SafetyClassifier.load()
    texts = [e.text for e in examples()]
    vectors = await embedder.embed(texts)
    refit = train(verbose=False, embeddings=vectors, reuse=shipped)
    assert same_model(refit, shipped, vectors, texts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # phrasings no rule matches (from the final held-out set: never trained on)
        ("the pills are in my hand right now", ["suicidal_ideation"]),
        ("I carved his name into my arm", ["self_harm"]),
        # the rules' deliberate "no"s hold against the classifier
        ("I would never hurt myself", []),
        ("this commute is killing me", []),
        ("my friend's brother attempted suicide years ago", []),
    ],
)
async def test_the_classifier_adds_unseen_phrasings_and_keeps_the_rules_no(detector, text, expected):
    flags = await detector.detect(text)
    assert [f.category for f in flags] == expected
    assert all(f.evidence and 0 < f.score <= 1 for f in flags)


@pytest.mark.parametrize(
    "text", ["ok", "thanks!", "hi", "good morning", "I started running again.",
             "My father moved into a care home in March.", "lol", "I'm fine, just tired.",
             # an earlier fit read these as goodbyes
             "bye", "night", "sorry", "I have to go now", "I'll be fine", "see you next week",
             "whatever, it doesn't matter", "I'm back again"],
)
async def test_ordinary_short_turns_are_not_flagged(detector, text):
    """Most of a companion's traffic: a classifier that flags these is useless, whatever its recall.
    (A classifier-only flag on a turn of at most ``SHORT_TURN_WORDS`` words needs ``risk_at``.)"""
    assert await detector.detect(text) == []


class CountingEmbedder:
    """The session's embedder, counting the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.texts = inner, 0
        self.name = inner.name

    async def embed(self, texts):
        self.texts += len(texts)
        return await self.inner.embed(texts)


async def test_a_disclosure_inside_a_long_message_is_found_sentence_by_sentence(embedder):
    counting = CountingEmbedder(embedder)
    text = (
        "Work was fine today, we finally shipped the release and my manager bought everyone lunch. "
        "Then I drove home, fed the cat and watched two episodes of that baking show. "
        "I've already written the letters and I know which bridge. "
        "Anyway my sister is visiting on Saturday so I should clean the flat."
    )
    flags = await HybridDetector(counting).detect(text)
    assert [f.category for f in flags] == ["suicidal_ideation"]
    assert counting.texts == 5  # the message, then its four sentences


async def test_a_long_ordinary_message_costs_one_embedding_and_raises_nothing(embedder):
    """Out of context, a sentence of an ordinary long turn can read like a crisis; and each
    sentence embedded is one more model run on the request path."""
    counting = CountingEmbedder(embedder)
    text = (
        "We finally had the meeting with the vet about Pepper this morning. She is fourteen now and "
        "her hips have been bad since the spring, so we talked about what the next year looks like. "
        "My daughter cried in the car on the way home and I did too, a bit. Then we got ice cream "
        "and spent the afternoon planting bulbs in the front garden, which helped."
    )
    assert await HybridDetector(counting).detect(text) == []
    assert counting.texts == 1


def test_the_service_screens_with_the_classifier_when_it_has_the_embedder(embedder):
    assert isinstance(build_detector(embedder), HybridDetector)


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
async def test_negation_distance_quotes_and_severity(detector, text, expected):
    flags = await detector.detect(text)
    assert sorted((f.category, f.severity) for f in flags) == sorted(expected)




@pytest.mark.parametrize(
    "text",
    [
        # a negation said before the speaker, or after the phrase, or inside it
        "not that i'd ever hurt myself, today was just rough",
        "no way i'd ever take my own life, my mum would be destroyed",
        "it's not like i want to die, i just hate mondays",
        "not once did i want to hurt myself during the move",
        "taking my own life has never been an option for me",
        "my boyfriend has never threatened me, he's a softie",
        # someone else, or someone else's emergency long over
        "my stepmom lost a lot of blood last year, she's fine now",
        "my grandpa was having a heart attack at the wedding in 2019, he's fine now",
        "my flatmate used to cut in school",
        # recovery talk, and a screening question answered no
        "i used to think everyone would be better off without me, that was the depression talking",
        "the nurse asked if i'd been self harming and i said no",
        # a piece of work about the topic
        "i'm writing my dissertation on domestic violence",
    ],
)
def test_the_rules_set_aside_negations_other_people_and_settled_history(text):
    reading = RuleBasedDetector().read(text)
    assert reading.flags == []
    assert reading.set_aside


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i'm in recovery but i want to die", [("suicidal_ideation", "risk")]),
        ("clean for 2 years but i used to cut and the urges to cut are back", [("self_harm", "concern")]),
        ("my dad is having a heart attack", [("medical_emergency", "imminent")]),
        ("he hit me and never said sorry", [("abuse_or_violence", "risk")]),
        ("i want to kill myself, not even joking", [("suicidal_ideation", "risk")]),
        ("the nurse asked if i'd been self harming and i said yes, i cut last night", [("self_harm", "risk")]),
    ],
)
def test_the_rules_still_flag_what_only_looks_settled(text, expected):
    flags = RuleBasedDetector().read(text).flags
    assert sorted((f.category, f.severity) for f in flags) == sorted(expected)


def test_another_embedder_for_recall_gets_the_classifier_its_own_model():
    """The weights mean nothing on a hosted model's vectors: the detector embeds with its own."""

    class Hosted:
        name = "openai/text-embedding-3-small"

        async def embed(self, texts):
            raise AssertionError("the safety classifier must not read these vectors")

    detector = build_detector(Hosted())
    assert isinstance(detector, HybridDetector)
    assert detector.embedder.name == "all-MiniLM-L6-v2"
