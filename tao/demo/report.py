"""The demo's report: every figure computed from the SQLite log, written as JSON, HTML and PNGs.

Held-out prompts are recomputed from the log exactly as the distill job split them, with the one
data definition of `distill.dataset` (base-arm requests that generated more than one candidate).
On those:
- base N=1: every candidate of the logged best-of-N requests (each an N=1 draw of the base model;
  `LoggedPrompt.n1_samples`);
- base best-of-N: each request's winner;
- distilled: the checkpoint's replies during the rollout (arms candidate, shadow, promoted), at the
  k its rollout served (best-of-k; N=1 when k is 1).
Tokens per served answer: completion tokens per request (all candidates) on each side.
Beside them: the eval gate's figures (from the checkpoint's registry row) and the rollout
policy's (the shadow pairs and every look, from `rollout_events`), so the two can be compared.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from statistics import mean
from typing import Any

from distill.dataset import LoggedPrompt, load_prompts, prompt_key, split
from distill.evaluate import share_recovered
from gateway.rewards.instructions import detect
from gateway.stats import paired_bound
from gateway.store import (
    Arm,
    ServedReply,
    connection,
    get_checkpoint,
    rollout_events,
    served_replies,
    shadow_pairs,
)

CHECKPOINT_ARMS = (Arm.CANDIDATE, Arm.SHADOW, Arm.PROMOTED)
EXAMPLES = 5


def _checks(prompt: str, text: str) -> list[dict[str, Any]]:
    """The verifiable instructions the prompt states, and whether `text` meets each."""
    return [{"instruction": c.kind, "met": c.satisfied_by(text)} for c in detect(prompt)]


def distilled_label(k: int) -> str:
    """How the report names the checkpoint's served answers."""
    return "distilled N=1" if k == 1 else f"distilled best-of-{k}"


def _examples(heldout: list[LoggedPrompt], served: list[ServedReply], k: int) -> list[dict[str, Any]]:
    """A handful of held-out prompts with base N=1, the best-of-N winner and the distilled answer."""
    distilled = {prompt_key(r.messages): r for r in served}
    rows = []
    for p in heldout:
        reply = distilled.get(p.key)
        if reply is None:
            continue
        first, winner = p.firsts()[0], p.winners()[0]
        rows.append({"prompt": p.prompt_text, "answers": [
            {"label": label, "text": text, "score": score, "checks": _checks(p.prompt_text, text)}
            for label, text, score in (("base N=1", first.text, first.score),
                                       ("best-of-N winner", winner.text, winner.score),
                                       (distilled_label(k), reply.text or "", reply.score))]})
        if len(rows) == EXAMPLES:
            break
    return rows


