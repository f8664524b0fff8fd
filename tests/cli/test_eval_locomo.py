"""``salience eval locomo`` on a tiny conversation in LoCoMo's format (the real data set is
not shipped; the benchmark reads it from ../shared or --data)."""

from __future__ import annotations

import json
import subprocess

from tests.cli.test_cli import SALIENCE, offline_env

TINY = [{
    "sample_id": "conv-tiny",
    "conversation": {
        "speaker_a": "Caroline", "speaker_b": "Melanie",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Caroline", "dia_id": "D1:1", "text": "I went to a LGBTQ support group yesterday and it was so powerful."},
            {"speaker": "Melanie", "dia_id": "D1:2", "text": "I ran a charity race for mental health last Saturday."},
        ],
        "session_2_date_time": "10:00 am on 20 June, 2023",
        "session_2": [
            {"speaker": "Caroline", "dia_id": "D2:1", "text": "I'm researching adoption agencies because I want to give kids a loving home."},
            {"speaker": "Melanie", "dia_id": "D2:2", "text": "My kids loved the camping trip we took to the mountains."},
        ],
    },
    "qa": [
        {"question": "When did Caroline go to the LGBTQ support group?", "answer": "7 May 2023", "evidence": ["D1:1"], "category": 2},
        {"question": "What did Caroline research?", "answer": "Adoption agencies", "evidence": ["D2:1"], "category": 1},
        {"question": "Where did Melanie go camping?", "answer": "the mountains", "evidence": ["D2:2"], "category": 4},
        {"question": "What did Caroline realize after her charity race?", "adversarial_answer": "self-care", "evidence": ["D1:2"], "category": 5},
    ],
}]


def test_eval_locomo_writes_a_report_with_salience_and_three_baselines(tmp_path):
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps(TINY))
    out = tmp_path / "results"
    result = subprocess.run(
        SALIENCE + ["eval", "locomo", "--data", str(data), "--budget", "200", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=offline_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "locomo.json").read_text())
    run = report["runs"][0]
    assert run["budget"] == 200 and run["questions"] == 4 and report["machine"]["cores"] >= 1
    systems = run["systems"]
    assert set(systems) == {"salience", "last-N tokens", "BM25 top-k", "MiniLM top-k"}
    # the relative date was resolved at import: "yesterday" said on 8 May is 7 May
    assert systems["salience"]["2"]["answer_token_recall"] == 1.0
    assert systems["salience"]["1,2,4"]["mean_tokens"] <= 200
    assert 0 <= run["adversarial_found_false"] <= 1
    markdown = (out / "locomo.md").read_text()
    assert "| salience | 1,2,4 |" in markdown and "| BM25 top-k | 1,2,4 |" in markdown
