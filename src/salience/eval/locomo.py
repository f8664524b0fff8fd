"""The LoCoMo recall benchmark: salience against three baselines, measured in one run.

Each conversation is imported through the public API with its real session dates
(speaker_a as the user, speaker_b as the assistant, both named, message ids = dia_ids).
Every question is then recalled at ``budget`` tokens as of the day after the last
session, and scored by what reached the injected context:

- answer-token recall: share of the gold answer's content words present in the context;
- evidence recall: share of the question's evidence dia_ids among the injected items' sources;
- tokens used, and recall latency (p50/p95) through the API;
- for adversarial questions (category 5): how often ``found`` is false.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from salience.eval.baselines import BM25Baseline, LastTokensBaseline, Packed, VectorBaseline
from salience.eval.locomo_data import Conversation, load_conversations  # noqa: F401 (re-exported for the CLI)
from salience.eval.metrics import answer_token_recall, evidence_recall
from salience.memory.embed import Embedder, LocalMiniLMEmbedder
from salience.settings import Config, MemorySettings, ServerSettings, TenantSettings, UpstreamSettings

ANSWERABLE = (1, 2, 3, 4)
SCORED = (1, 2, 4)  # the categories the targets are stated over
SYSTEMS = ("salience", "last-N tokens", "BM25 top-k", "MiniLM top-k")
BENCH_KEY = "sk-bench-locomo-key"


@dataclass
class Outcome:
    system: str
    category: int
    answer_recall: float
    evidence_recall: float
    tokens: int
    latency_ms: float | None = None
    found: bool | None = None
    confidence: float | None = None


@dataclass
class Run:
    budget: int
    outcomes: list[Outcome] = field(default_factory=list)
    conversations: int = 0
    questions: int = 0
    import_seconds: float = 0.0
    memories: int = 0


def import_payload(conversation: Conversation) -> dict[str, Any]:
    sessions: dict[int, dict[str, Any]] = {}
    for turn in conversation.turns:
        session = sessions.setdefault(
            turn.session, {"id": f"session_{turn.session}", "started_at": turn.at.isoformat(), "messages": []}
        )
        session["messages"].append({
            "id": turn.dia_id,
            "role": "user" if turn.speaker == conversation.speaker_a else "assistant",
            "name": turn.speaker,
            "content": turn.text,
            "timestamp": turn.at.isoformat(),
        })
    return {"sessions": list(sessions.values())}


def bench_config(data_dir: Path) -> Config:
    tenant = TenantSettings(
        id="bench", api_keys=[BENCH_KEY], upstream=UpstreamSettings(transport="echo"), memory=MemorySettings()
    )
    return Config(directory=data_dir, server=ServerSettings(data_dir=data_dir), tenants={"bench": tenant})


async def run_locomo(
    data_path: Path,
    budgets: list[int],
    work_dir: Path,
    limit: int | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[Run]:
    """Import every conversation, then score every question for salience and the baselines."""
    from salience.app import create_app
    from salience.services import Services

    conversations = load_conversations(data_path)[:limit]
    embedder = embedder or LocalMiniLMEmbedder()
    config = bench_config(work_dir)
    services = Services.build(config, embedder=embedder)
    app = create_app(config, services, run_worker=False)
    runs = [Run(budget) for budget in budgets]
    notify = progress or (lambda stage, n: None)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"authorization": f"Bearer {BENCH_KEY}"}, timeout=None) as http:
            for conversation in conversations:
                user = conversation.sample_id
                started = time.perf_counter()
                response = await http.post(f"/v1/users/{user}/import", json=import_payload(conversation))
                response.raise_for_status()
                imported = response.json()
                import_seconds = time.perf_counter() - started
                baselines = (
                    LastTokensBaseline(conversation),
                    BM25Baseline(conversation),
                    await VectorBaseline.build(conversation, services.embedder),
                )
                at = (conversation.last_session_at + timedelta(days=1)).isoformat()
                for run in runs:
                    run.conversations += 1
                    run.import_seconds += import_seconds
                    run.memories += imported["memories_added"]
                    for question in conversation.questions:
                        run.questions += 1
                        run.outcomes.extend(
                            await score_question(http, user, question, run.budget, at, baselines)
                        )
                        notify("question", 1)
                notify("conversation", 1)
    return runs


async def score_question(http, user, question, budget, at, baselines) -> list[Outcome]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    response = await http.post(
        f"/v1/users/{user}/recall", json={"query": question.question, "budget_tokens": budget, "at": at}
    )
    latency = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    recalled = response.json()
    sources = [s for item in recalled["items"] for s in item["sources"]]
    outcomes = [
        Outcome("salience", question.category, answer_token_recall(question.answer, recalled["context"]),
                evidence_recall(question.evidence, sources), recalled["tokens"], latency, recalled["found"],
                recalled["confidence"])
    ]
    last, bm25, vector = baselines
    packs: list[tuple[str, Packed]] = [
        ("last-N tokens", last.recall(question.question, budget)),
        ("BM25 top-k", bm25.recall(question.question, budget)),
        ("MiniLM top-k", await vector.recall_async(question.question, budget)),
    ]
    for name, packed in packs:
        outcomes.append(Outcome(name, question.category, answer_token_recall(question.answer, packed.context),
                                evidence_recall(question.evidence, packed.sources), packed.tokens))
    return outcomes


def summarise(run: Run) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in run.outcomes:
        groups[(o.system, str(o.category))].append(o)
        if o.category in SCORED:
            groups[(o.system, "1,2,4")].append(o)
    table: dict[str, dict[str, Any]] = {}
    for (system, category), outcomes in sorted(groups.items()):
        row = {
            "questions": len(outcomes),
            "answer_token_recall": round(statistics.mean(o.answer_recall for o in outcomes), 4),
            "evidence_recall": round(statistics.mean(o.evidence_recall for o in outcomes), 4),
            "mean_tokens": round(statistics.mean(o.tokens for o in outcomes), 1),
        }
        latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None]
        if latencies:
            row["latency_ms_p50"] = round(float(np.percentile(latencies, 50)), 2)
            row["latency_ms_p95"] = round(float(np.percentile(latencies, 95)), 2)
        found = [o.found for o in outcomes if o.found is not None]
        if found:
            row["found_true_share"] = round(sum(found) / len(found), 4)
        table.setdefault(system, {})[category] = row
    salience_rows = [o for o in run.outcomes if o.system == "salience"]
    adversarial = [o for o in salience_rows if o.category == 5]
    answerable = [o for o in salience_rows if o.category in ANSWERABLE]
    best_baseline = max(table[s]["1,2,4"]["answer_token_recall"] for s in SYSTEMS[1:])
    return {
        "budget": run.budget,
        "conversations": run.conversations,
        "questions": run.questions,
        "memories": run.memories,
        "import_seconds": round(run.import_seconds, 1),
        "systems": table,
        "adversarial_found_false": round(sum(not o.found for o in adversarial) / len(adversarial), 4) if adversarial else None,
        "answerable_found_true": round(sum(bool(o.found) for o in answerable) / len(answerable), 4) if answerable else None,
        "salience_vs_best_baseline": round(table["salience"]["1,2,4"]["answer_token_recall"] / best_baseline, 3),
    }


def write_report(summaries: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"machine": {"cores": __import__("os").cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()}}
    json_path = out_dir / "locomo.json"
    json_path.write_text(json.dumps({**meta, "runs": summaries}, indent=2))
    lines = ["# LoCoMo recall benchmark", "", f"Machine: {meta['machine']['cores']} cores, Python {meta['machine']['python']}.", ""]
    for summary in summaries:
        lines += [f"## Budget {summary['budget']} tokens", "",
                  f"{summary['conversations']} conversations, {summary['questions']} questions, "
                  f"{summary['memories']} memories, import {summary['import_seconds']} s.", "",
                  "| system | category | questions | answer-token recall | evidence recall | mean tokens | p50 ms | p95 ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for system in SYSTEMS:
            for category, row in sorted(summary["systems"][system].items(), key=lambda kv: (len(kv[0]), kv[0])):
                if category == "5":
                    continue
                lines.append(
                    f"| {system} | {category} | {row['questions']} | {row['answer_token_recall']:.3f} | "
                    f"{row['evidence_recall']:.3f} | {row['mean_tokens']} | {row.get('latency_ms_p50', '')} | "
                    f"{row.get('latency_ms_p95', '')} |"
                )
        lines += ["", f"- salience / best baseline (answer-token recall, categories 1, 2, 4): "
                      f"**{summary['salience_vs_best_baseline']}x**",
                  f"- adversarial questions (category 5) with `found` false: **{summary['adversarial_found_false']}**",
                  f"- answerable questions (categories 1-4) with `found` true: **{summary['answerable_found_true']}**", ""]
    md_path = out_dir / "locomo.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path
