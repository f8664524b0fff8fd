"""salience as a gateway, side by side with the bare upstream and LiteLLM's own proxy, in one run.

Starts, all on 127.0.0.1:
  - a fake OpenAI-compatible upstream (fake_upstream.py: fixed delay, 50-chunk streams);
  - LiteLLM's proxy (`litellm --config`, pass-through to the same upstream), from its own
    virtualenv that this script creates once (bench/gateway/.venv-litellm, not a project
    dependency);
  - salience (`python -m salience serve`) with a SQLite store holding one user with 10,000
    memories and one with 100,000, extraction on;
  - a second salience, same store contents, extraction off (for the on/off comparison).

Then, interleaved in rounds so machine noise hits every system alike:
  - latency at concurrency 1, non-streamed and streamed (time to first token), for the
    upstream called directly (the floor) and through each gateway; added latency is the
    gateway's percentile minus the floor's percentile measured in the same run;
  - throughput (requests/s) at concurrency 1, 16 and 64, with each gateway process's CPU
    seconds per request, and its RSS;
  - response latency with extraction on against off, on turns the extractor mines.

Writes bench/results/gateway.json and gateway.md.

    python bench/gateway/run.py            # the full report (about 6 minutes on 2 cores)
    python bench/gateway/run.py --quick    # a smoke run (about 1-2 minutes, 10k pass only)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/, for processes.py

from processes import Service, free_port  # noqa: E402
API_KEY = "sk-bench-relay-0123456789"
LITELLM_TRANSPORT_KEY = "sk-bench-litellm-0123456789"
# LiteLLM's proxy refuses to start without a strong master key; requests carry it.
LITELLM_MASTER_KEY = "sk-bench-master-5f2a9c7e1b3d4a6f8e0c2b4d6f8a0c2e"
MODEL = "bench-model"
SYSTEM_PROMPT = "You are a warm, attentive companion. Keep answers short."
# Questions: recall does its full work, and the extractor keeps nothing from them, so the
# user's memory set stays as seeded while the gateways are compared. Each ends in "{n}?".
QUESTIONS = ["How is my sister doing, {n}?", "What did I do with my dad in week {n}?",
             "Do you remember the hospital visit, number {n}?", "What happened at the lake on day {n}?",
             "Who did I argue with in month {n}?", "What did I cook for my partner on day {n}?",
             "Can you tell me about Paris again, part {n}?"]
# Turns the extractor mines (first person, not questions): extraction does real work on them.
STATEMENTS = ["I visited my sister at the hospital on day {n} and she looked much better.",
              "I went hiking with my dad at the lake in week {n} and loved it.",
              "I argued with my boss after work on day {n} and I still feel awful about it.",
              "I cooked dinner for my partner on day {n} and we talked about moving to Paris."]
PEOPLE = ["my sister", "my brother", "my mom", "my dad", "my friend Alex", "my boss", "my partner", "my son"]
VERBS = ["visited", "called", "argued with", "went hiking with", "cooked dinner for", "worried about", "helped"]
PLACES = ["in the park", "at the hospital", "on the weekend", "after work", "at the lake", "in Paris", "last spring"]
console = Console(stderr=True)


# --- processes -------------------------------------------------------------------------------

def process_tree(pid: int) -> list[int]:
    """The process and all its descendants, from /proc (LiteLLM may run worker processes)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for current in process_tree(pid):
        try:
            with open(f"/proc/{current}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    total = 0
    for current in process_tree(pid):
        try:
            with open(f"/proc/{current}/status") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return round(total / 1024, 1)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALIENCE_")}
    env.update(HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", NO_COLOR="1", TOKENIZERS_PARALLELISM="false")
    return env


def litellm_venv(path: Path) -> Path:
    """LiteLLM's proxy in its own virtualenv, created on first use: never a project dependency."""
    binary = path / "bin" / "litellm"
    if binary.exists():
        return binary
    console.print(f"creating {path} with litellm[proxy] (once; a minute or two)")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True)
    return binary


# --- the store a salience starts with --------------------------------------------------------

async def seed_store(db: Path, sizes: list[int]) -> dict[str, float]:
    """One user per size, memories from templates embedded for real (so recall finds them and
    does its full work: scoring, packing, rendering), each with its own small perturbation."""
    from salience.memory.embed import LocalMiniLMEmbedder
    from salience.model import ExtractionJob, MemoryItem, UserRef, utcnow
    from salience.store.base import open_store

    templates = [f"I {verb} {person} {place}." for verb in VERBS for person in PEOPLE for place in PLACES]
    embedder = LocalMiniLMEmbedder()
    base = await embedder.embed(templates)
    store = open_store(f"sqlite:///{db}")
    await store.open()
    timings = {}
    try:
        for size in sizes:
            started = time.perf_counter()
            rng, noise = random.Random(size), np.random.default_rng(size)
            user = UserRef("bench", f"u{size}")
            start = utcnow() - timedelta(days=365)
            for first in range(0, size, 5000):
                count = min(5000, size - first)
                picks = [rng.randrange(len(templates)) for _ in range(count)]
                vectors = base[picks] + noise.normal(0, 0.02, (count, base.shape[1])).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                items = [
                    MemoryItem(
                        id=f"mem_{size}_{first + i}", text=templates[pick][:-1] + f" (day {first + i}).",
                        kind="event", importance=rng.random(), speaker="user",
                        created_at=start + timedelta(seconds=(365 * 86400 / size) * (first + i)),
                        sources=[f"msg_{size}_{first + i}"], session_id=f"s{(first + i) // 20}",
                        embedding=vectors[i],
                    )
                    for i, pick in enumerate(picks)
                ]
                job = ExtractionJob(id=f"seed-{size}-{first}", user=user, session_id="seed", messages=[])
                await store.commit_extraction(job, items, [])
            timings[f"u{size}"] = round(time.perf_counter() - started, 1)
    finally:
        await store.close()
    return timings


def salience_config(root: Path, upstream_url: str, extraction: bool, embedder_runtime: str = "auto") -> Path:
    config = root / "config"
    (config / "tenants").mkdir(parents=True, exist_ok=True)
    (config / "salience.yaml").write_text(yaml.safe_dump({
        "data_dir": str(root / "data"), "log_level": "warning", "extraction": {"enabled": extraction},
        "embedder": {"runtime": embedder_runtime},
    }))
    upstream = {"api_base": upstream_url, "model": MODEL, "api_key": "sk-upstream", "transport": "relay"}
    (config / "tenants" / "bench.yaml").write_text(yaml.safe_dump({"api_keys": [API_KEY], "upstream": upstream}))
    litellm_upstream = {**upstream, "model": f"openai/{MODEL}", "transport": "litellm"}
    (config / "tenants" / "bench-litellm.yaml").write_text(
        yaml.safe_dump({"api_keys": [LITELLM_TRANSPORT_KEY], "upstream": litellm_upstream}))
    return config


def litellm_config(root: Path, upstream_url: str) -> Path:
    path = root / "litellm.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": upstream_url, "api_key": "sk-upstream"}}],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }))
    return path


