"""Reading the LoCoMo benchmark (Maharana et al., ACL 2024) into plain records.

The data set is not shipped with salience: pass the path of ``locomo10.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SESSION_KEY = re.compile(r"^session_(\d+)$")


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    at: datetime
    date_label: str


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]

    @property
    def last_session_at(self) -> datetime:
        return max(turn.at for turn in self.turns)


def parse_session_time(label: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> an aware datetime (UTC: the data has no zone)."""
    return datetime.strptime(label.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)


def turn_text(raw: dict[str, Any]) -> str:
    text = raw.get("text", "").strip()
    if raw.get("blip_caption"):
        text = f"{text} [shares a photo: {raw['blip_caption']}]".strip()
    return text


def load_conversations(path: str | Path) -> list[Conversation]:
    samples = json.loads(Path(path).read_text())
    conversations = []
    for sample in samples:
        conv = sample["conversation"]
        turns: list[Turn] = []
        sessions = sorted(int(m.group(1)) for key in conv if (m := SESSION_KEY.match(key)))
        for number in sessions:
            label = conv.get(f"session_{number}_date_time")
            if not label or not conv.get(f"session_{number}"):
                continue
            started = parse_session_time(label)
            for index, raw in enumerate(conv[f"session_{number}"]):
                turns.append(
                    Turn(
                        dia_id=raw["dia_id"],
                        speaker=raw["speaker"],
                        text=turn_text(raw),
                        session=number,
                        at=started + timedelta(seconds=30 * index),
                        date_label=label,
                    )
                )
        questions = tuple(
            Question(
                question=q["question"],
                answer=str(q.get("answer", q.get("adversarial_answer", ""))),
                evidence=tuple(q.get("evidence", [])),
                category=int(q["category"]),
            )
            for q in sample["qa"]
        )
        conversations.append(
            Conversation(sample["sample_id"], conv["speaker_a"], conv["speaker_b"], tuple(turns), questions)
        )
    return conversations