def compute(db_path: Path, model: str, checkpoint_id: str | None, holdout_fraction: float,
            z: float) -> dict[str, Any]:
    """Every figure of the report, read from the log in one connection and computed on the held-out
    prompts; `z` is the rollout policy's per-look quantile (for its bounds)."""
    with connection(db_path) as db:
        checkpoint = get_checkpoint(db, checkpoint_id) if checkpoint_id else None
        until = checkpoint.data_until if checkpoint else None
        _, heldout = split(load_prompts(db, model, until=until), holdout_fraction)
        served = served_replies(db, model, CHECKPOINT_ARMS)
        events = rollout_events(db, model)
        start = next((e for e in events if e.event == "start"), None)
        k = int(start.details.get("candidate_best_of", 1)) if start else 1
        pairs = shadow_pairs(db, model, since=start.created_at, candidate_n=k) if start else []
    keys = {p.key for p in heldout}
    base_n1 = [c.score for p in heldout for c in p.n1_samples()]
    base_best = [c.score for p in heldout for c in p.winners()]
    base_tokens = [t for p in heldout for t in p.completion_tokens]
    served = [r for r in served if prompt_key(r.messages) in keys]
    distilled = [r.score for r in served]
    distilled_tokens = [r.completion_tokens for r in served]

    means = {"base_n1": mean(base_n1) if base_n1 else None, "base_best_of_n": mean(base_best) if base_best else None,
             "distilled": mean(distilled) if distilled else None}
    recovered = (share_recovered(means["distilled"] - means["base_n1"], means["base_best_of_n"] - means["base_n1"])
                 if distilled and base_n1 and base_best else None)
    looks = [{"at": e.created_at, "event": e.event, **{k: e.details.get(k) for k in
                                                         ("look", "pairs", "mean", "lower", "upper", "margin")}}
             for e in events if "look" in e.details]
    return {
        "heldout_prompts": len(heldout),
        "distilled_best_of": k,
        "rewards": {"base_n1": base_n1, "base_best_of_n": base_best, "distilled": distilled},
        "means": means,
        "gain_recovered": recovered,
        "tokens_per_answer": {"base_best_of_n": mean(base_tokens) if base_tokens else None,
                              "distilled": mean(distilled_tokens) if distilled_tokens else None},
        "rollout_events": [{"at": e.created_at, "event": e.event, "share": e.share} for e in events],
        "rollout": {"pairs": [{"at": p.created_at, "incumbent": p.incumbent, "candidate": p.candidate}
                              for p in pairs],
                    "paired_difference": paired_bound([p.difference for p in pairs], z).as_dict() if pairs else None,
                    "looks": looks, "z": z},
        "checkpoint": ({"id": checkpoint.id, "method": checkpoint.method, "status": checkpoint.status,
                        "path": checkpoint.path} if checkpoint else None),
        "gate": checkpoint.metrics.get("eval") if checkpoint else None,
        "examples": _examples(heldout, served, k),
    }


def _plots(data: dict[str, Any], out: Path, best_of: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    labels = ["base N=1", f"base best-of-{best_of}", distilled_label(data["distilled_best_of"])]
    groups = [data["rewards"][k] for k in ("base_n1", "base_best_of_n", "distilled")]

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
    values = [tokens["base_best_of_n"] or 0, tokens["distilled"] or 0]
    ax.bar([f"base best-of-{best_of}", distilled_label(data["distilled_best_of"])], values, color=["#888", "#2a7"])
    ax.set_ylabel("tokens generated per served answer")
    fig.tight_layout()
    fig.savefig(out / "tokens.png", dpi=110)
    names.append("tokens.png")
    plt.close(fig)

    fig, (rewards_ax, share_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[2, 1])
    events, rollout = data["rollout_events"], data["rollout"]
    start = events[0]["at"] if events else 0.0
    pairs = sorted(rollout["pairs"], key=lambda p: p["at"])
    for arm, colour in (("incumbent", "#888"), ("candidate", "#2a7")):
        xs, means, lows, highs = [], [], [], []
        for n in range(2, len(pairs) + 1):
            values = [p[arm] for p in pairs[:n]]
            bound = paired_bound(values, rollout["z"])
            xs.append(pairs[n - 1]["at"] - start)
            means.append(bound.mean)
            lows.append(bound.lower)
            highs.append(bound.upper)
        if xs:
            label = (f"base best-of-{best_of}" if arm == "incumbent"
                     else f"{distilled_label(data['distilled_best_of'])} (shadow)")
            rewards_ax.plot(xs, means, color=colour, label=label)
            rewards_ax.fill_between(xs, lows, highs, color=colour, alpha=0.2)
    for look in rollout["looks"]:
        rewards_ax.axvline(look["at"] - start, color="#c44", linestyle=":", linewidth=1)
        rewards_ax.annotate(f"look {look['look']}: {look['event']}", (look["at"] - start, 0.02),
                            xycoords=("data", "axes fraction"), fontsize=8, rotation=90, color="#c44")
    rewards_ax.set_ylabel("mean reward on shadow pairs")
    rewards_ax.set_title(f"Rollout: each arm's mean reward (band: ±z·sd/√n, z = {rollout['z']:.2f}) and the share")
    if pairs:
        rewards_ax.legend(loc="lower right", fontsize=8)
    if events:
        xs = [e["at"] - start for e in events]
        share_ax.step(xs, [e["share"] for e in events], where="post", marker="o")
    share_ax.set_xlabel("seconds since rollout start")
    share_ax.set_ylabel("candidate share %")
    share_ax.set_ylim(-5, 105)
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
        (distilled_label(data["distilled_best_of"]), _fmt(means["distilled"]), _fmt(tokens["distilled"], "{:.1f}")),
        (f"share of the best-of-{best_of} gain recovered", _fmt(data["gain_recovered"], "{:.0%}"), ""),
    ]