# --- load --------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    url: str
    service: Service
    headers: dict[str, str] = field(default_factory=dict)
    statements: bool = False  # send turns the extractor mines instead of questions
    counter: int = 0

    def body(self, stream: bool) -> bytes:
        self.counter += 1
        texts = STATEMENTS if self.statements else QUESTIONS
        # Every turn is new text, so no cache can answer for the embedder.
        number = zlib.crc32(self.name.encode()) % 1000 * 100_000 + self.counter  # unique across systems
        text = texts[self.counter % len(texts)].format(n=number)
        return json.dumps({"model": MODEL, "stream": stream, "messages": [
            {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]}).encode()


async def one_request(session: aiohttp.ClientSession, target: Target, stream: bool) -> tuple[float, float]:
    """(seconds to the whole reply, seconds to the first streamed event or the whole reply)."""
    started = time.perf_counter()
    headers = {"content-type": "application/json", **target.headers}
    async with session.post(target.url + "/v1/chat/completions", data=target.body(stream), headers=headers) as reply:
        if reply.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {reply.status}: {(await reply.text())[:300]}")
        if not stream:
            await reply.read()
            total = time.perf_counter() - started
            return total, total
        first = None
        async for line in reply.content:
            if first is None and line.startswith(b"data:"):
                first = time.perf_counter() - started
        return time.perf_counter() - started, first if first is not None else float("nan")


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.array(values) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)} | {"n": len(values)}


