"""The salience engine's pure parts: importance, decay with reinforcement, dates, honesty."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from salience.memory.confidence import named_confidence, refers_to_past, unnamed_confidence
from salience.memory.dates import resolve_relative_dates
from salience.memory.importance import estimate_importance
from salience.memory.salience import retention, salience, salience_array, stability_days

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
HALF_LIFE = 30.0

DISCLOSURES = [
    "My sister Sarah was just diagnosed with breast cancer.",
    "My dad passed away in March.",
    "I lost my job last week and I don't know how to pay rent.",
    "My husband and I are getting divorced.",
    "I'm terrified of the biopsy results.",
]
INCIDENTAL = [
    "I had coffee and toast for breakfast.",
    "It was sunny and warm today.",
    "The traffic on my commute was slow.",
    "I watched some TV before bed.",
]


def test_every_load_bearing_disclosure_outranks_every_incidental_remark():
    assert min(estimate_importance(t) for t in DISCLOSURES) > max(estimate_importance(t) for t in INCIDENTAL) + 0.3
    assert estimate_importance("My dad passed away in March.") > estimate_importance("I started a pottery class.")
    assert all(0 <= estimate_importance(t) <= 1 for t in DISCLOSURES + INCIDENTAL)


def test_retention_falls_monotonically_with_time():
    values = [retention(0.5, T0, None, 0, T0 + timedelta(days=d), HALF_LIFE) for d in range(0, 1000, 7)]
    assert values[0] == 1.0
    assert all(later < earlier for earlier, later in zip(values, values[1:]))


def test_important_and_reinforced_memories_fade_slower():
    later = T0 + timedelta(days=120)
    assert retention(0.9, T0, None, 0, later, HALF_LIFE) > retention(0.2, T0, None, 0, later, HALF_LIFE)
    assert retention(0.5, T0, None, 5, later, HALF_LIFE) > retention(0.5, T0, None, 0, later, HALF_LIFE)
    assert stability_days(0.5, 3, HALF_LIFE) > stability_days(0.5, 2, HALF_LIFE) > stability_days(0.4, 2, HALF_LIFE)


def test_a_disclosure_that_keeps_coming_back_stays_strong_for_months_and_a_remark_once_fades():
    # the diagnosis came up in eight sessions over two months, then four months of silence
    last_mention = T0 + timedelta(days=60)
    strong = salience(0.95, T0, last_mention, 7, last_mention + timedelta(days=120), HALF_LIFE)
    assert strong > 0.85
    remark = salience(0.15, T0, None, 0, T0 + timedelta(days=3 * 365), HALF_LIFE)
    assert remark < 0.001
    assert salience(0.15, T0, None, 0, T0 + timedelta(days=3 * 365), HALF_LIFE, pinned=True) > 0.3


def test_the_array_form_agrees_with_the_pure_function():
    importance = np.array([0.1, 0.5, 0.9])
    anchors = np.array([T0.timestamp()] * 3)
    reinforcements = np.array([0.0, 2.0, 5.0])
    now = T0 + timedelta(days=45)
    vector = salience_array(importance, anchors, reinforcements, now.timestamp(), HALF_LIFE, np.zeros(3, bool))
    scalar = [salience(i, T0, None, int(r), now, HALF_LIFE) for i, r in zip(importance, reinforcements)]
    np.testing.assert_allclose(vector, scalar)


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("I went to a support group yesterday", "yesterday (7 May 2023)"),
        ("I ran a charity race last Saturday", "last Saturday (6 May 2023)"),
        ("We moved here two years ago", "two years ago (2021)"),
        ("I start the new job next month", "next month (June 2023)"),
        ("I painted that last year", "last year (2022)"),
    ],
)
def test_relative_dates_are_resolved_against_when_they_were_said(said, expected):
    assert expected in resolve_relative_dates(said, datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc))


def test_references_to_the_past_are_recognised():
    for turn in ("Do you remember when I told you about my trip?", "Like I said last time, I'm tired.",
                 "Did I ever mention my brother?"):
        assert refers_to_past(turn)
    assert not refers_to_past("What should I cook tonight?")


def test_confidence_is_monotone_and_crosses_found_at_its_midpoint():
    assert unnamed_confidence(0.1) < 0.5 < unnamed_confidence(0.6)
    assert named_confidence([0.6], [0.3]) > 0.5 > named_confidence([0.3], [0.6])
    assert named_confidence([0.6, 0.5, 0.5], []) > 0.5 > named_confidence([], [0.6])