def _examples_html(examples: list[dict[str, Any]]) -> str:
    blocks = []
    for example in examples:
        cells = []
        for answer in example["answers"]:
            checks = " ".join(f"<span class='{'met' if c['met'] else 'missed'}'>{html.escape(c['instruction'])}</span>"
                              for c in answer["checks"]) or "<span>no verifiable instruction</span>"
            cells.append(f"<td><b>{html.escape(answer['label'])}</b> · score {answer['score']:.3f}<br>{checks}"
                         f"<pre>{html.escape(answer['text'])}</pre></td>")
        blocks.append(f"<p class='prompt'>{html.escape(example['prompt'])}</p><table class='side'><tr>{''.join(cells)}"
                      "</tr></table>")
    return "".join(blocks) or "<p>No held-out prompt was answered by the checkpoint.</p>"


def _bound(bound: dict[str, Any] | None) -> str:
    if not bound or not bound.get("pairs"):
        return "n/a"
    return f"{bound['mean']:+.4f} [{bound['lower']:+.4f}, {bound['upper']:+.4f}] over {bound['pairs']}"


def _gate_vs_rollout(data: dict[str, Any]) -> str:
    gate, rollout = data["gate"] or {}, data["rollout"]
    rows = [
        ("gate: new N=1 − base N=1 (paired per prompt, sampled)", _bound(gate.get("versus_base"))),
        ("gate: new N=1 − logged best-of-N (paired per prompt)", _bound(gate.get("versus_best_of_n"))),
        ("gate: share of the gain recovered", _fmt(gate.get("gain_recovered"), "{:.0%}")),
        *((f"gate: new best-of-{k} (estimated from its samples) − logged best-of-N", _bound(row["versus_best_of_n"]))
          for k, row in (gate.get("best_of_k") or {}).items() if k != "1"),
        (f"rollout: {distilled_label(data['distilled_best_of'])} − best-of-N on shadow pairs",
         _bound(rollout["paired_difference"])),
        ("rollout: share of the gain recovered (its replies, above)", _fmt(data["gain_recovered"], "{:.0%}")),
    ]
    return "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)


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
table{{border-collapse:collapse;margin:1em 0}}table.side td{{vertical-align:top;width:33%}}
pre{{white-space:pre-wrap;font-size:90%}}.met{{color:#174;margin-right:6px}}.missed{{color:#b22;margin-right:6px;
text-decoration:line-through}}.prompt{{margin-top:1.5em;font-style:italic}}</style></head><body>
<h1>TAO demo report</h1>
<p>{meta['prompts']} generated prompts (seed {meta['seed']}) served at best-of-{best_of} by the embedded model,
distilled with <b>{html.escape(meta['method'])}</b>, rolled out as {html.escape(distilled_label(data['distilled_best_of']))}. Every figure below is computed from
<code>{html.escape(str(meta['database']))}</code>, on the {data['heldout_prompts']} held-out prompts.</p>
<table><tr><th></th><th>mean reward</th><th>tokens / served answer</th></tr>{rows}</table>
<h2>Outcome</h2><p>{html.escape(meta['outcome'])}</p>
<h2>Gate and rollout, side by side</h2><table>{_gate_vs_rollout(data)}</table>
<h2>Held-out answers, side by side</h2><p>Instructions in green were met, struck through in red missed.</p>
{_examples_html(data['examples'])}
{''.join(f'<p><img src="{name}" alt="{name}"></p>' for name in images)}
<h2>Rollout events</h2><table><tr><th>time</th><th>event</th><th>share</th></tr>{events}</table>
<h2>Run</h2><table>{meta_rows}</table></body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
