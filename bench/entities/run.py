"""Entities and the arc on LoCoMo, offline: what import produces without an LLM, and how fast.

    PYTHONPATH=src python bench/entities/run.py --data ../shared/data/locomo/locomo10.json

Writes bench/results/entities.json and bench/results/entities.md. Method in bench/entities/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gender_guesser.detector as gender_detector

from salience.eval.locomo import import_payload
from salience.eval.locomo_data import Conversation, load_conversations
from salience.memory.arc import compute_arc, message_signals
from salience.memory.embed import LocalMiniLMEmbedder
from salience.memory.entities import NOT_NAMES, EntityResolver, MemoryText, same_name
from salience.memory.extract import SelfDisclosureExtractor
from salience.memory.importer import ImportRequest, import_sessions
from salience.model import Entity, Message, UserRef
from salience.safety.detect import RuleBasedDetector
from salience.safety.redact import WithoutDisclosures
from salience.store.sqlite import SQLiteStore
from salience.worker import ExtractionWorker

ANSWERABLE = (1, 2, 3, 4)
CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
CALENDAR = {"May", "June", "July", "August", "April", "March", "January", "February", "September", "October",
            "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}


def gold_person_names(conversation: Conversation, names: gender_detector.Detector) -> set[str]:
    """Capitalised words of the category 1-4 answers that the gender-guesser first-name
    dictionary knows (any gender), that never occur in lower case in the conversation (that
    drops "Summer", "Do", "In") and that are neither calendar words nor the two speakers (or
    their nicknames: "Mel")."""
    lower_words = {w for turn in conversation.turns for w in re.findall(r"\b[a-z]+\b", turn.text)}
    speakers = (conversation.speaker_a, conversation.speaker_b)
    found: set[str] = set()
    for question in conversation.questions:
        if question.category not in ANSWERABLE:
            continue
        for word in CAPITALISED.findall(question.answer):
            if word in CALENDAR or word in NOT_NAMES or word.lower() in lower_words:
                continue
            if any(same_name(word, speaker) for speaker in speakers):
                continue
            if names.get_gender(word) != "unknown":
                found.add(word)
    return found


def entity_has_name(entities: list[Entity], name: str) -> bool:
    wanted = name.lower()
    return any(
        wanted in {alias.lower() for alias in (e.name, *e.aliases)} | {alias.split()[0].lower() for alias in (e.name, *e.aliases) if alias}
        for e in entities
    )


def messages_of(conversation: Conversation) -> list[list[Message]]:
    sessions: dict[int, list[Message]] = {}
    for turn in conversation.turns:
        sessions.setdefault(turn.session, []).append(Message(
            id=turn.dia_id, role="user" if turn.speaker == conversation.speaker_a else "assistant",
            content=turn.text, created_at=turn.at, session_id=f"session_{turn.session}", name=turn.speaker,
        ))
    return [sessions[n] for n in sorted(sessions)]


async def extraction_throughput(conversations: list[Conversation]) -> dict[str, Any]:
    """The offline extraction alone (sentences, kinds, dates, importance, entity resolution,
    arc signals): no embedding, no store."""
    extractor = SelfDisclosureExtractor()
    detector = RuleBasedDetector()
    await extractor.extract(messages_of(conversations[0])[0])  # warm pysbd and VADER
    count = 0
    started = time.perf_counter()
    for conversation in conversations:
        resolver = EntityResolver(UserRef("bench", conversation.sample_id), [], {conversation.speaker_a, conversation.speaker_b})
        for session in messages_of(conversation):
            count += len(session)
            by_id = {m.id: m for m in session}
            for n, candidate in enumerate(await extractor.extract(session)):
                source = by_id[candidate.sources[0]]
                resolver.link_memory(MemoryText(f"{source.id}:{n}", candidate.text, candidate.speaker, source.role == "user", candidate.created_at))
            message_signals(session, {}, lambda text: bool(detector.detect_sync(text)))
    seconds = time.perf_counter() - started
    return {"messages": count, "seconds": round(seconds, 2), "messages_per_second": round(count / seconds, 1)}


async def run(data: Path, limit: int | None) -> dict[str, Any]:
    conversations = load_conversations(data)[:limit]
    names = gender_detector.Detector(case_sensitive=True)
    embedder = LocalMiniLMEmbedder()
    embedder.load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(f"sqlite:///{tmp}/bench.db")
        await store.open()
        worker = ExtractionWorker(store, WithoutDisclosures(SelfDisclosureExtractor()), embedder)
        import_seconds = 0.0
        for conversation in conversations:
            user = UserRef("bench", conversation.sample_id)
            request = ImportRequest.model_validate(import_payload(conversation))
            started = time.perf_counter()
            result = await import_sessions(store, worker, user, request.sessions)
            import_seconds += time.perf_counter() - started
            entities = await store.load_entities(user)
            arc = compute_arc(await store.load_message_signals(user), entities)
            gold = gold_person_names(conversation, names)
            present = sorted(n for n in gold if entity_has_name(entities, n))
            rows.append({
                "conversation": conversation.sample_id,
                "messages": result.messages,
                "sessions": result.sessions,
                "memories": result.memories_added,
                "entities": len(entities),
                "entities_by_type": dict(Counter(e.type for e in entities)),
                "entities_with_relation": sum(1 for e in entities if e.relation),
                "gold_person_names": sorted(gold),
                "gold_names_as_entities": present,
                "arc_sessions": len(arc.sessions),
                "mood_trend": arc.mood_trend,
                "recurring_themes": [{"label": t.label, "sessions": t.sessions} for t in arc.recurring_themes],
                "largest_entities": [
                    {"name": e.name, "type": e.type, "relation": e.relation, "aliases": e.aliases[:5], "memories": len(e.memory_ids)}
                    for e in sorted(entities, key=lambda e: -len(e.memory_ids))[:5]
                ],
            })
        await store.close()
    total_messages = sum(r["messages"] for r in rows)
    gold_total = sum(len(r["gold_person_names"]) for r in rows)
    present_total = sum(len(r["gold_names_as_entities"]) for r in rows)
    return {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "conversations": len(rows),
        "entities_per_conversation": round(sum(r["entities"] for r in rows) / len(rows), 1),
        "person_entities_per_conversation": round(sum(r["entities_by_type"].get("person", 0) for r in rows) / len(rows), 1),
        "gold_person_names": gold_total,
        "gold_person_names_as_entities": present_total,
        "gold_person_name_share": round(present_total / gold_total, 3) if gold_total else None,
        "extraction_offline": await extraction_throughput(conversations),
        "import_with_embedding": {
            "messages": total_messages, "seconds": round(import_seconds, 1),
            "messages_per_second": round(total_messages / import_seconds, 1),
        },
        "per_conversation": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Entities and arc on LoCoMo (offline, no LLM)",
        "",
        f"{result['date']}, {result['machine']['platform']}, Python {result['machine']['python']}. "
        "Method: [bench/entities/README.md](../entities/README.md).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| conversations | {result['conversations']} |",
        f"| entities per conversation (all types) | {result['entities_per_conversation']} |",
        f"| person entities per conversation | {result['person_entities_per_conversation']} |",
        f"| gold-answer person names present as entities | {result['gold_person_names_as_entities']} / {result['gold_person_names']}"
        f" = {result['gold_person_name_share']} |",
        f"| offline extraction throughput (sentences, kinds, dates, importance, entities, arc signals) | "
        f"{result['extraction_offline']['messages_per_second']} messages/s |",
        f"| import throughput with MiniLM embedding and SQLite commits | {result['import_with_embedding']['messages_per_second']} messages/s |",
        "",
        "| conversation | messages | sessions | memories | entities | person / pet / place / org / condition | gold names as entities | mood trend | top recurring themes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["per_conversation"]:
        types = r["entities_by_type"]
        split = " / ".join(str(types.get(t, 0)) for t in ("person", "pet", "place", "organisation", "condition"))
        themes = "; ".join(f"{t['label']} ({t['sessions']})" for t in r["recurring_themes"][:3])
        missing = sorted(set(r["gold_person_names"]) - set(r["gold_names_as_entities"]))
        names = f"{len(r['gold_names_as_entities'])}/{len(r['gold_person_names'])}" + (f" (missing: {', '.join(missing)})" if missing else "")
        lines.append(
            f"| {r['conversation']} | {r['messages']} | {r['sessions']} | {r['memories']} | {r['entities']} | {split} | {names} | {r['mood_trend']} | {themes} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/locomo/locomo10.json"))
    parser.add_argument("--conversations", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    result = asyncio.run(run(args.data, args.conversations))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "entities.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "entities.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
