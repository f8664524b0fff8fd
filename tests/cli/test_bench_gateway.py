"""``salience bench gateway``: the CLI runs the gateway benchmark and writes its report.

A tiny run (a few hundred memories, one round, no LiteLLM proxy so no virtualenv is built):
it checks the wiring and the report's shape, never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TINY = [
    "--no-litellm", "--no-litellm-transport", "--sizes", "300", "--rounds", "1", "--per-round", "3",
    "--stream-per-round", "2", "--levels", "2", "--throughput-rounds", "1", "--throughput-seconds", "0.3",
    "--extraction-rounds", "1", "--extraction-per-round", "3",
]


def test_bench_gateway_writes_a_report_with_every_system(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALIENCE_")}
    env.update(HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "salience", "bench", "gateway", *TINY, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((tmp_path / "gateway.json").read_text())
    assert report["machine"]["cores"] == os.cpu_count()
    systems = {row["system"]: row for row in report["systems"]}
    assert set(systems) == {
        "upstream (floor)", "salience, memory off", "salience, memory on, 300", "salience, memory on, 300, extraction off"}
    memory_on = systems["salience, memory on, 300"]
    assert memory_on["latency_ms"]["n"] == 3 and memory_on["ttft_ms"]["n"] == 2
    assert memory_on["throughput"]["2"]["rps"] > 0 and memory_on["throughput"]["2"]["errors"] == 0
    assert memory_on["rss_mb"]["idle"] > 0
    assert systems["upstream (floor)"]["added_ms"]["p50"] == 0
    assert {"on_ms", "off_ms", "p50_ratio_on_over_off"} <= set(report["extraction"])
    assert any("extraction" in name for name in report["targets"])

    table = (tmp_path / "gateway.md").read_text()
    assert "| salience, memory on, 300 |" in table and "## Targets" in table
