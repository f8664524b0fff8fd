"""Salience over time: how strongly a memory should still come to mind.

A pure function of (importance, created_at, last reinforced, reinforcement count, now)
with the tenant's half-life, modelled on spaced repetition: retention halves every
``stability`` days since the memory was last relevant, and stability grows with
importance and with every reinforcement (a later mention, or a recall the user engaged
with). Pinned memories never fade.

    stability = half_life * (0.25 + 2.75 * importance) * 1.6 ** min(reinforcements, 12)
    retention = 2 ** (-days_since_last_reinforced / stability)
    salience  = retention * (0.3 + 0.7 * importance)

With the default 30-day half-life: an incidental remark (importance 0.15) said once keeps
half its strength for about 20 days; a sister's diagnosis (0.95) about 86 days, and, once
it has come back in six sessions, about 3 years.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

REINFORCEMENT_GAIN = 1.6
MAX_COUNTED_REINFORCEMENTS = 12
SECONDS_PER_DAY = 86_400.0


def stability_days(importance, reinforcements, half_life_days: float):  # type: ignore[no-untyped-def]
    """Days for a memory's retention to halve (floats or numpy arrays alike)."""
    counted = np.clip(reinforcements, 0, MAX_COUNTED_REINFORCEMENTS)
    return half_life_days * (0.25 + 2.75 * importance) * REINFORCEMENT_GAIN**counted


def importance_weight(importance):  # type: ignore[no-untyped-def]
    """How much of its retention a memory's importance lets through."""
    return 0.3 + 0.7 * importance


def retention_array(
    importance: np.ndarray,
    anchor_timestamps: np.ndarray,
    reinforcements: np.ndarray,
    now_timestamp: float,
    half_life_days: float,
    pinned: np.ndarray,
) -> np.ndarray:
    """Retention of many memories at once (timestamps in seconds; anchor = last reinforced)."""
    days = np.maximum(0.0, (now_timestamp - anchor_timestamps) / SECONDS_PER_DAY)
    stability = stability_days(importance, reinforcements, half_life_days)
    return np.where(pinned, 1.0, np.power(2.0, -days / stability))


def salience_array(
    importance: np.ndarray,
    anchor_timestamps: np.ndarray,
    reinforcements: np.ndarray,
    now_timestamp: float,
    half_life_days: float,
    pinned: np.ndarray,
) -> np.ndarray:
    """``salience`` of many memories at once."""
    kept = retention_array(importance, anchor_timestamps, reinforcements, now_timestamp, half_life_days, pinned)
    return kept * importance_weight(importance)


def _one(value: float) -> np.ndarray:
    return np.array([value], dtype=np.float64)


def retention(
    importance: float,
    created_at: datetime,
    last_reinforced_at: datetime | None,
    reinforcements: int,
    now: datetime,
    half_life_days: float,
    pinned: bool = False,
) -> float:
    """In (0, 1]: 1 when just said or reinforced, halving every ``stability_days``."""
    anchor = max(created_at, last_reinforced_at or created_at)
    kept = retention_array(_one(importance), _one(anchor.timestamp()), _one(reinforcements), now.timestamp(),
                           half_life_days, np.array([pinned]))
    return float(kept[0])


def salience(
    importance: float,
    created_at: datetime,
    last_reinforced_at: datetime | None,
    reinforcements: int,
    now: datetime,
    half_life_days: float,
    pinned: bool = False,
) -> float:
    """In [0, 1]: how strongly the memory should come to mind now, regardless of the topic."""
    kept = retention(importance, created_at, last_reinforced_at, reinforcements, now, half_life_days, pinned)
    return kept * importance_weight(importance)
