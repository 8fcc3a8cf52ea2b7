"""The demo's report: every figure computed from the SQLite log, written as JSON, HTML and PNGs.

Held-out prompts are recomputed from the log exactly as the distill job split them. On those:
- base N=1: the first candidate of each logged best-of-N request (an unbiased N=1 sample);
- base best-of-N: the winners of the same requests;
- distilled N=1: the checkpoint's replies during the rollout (arms candidate, shadow, promoted).
Tokens per served answer: completion tokens per request (all candidates) on each side.
The rollout's traffic share over time comes from `rollout_events`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from statistics import mean
from typing import Any

from distill.dataset import load_prompts, prompt_key, split
from gateway.store import Arm, best_of_n_candidates, connection, get_checkpoint, rollout_events, served_replies

CHECKPOINT_ARMS = (Arm.CANDIDATE, Arm.SHADOW, Arm.PROMOTED)


def compute(db_path: Path, model: str, checkpoint_id: str | None, holdout_fraction: float) -> dict[str, Any]:
    """Every figure of the report, read from the log in one connection and computed on the held-out prompts."""
    with connection(db_path) as db:
        checkpoint = get_checkpoint(db, checkpoint_id) if checkpoint_id else None
        until = checkpoint.data_until if checkpoint else None
        _, heldout = split(load_prompts(db, model, until=until), holdout_fraction)
        logged = best_of_n_candidates(db, model=model, until=until or None)
        served = served_replies(db, model, CHECKPOINT_ARMS)
        events = [{"at": e.created_at, "event": e.event, "share": e.share} for e in rollout_events(db, model)]
    keys = {p.key for p in heldout}
    logged = [c for c in logged if c.score is not None and prompt_key(c.messages) in keys]
    base_n1 = [c.score for c in logged if c.idx == 0]
    base_best = [c.score for c in logged if c.won]
    base_tokens = [c.completion_tokens for c in logged if c.idx == 0]
    served = [r for r in served if prompt_key(r.messages) in keys]
    distilled = [r.score for r in served]
    distilled_tokens = [r.completion_tokens for r in served]

    means = {"base_n1": mean(base_n1) if base_n1 else None, "base_best_of_n": mean(base_best) if base_best else None,
             "distilled_n1": mean(distilled) if distilled else None}
    uplift = (means["base_best_of_n"] - means["base_n1"]) if base_n1 and base_best else None
    recovered = ((means["distilled_n1"] - means["base_n1"]) / uplift
                 if distilled and uplift and uplift > 1e-9 else None)
    return {
        "heldout_prompts": len(heldout),
        "rewards": {"base_n1": base_n1, "base_best_of_n": base_best, "distilled_n1": distilled},
        "means": means,
        "gain_recovered": recovered,
        "tokens_per_answer": {"base_best_of_n": mean(base_tokens) if base_tokens else None,
                              "distilled_n1": mean(distilled_tokens) if distilled_tokens else None},
        "rollout_events": events,
        "checkpoint": ({"id": checkpoint.id, "method": checkpoint.method, "status": checkpoint.status,
                        "path": checkpoint.path} if checkpoint else None),
        "checkpoint_eval": checkpoint.metrics.get("eval") if checkpoint else None,
    }


def _plots(data: dict[str, Any], out: Path, best_of: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    labels = ["base N=1", f"base best-of-{best_of}", "distilled N=1"]
    groups = [data["rewards"][k] for k in ("base_n1", "base_best_of_n", "distilled_n1")]

    fig, ax = plt.subplots(figsize=(7, 4))
    present = [(label, values) for label, values in zip(labels, groups) if values]
    if present:
        ax.boxplot([v for _, v in present], tick_labels=[label for label, _ in present], showmeans=True)
    ax.set_ylabel("reward (default scorer)")
    ax.set_title(f"Reward on {data['heldout_prompts']} held-out prompts")
    fig.tight_layout()
    fig.savefig(out / "rewards.png", dpi=110)
    names.append("rewards.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    tokens = data["tokens_per_answer"]
    values = [tokens["base_best_of_n"] or 0, tokens["distilled_n1"] or 0]
    ax.bar([f"base best-of-{best_of}", "distilled N=1"], values, color=["#888", "#2a7"])
    ax.set_ylabel("tokens generated per served answer")
    fig.tight_layout()
    fig.savefig(out / "tokens.png", dpi=110)
    names.append("tokens.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3))
    events = data["rollout_events"]
    if events:
        start = events[0]["at"]
        xs = [e["at"] - start for e in events]
        ax.step(xs, [e["share"] for e in events], where="post", marker="o")
        for x, e in zip(xs, events):
            ax.annotate(e["event"], (x, e["share"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("seconds since rollout start")
    ax.set_ylabel("candidate share %")
    ax.set_ylim(-5, 105)
    ax.set_title("Rollout: traffic share of the distilled checkpoint")
    fig.tight_layout()
    fig.savefig(out / "rollout.png", dpi=110)
    names.append("rollout.png")
    plt.close(fig)
    return names


def _fmt(value: float | None, pattern: str = "{:.4f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def table_rows(data: dict[str, Any], best_of: int) -> list[tuple[str, str, str]]:
    means, tokens = data["means"], data["tokens_per_answer"]
    return [
        ("base N=1", _fmt(means["base_n1"]), ""),
        (f"base best-of-{best_of}", _fmt(means["base_best_of_n"]), _fmt(tokens["base_best_of_n"], "{:.1f}")),
        ("distilled N=1", _fmt(means["distilled_n1"]), _fmt(tokens["distilled_n1"], "{:.1f}")),
        (f"share of the best-of-{best_of} gain recovered", _fmt(data["gain_recovered"], "{:.0%}"), ""),
    ]


def write(data: dict[str, Any], meta: dict[str, Any], out: Path) -> Path:
    """report.json, report.html and the PNGs into `out`; returns the HTML path."""
    best_of = meta["best_of"]
    images = _plots(data, out, best_of)
    (out / "report.json").write_text(json.dumps({"meta": meta, **data}, indent=2, default=str))
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in table_rows(data, best_of))
    events = "".join(f"<tr><td>{e['at'] - data['rollout_events'][0]['at']:.0f} s</td><td>{html.escape(e['event'])}</td>"
                     f"<td>{e['share']:g}%</td></tr>" for e in data["rollout_events"])
    meta_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>TAO demo report</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;margin:1em 0}}</style></head><body>
<h1>TAO demo report</h1>
<p>{meta['prompts']} generated prompts (seed {meta['seed']}) served at best-of-{best_of} by the embedded model,
distilled with <b>{html.escape(meta['method'])}</b>, rolled out at N=1. Every figure below is computed from
<code>{html.escape(str(meta['database']))}</code>, on the {data['heldout_prompts']} held-out prompts.</p>
<table><tr><th></th><th>mean reward</th><th>tokens / served answer</th></tr>{rows}</table>
<h2>Outcome</h2><p>{html.escape(meta['outcome'])}</p>
{''.join(f'<p><img src="{name}" alt="{name}"></p>' for name in images)}
<h2>Rollout events</h2><table><tr><th>time</th><th>event</th><th>share</th></tr>{events}</table>
<h2>Run</h2><table>{meta_rows}</table></body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
