"""`tao demo` end to end on the real model (small), and its report checked against the log."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
import sqlite_utils

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


def test_demo_runs_the_loop_and_reports_numbers_from_the_log(tmp_path: Path):
    out = tmp_path / "demo"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    run = subprocess.run([sys.executable, "-m", "gateway", "demo", "--prompts", "16", "--best-of", "4", "--max-steps",
                          "3", "--max-tokens", "32", "--rounds", "1", "--prompts-per-look", "3", "--distill-rounds", "1",
                          "--gate-margin", "-1", "--rollout-margin", "3", "--seed", "5", "--out", str(out)],
                         capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "share of the best-of-4 gain recovered" in run.stdout

    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["seed"] == 5 and report["meta"]["prompts"] == 16 and report["meta"]["best_of"] == 4
    db = sqlite_utils.Database(out / "tao.db")
    [checkpoint] = db["checkpoints"].rows
    assert report["checkpoint"]["id"] == checkpoint["id"]

    # Recompute every figure straight from the SQLite log.
    heldout = {json.dumps(json.loads(m)) for (m,) in db.execute(  # round 1 of the rollout sends the held-out prompts
        "SELECT DISTINCT messages FROM requests WHERE arm != 'base' AND user LIKE 'rollout-r0-%'").fetchall()}
    assert len(heldout) == report["heldout_prompts"] > 0
    logged = [row for row in db.execute(
        "SELECT r.messages, c.idx, c.score, c.won, r.completion_tokens FROM requests r JOIN candidates c "
        "ON c.request_id = r.id WHERE r.arm = 'base' AND r.best_of = 4 AND r.created_at < ?",
        [checkpoint["data_until"]]).fetchall() if json.dumps(json.loads(row[0])) in heldout]
    assert sorted(report["rewards"]["base_n1"]) == pytest.approx(sorted(r[2] for r in logged))  # every candidate is an N=1 draw
    assert report["means"]["base_best_of_n"] == pytest.approx(mean(r[2] for r in logged if r[3]))
    served = [(score, tokens) for messages, score, tokens in db.execute(
        "SELECT r.messages, c.score, r.completion_tokens FROM requests r JOIN candidates c ON c.request_id = r.id "
        "AND c.won = 1 WHERE r.arm IN ('candidate', 'shadow', 'promoted') AND r.status = 'ok'").fetchall()
        if json.dumps(json.loads(messages)) in heldout]  # the report's distilled figures are the held-out prompts
    assert report["means"]["distilled"] == pytest.approx(mean(s for s, _ in served))
    assert report["tokens_per_answer"]["distilled"] == pytest.approx(mean(t for _, t in served))
    events = db.execute("SELECT event, share FROM rollout_events ORDER BY id").fetchall()
    assert [(e["event"], e["share"]) for e in report["rollout_events"]] == [tuple(e) for e in events]
    assert events[0] == ("start", 10.0)
    # Rewards lie in [0, 1]: over 3 or more prompts (t boundary 2.92 at most, one planned look) a difference's lower
    # bound stays above -3, so with a margin of 3 the policy promotes at that look; no round is sent after it.
    assert events[-1] == ("promote", 100.0) and report["rollout"]["looks"][-1]["look"] == 1
    # 3 held-out prompts at a 10 % canary leave round 1 short of 3 pairs for some seeds: the look comes after round 2
    assert re.search(r"the rollout policy promoted the checkpoint \(best-of-1\) after round [12]$", report["meta"]["outcome"])
    promoted_at = db.execute("SELECT created_at FROM rollout_events WHERE event = 'promote'").fetchone()[0]
    assert not db.execute("SELECT COUNT(*) FROM requests WHERE arm = 'base' AND user LIKE 'rollout-%' "
                          "AND created_at > ?", [promoted_at]).fetchone()[0]
    pairs = db.execute("SELECT COUNT(*) FROM requests WHERE arm = 'shadow'").fetchone()[0]
    assert report["rollout"]["paired_difference"]["pairs"] == len(report["rollout"]["pairs"]) <= pairs
    assert report["gate"]["versus_base"]["pairs"] == report["gate"]["prompts"] > 0  # gate beside rollout

    for name in ("rewards.png", "tokens.png", "rollout.png"):
        assert (out / name).read_bytes().startswith(PNG)
    page = (out / "report.html").read_text()
    assert "seed 5" in page and f"{report['means']['base_n1']:.4f}" in page
    assert all(f'src="{name}"' in page for name in ("rewards.png", "tokens.png", "rollout.png"))
    assert report["examples"] and "Held-out answers, side by side" in page and "best-of-N winner" in page


def test_a_demo_with_too_little_traffic_says_what_to_do_and_exits_2(tmp_path: Path):
    out = tmp_path / "demo"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    run = subprocess.run([sys.executable, "-m", "gateway", "demo", "--prompts", "3", "--best-of", "2", "--max-tokens",
                          "8", "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    said = " ".join(run.stdout.split())  # the console wraps long lines
    assert "too little data" in said and "Run the demo again with more --prompts" in said
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())  # nothing half-published
    assert json.loads((out / "report.json").read_text())["checkpoint"] is None