async def latency_rounds(targets: list[Target], rounds: int, per_round: int, stream_per_round: int,
                         advance) -> dict[str, dict[str, list[float]]]:
    samples = {t.name: {"total": [], "stream_total": [], "ttft": []} for t in targets}
    sessions = {t.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for t in targets}
    try:
        for target in targets:  # warm: connections, caches, lazy imports
            for stream in (False, True, False):
                await one_request(sessions[target.name], target, stream)
        for _ in range(rounds):
            order = targets[:]
            random.shuffle(order)
            for target in order:
                session = sessions[target.name]
                for _ in range(per_round):
                    total, _ = await one_request(session, target, False)
                    samples[target.name]["total"].append(total)
                for _ in range(stream_per_round):
                    total, first = await one_request(session, target, True)
                    samples[target.name]["stream_total"].append(total)
                    samples[target.name]["ttft"].append(first)
                advance()
    finally:
        for session in sessions.values():
            await session.close()
    return samples


async def closed_loop(target: Target, concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` clients, each sending its next request when the last one is answered."""
    done, errors = 0, 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(min(concurrency, 8)):
            await one_request(session, target, False)
        cpu_before = cpu_seconds(target.service.pid)
        started = time.perf_counter()
        deadline = started + seconds

        async def client() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                try:
                    await one_request(session, target, False)
                    done += 1
                except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError):
                    errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(target.service.pid) - cpu_before
    return {"requests": done, "errors": errors, "seconds": elapsed, "cpu_seconds": cpu}


async def throughput_rounds(targets: list[Target], levels: list[int], rounds: int, seconds: float,
                            advance) -> dict[str, dict[int, list[dict[str, float]]]]:
    runs: dict[str, dict[int, list[dict[str, float]]]] = {t.name: {c: [] for c in levels} for t in targets}
    for concurrency in levels:
        for _ in range(rounds):
            order = targets[:]
            random.shuffle(order)
            for target in order:
                runs[target.name][concurrency].append(await closed_loop(target, concurrency, seconds))
                advance()
    return runs


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Plan:
    sizes: list[int]
    rounds: int
    per_round: int
    stream_per_round: int
    levels: list[int]
    throughput_rounds: int
    throughput_seconds: float
    extraction_rounds: int
    extraction_per_round: int


FULL = Plan([10_000, 100_000], 6, 40, 15, [1, 16, 64], 3, 3.0, 10, 40)
QUICK = Plan([10_000], 2, 10, 5, [1, 16], 1, 1.5, 2, 10)


def plan_of(args: argparse.Namespace) -> Plan:
    """The full or quick plan, with any value given on the command line in its place."""
    plan = QUICK if args.quick else FULL
    given = {name: value for name, value in vars(args).items() if name in Plan.__dataclass_fields__ and value is not None}
    return Plan(**{**plan.__dict__, **given})


async def run(args: argparse.Namespace) -> dict:
    plan = plan_of(args)
    work = Path(tempfile.mkdtemp(prefix="salience-gateway-bench-"))
    services: list[Service] = []
    env = base_env()
    try:
        console.print(f"working in {work}")
        port = free_port()
        upstream = Service("upstream", [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(port),
                                        "--delay", str(args.delay), "--chunks", str(args.chunks)],
                           port, "/v1/models", work / "upstream.log", env)
        services.append(upstream)
        upstream.wait_ready(30)
        upstream_v1 = upstream.url + "/v1"

        litellm_proxy = None
        if not args.no_litellm:
            binary = litellm_venv(args.litellm_venv)
            port = free_port()
            litellm_proxy = Service("litellm", [str(binary), "--config", str(litellm_config(work, upstream_v1)),
                                                "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                                    port, "/health/liveliness", work / "litellm.log", env)
            services.append(litellm_proxy)

        console.print(f"seeding memories: {', '.join(f'{s:,}' for s in plan.sizes)}")
        on_root, off_root = work / "salience-on", work / "salience-off"
        (on_root / "data").mkdir(parents=True)
        seeding = await seed_store(on_root / "data" / "salience.db", plan.sizes)
        (off_root / "data").mkdir(parents=True)
        shutil.copy(on_root / "data" / "salience.db", off_root / "data" / "salience.db")

        servers = {}
        for label, root, extraction in (("on", on_root, True), ("off", off_root, False)):
            port = free_port()
            config = salience_config(root, upstream_v1, extraction, args.embedder_runtime)
            servers[label] = Service(f"salience (extraction {label})",
                                     [sys.executable, "-m", "salience", "serve", "--config", str(config), "--port", str(port)],
                                     port, "/healthz", work / f"salience-{label}.log", env)
            services.append(servers[label])
        for service in services:
            service.wait_ready(300)
        salience = servers["on"]

        def bearer(key: str, user: str | None = None) -> dict[str, str]:
            return {"authorization": f"Bearer {key}"} | ({"x-salience-user": user} if user else {})

        floor = Target("upstream (floor)", upstream.url, upstream)
        targets = [floor]
        if litellm_proxy:
            targets.append(Target("LiteLLM proxy", litellm_proxy.url, litellm_proxy, {"authorization": f"Bearer {LITELLM_MASTER_KEY}"}))
        targets.append(Target("salience, memory off", salience.url, salience, bearer(API_KEY)))
        targets += [Target(f"salience, memory on, {size:,}", salience.url, salience, bearer(API_KEY, f"u{size}"))
                    for size in plan.sizes]
        # the same turns with no extraction worker at all: what extraction costs a reply
        ext_user = 10_000 if 10_000 in plan.sizes else plan.sizes[0]
        targets.append(Target(f"salience, memory on, {ext_user:,}, extraction off", servers["off"].url,
                              servers["off"], bearer(API_KEY, f"u{ext_user}")))
        if not args.no_litellm_transport:
            targets.append(Target("salience via litellm transport, memory off", salience.url, salience,
                                  bearer(LITELLM_TRANSPORT_KEY)))
        # first request per user builds its memory set (100k: seconds): not part of the measurement
        for target in targets:
            await asyncio.to_thread(httpx.post, target.url + "/v1/chat/completions", timeout=300,
                                    headers=target.headers, content=target.body(False))
        throughput_targets = [t for t in targets if "litellm transport" not in t.name and "extraction" not in t.name]
        idle_rss = {t.name: rss_mb(t.service.pid) for t in targets}

        ext_size = 10_000 if 10_000 in plan.sizes else plan.sizes[0]
        extraction_targets = [
            Target("extraction on", servers["on"].url, servers["on"], bearer(API_KEY, f"u{ext_size}"), statements=True),
            Target("extraction off", servers["off"].url, servers["off"], bearer(API_KEY, f"u{ext_size}"), statements=True),
        ]

        steps = (plan.rounds * len(targets) + sum(plan.throughput_rounds * len(throughput_targets) for _ in plan.levels)
                 + plan.extraction_rounds * 2)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("latency", total=steps)
            advance = lambda: progress.advance(task)  # noqa: E731
            latency = await latency_rounds(targets, plan.rounds, plan.per_round, plan.stream_per_round, advance)
            progress.update(task, description="throughput")
            throughput = await throughput_rounds(throughput_targets, plan.levels, plan.throughput_rounds,
                                                 plan.throughput_seconds, advance)
            # Every turn of the throughput runs queued a job, and the worker yields the CPU to
            # serving: any it has not extracted yet are waited for, so that the comparison measures
            # the turns it sends, not a backlog left by the phase before (the wait is reported).
            progress.update(task, description="extraction on/off (draining the worker's backlog)")
            backlog = await drain_backlog(on_root / "data" / "salience.db")
            progress.update(task, description="extraction on/off")
            extraction = await latency_rounds(extraction_targets, plan.extraction_rounds, plan.extraction_per_round, 0,
                                              advance)
        peak_rss = {t.name: rss_mb(t.service.pid) for t in targets}
        result = report(plan, args, targets, floor, latency, throughput, extraction, idle_rss, peak_rss, seeding)
        result["extraction"]["backlog_before"] = backlog
        return result
    finally:
        for service in reversed(services):
            service.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


async def drain_backlog(db: Path, timeout: float = 300) -> dict[str, float]:
    """Wait until the extraction worker sharing ``db`` has no turn left to extract."""
    from salience.store.base import open_store

    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        started = time.perf_counter()
        queued = await store.pending_extractions()
        while await store.pending_extractions() and time.perf_counter() - started < timeout:
            await asyncio.sleep(0.25)
        return {"turns": queued, "drained_seconds": round(time.perf_counter() - started, 1)}
    finally:
        await store.close()


def report(plan: Plan, args: argparse.Namespace, targets: list[Target], floor: Target, latency: dict,
           throughput: dict, extraction: dict, idle_rss: dict, peak_rss: dict, seeding: dict) -> dict:
    base = percentiles(latency[floor.name]["total"])
    base_ttft = percentiles(latency[floor.name]["ttft"])
    systems = []
    for target in targets:
        samples = latency[target.name]
        total, ttft = percentiles(samples["total"]), percentiles(samples["ttft"])
        row = {
            "system": target.name,
            "latency_ms": total,
            "added_ms": {q: round(total[q] - base[q], 2) for q in ("p50", "p95", "p99")},
            "ttft_ms": ttft,
            "added_ttft_ms": {q: round(ttft[q] - base_ttft[q], 2) for q in ("p50", "p95", "p99")},
            "stream_total_ms": percentiles(samples["stream_total"]),
            "rss_mb": {"idle": idle_rss[target.name], "after": peak_rss[target.name]},
            "process": target.service.name,
        }
        if target.name in throughput:
            row["throughput"] = {}
            for concurrency, runs in throughput[target.name].items():
                requests = sum(r["requests"] for r in runs)
                seconds = sum(r["seconds"] for r in runs)
                row["throughput"][str(concurrency)] = {
                    "rps": round(requests / seconds, 1),
                    "errors": sum(r["errors"] for r in runs),
                    "cpu_seconds_per_request": round(sum(r["cpu_seconds"] for r in runs) / max(requests, 1), 5),
                }
        systems.append(row)
    on, off = (percentiles(extraction[name]["total"]) for name in ("extraction on", "extraction off"))
    result = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"upstream_delay_ms": args.delay * 1000, "stream_chunks": args.chunks,
                     "quick": args.quick, "embedder_runtime": args.embedder_runtime, **plan.__dict__},
        "seeding_seconds": seeding,
        "systems": systems,
        "extraction": {"on_ms": on, "off_ms": off, "p50_ratio_on_over_off": round(on["p50"] / off["p50"], 3),
                       "memories": 10_000 if 10_000 in plan.sizes else plan.sizes[0]},
    }
    result["targets"] = targets_met(result)
    return result


def targets_met(result: dict) -> dict:
    by_name = {row["system"]: row for row in result["systems"]}
    on = by_name.get("salience, memory on, 10,000")
    litellm = by_name.get("LiteLLM proxy")
    checks = {}
    if on:
        checks["added p50 <= 10 ms (memory on, 10k)"] = [on["added_ms"]["p50"], on["added_ms"]["p50"] <= 10]
        checks["added p99 <= 30 ms (memory on, 10k)"] = [on["added_ms"]["p99"], on["added_ms"]["p99"] <= 30]
        checks["added TTFT p50 <= 10 ms (memory on, 10k)"] = [on["added_ttft_ms"]["p50"], on["added_ttft_ms"]["p50"] <= 10]
        if litellm:
            for level in ("16", "64"):
                if level in on.get("throughput", {}) and level in litellm.get("throughput", {}):
                    ratio = round(on["throughput"][level]["rps"] / litellm["throughput"][level]["rps"], 2)
                    checks[f"throughput ratio vs LiteLLM proxy >= 1.0 at concurrency {level}"] = [ratio, ratio >= 1.0]
    ratio = result["extraction"]["p50_ratio_on_over_off"]
    checks["extraction on/off response p50 within 5%"] = [ratio, abs(ratio - 1) <= 0.05]
    return checks


def markdown(result: dict) -> str:
    machine = result["machine"]
    settings = result["settings"]
    lines = [
        "# Gateway benchmark: salience against the bare upstream and LiteLLM's proxy",
        "",
        f"Machine: {machine['cores']} cores, Python {machine['python']}. Fake upstream: "
        f"{settings['upstream_delay_ms']:g} ms per completion, streams of {settings['stream_chunks']} chunks. "
        f"salience's embedder runtime: {settings.get('embedder_runtime', 'auto')}. "
        f"{'Quick run. ' if settings['quick'] else ''}Every system measured in the same run, interleaved in "
        f"{settings['rounds']} rounds; added = the system's percentile minus the floor's.",
        "",
        "## Latency at concurrency 1",
        "",
        "| system | p50 ms | added p50 | added p95 | added p99 | TTFT p50 ms | added TTFT p50 | added TTFT p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["systems"]:
        lines.append(f"| {row['system']} | {row['latency_ms']['p50']} | {row['added_ms']['p50']} | "
                     f"{row['added_ms']['p95']} | {row['added_ms']['p99']} | {row['ttft_ms']['p50']} | "
                     f"{row['added_ttft_ms']['p50']} | {row['added_ttft_ms']['p99']} |")
    levels = sorted({int(c) for row in result["systems"] for c in row.get("throughput", {})})
    lines += ["", "## Throughput (non-streamed) and cost", "",
              "| system | " + " | ".join(f"req/s @{c}" for c in levels) + " | CPU ms/request @" + str(levels[-1])
              + " | RSS MB idle | RSS MB after |",
              "|---|" + "---|" * (len(levels) + 3)]
    for row in result["systems"]:
        if "throughput" not in row:
            continue
        cells = [str(row["throughput"][str(c)]["rps"]) for c in levels]
        cpu = row["throughput"][str(levels[-1])]["cpu_seconds_per_request"] * 1000
        lines.append(f"| {row['system']} | " + " | ".join(cells) + f" | {cpu:.2f} | {row['rss_mb']['idle']} | "
                     f"{row['rss_mb']['after']} |")
    lines += ["", "CPU and RSS are the gateway's own process tree (the upstream's for the floor; salience's includes "
              "its extraction worker process); salience's rows share one server, so its RSS is the same on each.", ""]
    extraction = result["extraction"]
    lines += ["## Extraction on against off", "",
              f"Turns the extractor mines, user with {extraction['memories']:,} memories, concurrency 1, two salience "
              "processes with the same store contents, interleaved.", ""]
    backlog = extraction.get("backlog_before")
    if backlog:
        left = (f"{backlog['turns']:,} turns, extracted in {backlog['drained_seconds']} s before this was measured"
                if backlog["turns"] else "none")
        lines += [f"Turns the throughput runs left for the worker to extract: {left}.", ""]
    lines += ["| extraction | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|",
              f"| on | {extraction['on_ms']['p50']} | {extraction['on_ms']['p95']} | {extraction['on_ms']['p99']} |",
              f"| off | {extraction['off_ms']['p50']} | {extraction['off_ms']['p95']} | {extraction['off_ms']['p99']} |",
              "", f"p50 on / off: **{extraction['p50_ratio_on_over_off']}**", "", "## Targets", "",
              "| target | measured | met |", "|---|---|---|"]
    for name, (value, met) in result["targets"].items():
        lines.append(f"| {name} | {value} | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 10k only, fewer rounds")
    parser.add_argument("--sizes", type=int, nargs="+", help="memories per user (default 10000 100000)")
    parser.add_argument("--rounds", type=int, help="latency rounds (default 6)")
    parser.add_argument("--per-round", type=int, help="non-streamed requests per system per round (default 40)")
    parser.add_argument("--stream-per-round", type=int, help="streamed requests per system per round (default 15)")
    parser.add_argument("--levels", type=int, nargs="+", help="throughput concurrencies (default 1 16 64)")
    parser.add_argument("--throughput-rounds", type=int, help="throughput runs per system and level (default 3)")
    parser.add_argument("--throughput-seconds", type=float, help="seconds per throughput run (default 3)")
    parser.add_argument("--extraction-rounds", type=int, help="extraction on/off rounds (default 10)")
    parser.add_argument("--extraction-per-round", type=int, help="requests per round (default 40)")
    parser.add_argument("--delay", type=float, default=0.02, help="the fake upstream's delay, seconds")
    parser.add_argument("--chunks", type=int, default=50, help="chunks in a streamed reply")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy (no venv needed)")
    parser.add_argument("--no-litellm-transport", action="store_true", help="skip salience's litellm transport row")
    parser.add_argument("--litellm-venv", type=Path, default=HERE / ".venv-litellm")
    parser.add_argument("--embedder-runtime", default="auto", choices=["auto", "onnx", "onnx-int8", "torch"],
                        help="salience's embedder.runtime (the seeded memories use the float model either way)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, stores)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "gateway.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
