"""The proof that matters: does the distilled checkpoint serve at N=1 what best-of-N served, and on what?

    python -m bench.distill_gain [--prompts 200] [--method sft+dpo] [--unseen-kinds postscript title]

1. serves the embedded SmolLM2 with the default (instruction-following) scorer and sends
   `--prompts` generated prompts through it at best-of-N (skipped with --reuse-log);
2. runs the distill job on the log with prompts that state an instruction of `--unseen-kinds`
   left out of training and of the gate (they measure generalisation to kinds never trained on);
3. evaluates base and distilled N=1 (through the local backend, as the gateway serves; paired
   per prompt, `--eval-samples` each) on three groups: held-out prompts of the trained kinds (the
   gate's own figures), prompts of the unseen kinds, and `--plain-prompts` prompts with no
   verifiable instruction at all (no regression allowed there: repetition, clean endings, empty
   or looping answers);
4. prints one table: per group base N=1, logged best-of-N, distilled N=1, the share of the gain
   recovered with its interval, answer lengths (words) and truncation, and what the gate decided;
   then the held-out trained-kind prompts per instruction kind (which kinds were learnt), and
   writes every sampled answer with its score to `answers.json` in the workdir.
Everything runs on this CPU. The checkpoint is always kept (the gate's verdict is printed, not
enforced) so that every group can be evaluated.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from statistics import mean

from pydantic import BaseModel, Field

from distill.dataset import LoggedPrompt, load_prompts, prompt_key
from distill.evaluate import EvalReport, PromptResult, evaluate, gate
from distill.job import base_weights, run_distill
from gateway.app import create_app
from gateway.config import (
    DistillConfig,
    DistillMethod,
    DpoPairing,
    DPOSettings,
    RolloutConfig,
    RoundRejected,
    RoundSettings,
    Settings,
    StoreConfig,
    default_models,
    with_updates,
)
from gateway.rewards import build_scorer
from gateway.rewards.instructions import detect
from gateway.rewards.text import repetition, words
from gateway.stats import z_for
from gateway.store import connection
from tao.console import print_outcome
from tao.demo.prompts import generate_prompts, plain_prompts
from tao.demo.workload import send_workload
from tao.flags import add_field_flags, field_values
from tao.server_thread import serve_in_thread


class DistillGainConfig(BaseModel):
    """The benchmark's options: bigger than the demo's, to measure rather than to show."""

    prompts: int = Field(200, ge=1, description="Prompts in the best-of-N traffic.")
    best_of: int = Field(8, ge=1, description="N of the traffic.")
    method: DistillMethod = Field(DistillConfig.model_fields["method"].default, description="Distill method.")
    epochs: float = Field(DistillConfig.model_fields["epochs"].default, gt=0, description="Passes over the rows.")
    rounds: int = Field(DistillConfig.model_fields["rounds"].default, ge=1,
                        description="Iterated rounds: after each, best-of-N from the new adapter on the training "
                        "prompts, scored, paired (round.rejected), trained again.")
    round_best_of: int = Field(RoundSettings.model_fields["best_of"].default, ge=2,
                               description="Samples per training prompt in an iterated round.")
    round_rejected: RoundRejected = Field(RoundSettings.model_fields["rejected"].default,
                                          description="Which texts an iterated round's DPO pairs reject.")
    dpo_pairing: DpoPairing = Field(DPOSettings.model_fields["pairing"].default,
                                    description="Which rejected texts DPO pairs with the best.")
    dpo_max_pairs_per_prompt: int = Field(DPOSettings.model_fields["max_pairs_per_prompt"].default, ge=1,
                                          description="DPO pairs per prompt at most (8 or more: the best over every "
                                          "candidate below the gap).")
    max_tokens: int = Field(64, ge=1, description="Tokens per generated answer.")
    seed: int = Field(0, description="Prompt generator and training seed.")
    unseen_kinds: list[str] = Field(["postscript", "title"], description="Instruction kinds never trained on.")
    unseen_prompts: int = Field(24, ge=0, description="Prompts of the unseen kinds evaluated (at most).")
    plain_prompts: int = Field(12, ge=0, description="Prompts with no verifiable instruction evaluated.")
    eval_samples: int = Field(DistillConfig.model_fields["eval_samples"].default, ge=1,
                              description="N=1 samples per prompt, for base and distilled.")
    workdir: Path | None = Field(None, description="Keep the database and checkpoints here (else a temp dir).")
    reuse_log: bool = Field(False, description="Skip the traffic if the workdir has a log.")


def kinds(prompt_text: str) -> set[str]:
    """The instruction kinds a prompt states."""
    return {c.kind for c in detect(prompt_text)}


def plain(texts: list[str]) -> list[LoggedPrompt]:
    """Prompts that were never logged: no best-of-N reference, only base vs distilled N=1."""
    prompts = []
    for text in texts:
        messages = [{"role": "user", "content": text}]
        prompts.append(LoggedPrompt(key=prompt_key(messages), messages=messages, prompt_text=text))
    return prompts


def row(group: str, report: EvalReport, winners: list[str]) -> list[str]:
    """One line of the table: rewards, recovered with its interval, lengths and degeneracy."""
    base = [a for r in report.results for a in r.base]
    new = [a for r in report.results for a in r.new]
    recovered, interval = report.gain_recovered, report.gain_recovered_interval
    # Logged references exist only for prompts from the log (the no-instruction group has none).
    logged_n1, logged_best = ((f"{report.base_n1_logged:.3f}", f"{report.base_best_of_n_logged:.3f}") if winners
                              else ("-", "-"))
    return [
        group, str(report.prompts), f"{logged_n1} / {report.base_n1:.3f}", logged_best,
        f"{report.new_n1:.3f}", f"{report.versus_base.mean:+.3f} [{report.versus_base.lower:+.3f}]",
        "-" if recovered is None or not winners else f"{recovered:.0%} [{interval[0]:.0%}, {interval[1]:.0%}]",
        f"{mean(len(words(a.text)) for a in base):.1f}/"
        f"{mean(len(words(t)) for t in winners) if winners else float('nan'):.1f}/"
        f"{mean(len(words(a.text)) for a in new):.1f}",
        f"{report.base_truncated:.0%}/{report.new_truncated:.0%}",
        f"{mean(repetition(a.text) for a in base):.3f}/{mean(repetition(a.text) for a in new):.3f}",
        f"{sum(len(words(a.text)) < 3 for a in base)}/{sum(len(words(a.text)) < 3 for a in new)}",
    ]


HEADER = ["group", "prompts", "base N=1 logged / sampled", "best-of-N", "distilled N=1", "new−base [LB]",
          "recovered [CI]", "words base/winner/new", "truncated base/new", "repetition base/new", "<3 words base/new"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_field_flags(parser, DistillGainConfig, "bench")
    opts = DistillGainConfig.model_validate(field_values(parser.parse_args(), "bench"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="tao-distill-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Always publish (a margin no reward can miss) so every group can be evaluated; the real gate is
    # applied to the report below and printed.
    settings = Settings(
        models=[with_updates(m, max_tokens=opts.max_tokens) for m in default_models()],
        store=StoreConfig(path=workdir / "tao.db"),
        distill=DistillConfig(method=opts.method, epochs=opts.epochs, rounds=opts.rounds,
                              round=RoundSettings(best_of=opts.round_best_of, rejected=opts.round_rejected),
                              dpo=DPOSettings(pairing=opts.dpo_pairing, max_pairs_per_prompt=opts.dpo_max_pairs_per_prompt),
                              checkpoints_dir=workdir / "checkpoints",
                              seed=opts.seed, min_heldout_prompts=4, eval_samples=opts.eval_samples,
                              gate_margin=-2.0),
        rollout=RolloutConfig(margin=2.0),
    )
    started = time.time()
    if not (opts.reuse_log and (workdir / "tao.db").exists()):
        with serve_in_thread(create_app(settings), startup_timeout_s=300) as url:
            results = send_workload(url + "/v1", settings.distill.model, generate_prompts(opts.prompts, seed=opts.seed),
                                    best_of=opts.best_of, concurrency=8, desc=f"best-of-{opts.best_of} traffic")
        failed = [r for r in results if r.error]
        print(f"traffic: {len(results) - len(failed)} ok, {len(failed)} failed, {time.time() - started:.0f} s")
    traffic_s = time.time() - started

    unseen = set(opts.unseen_kinds)
    outcome = run_distill(settings, since=0.0, exclude=lambda p: bool(kinds(p.prompt_text) & unseen))
    print_outcome(outcome)
    if outcome.report is None or outcome.path is None:
        raise SystemExit(outcome.message)
    verdict = gate(outcome.report, DistillConfig().gate_margin, RolloutConfig().margin)
    distill_s = time.time() - started - traffic_s

    with connection(settings.store.path) as db:
        logged = load_prompts(db, settings.distill.model)
    unseen_prompts = [p for p in logged if kinds(p.prompt_text) & unseen][:opts.unseen_prompts]
    model_config, base_dir = base_weights(settings)
    scorer, z = build_scorer(settings.reward), z_for(settings.rollout.alpha)
    groups = [("held-out, trained kinds", outcome.report,
               [w.text for r in outcome.report.results for w in _winners(logged, r.prompt)])]
    if unseen_prompts:
        report = evaluate(base_dir, outcome.path, unseen_prompts, scorer, model_config, opts.eval_samples,
                          opts.seed, z)
        groups.append((f"unseen kinds ({', '.join(sorted(unseen))})", report,
                       [w.text for p in unseen_prompts for w in p.winners()]))
    if opts.plain_prompts:
        report = evaluate(base_dir, outcome.path, plain(plain_prompts(opts.plain_prompts, seed=opts.seed)), scorer,
                          model_config, opts.eval_samples, opts.seed, z)
        groups.append(("no verifiable instruction", report, []))

    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for name, report, winners in groups:
        print("| " + " | ".join(row(name, report, winners)) + " |")
    answers = workdir / "answers.json"
    answers.write_text(json.dumps({name: [asdict(r) for r in report.results] for name, report, _ in groups}, indent=1))
    print("\n| held-out, trained kinds: kind | prompts | base N=1 | best-of-N | distilled N=1 |\n|---|---|---|---|---|")
    for cells in kind_rows(outcome.report):
        print("| " + " | ".join(cells) + " |")
    print(f"\ngate (gate_margin {DistillConfig().gate_margin:g}, rollout margin {RolloutConfig().margin:g}): "
          f"{'publish' if verdict.publish else 'reject'}: {verdict.reason}")
    print(f"prompts {opts.prompts}, best_of {opts.best_of}, method {opts.method}, epochs {opts.epochs}, "
          f"rounds {opts.rounds} (best-of-{opts.round.best_of}, rejected {opts.round.rejected}), "
          f"dpo pairing {opts.dpo.pairing} (at most {opts.dpo.max_pairs_per_prompt} a prompt), "
          f"seed {opts.seed}, unseen kinds {sorted(unseen)}; traffic {traffic_s:.0f} s, distill {distill_s:.0f} s, "
          f"total {time.time() - started:.0f} s; workdir {workdir} (every sampled answer: {answers.name})")


def kind_rows(report: EvalReport) -> list[list[str]]:
    """Per instruction kind of the group's prompts (a prompt with two kinds counts in both): where the
    gain is, and which kinds best-of-N could fix but the distilled model did not learn."""
    by_kind: dict[str, list[PromptResult]] = {}
    for r in report.results:
        for kind in kinds(r.prompt):
            by_kind.setdefault(kind, []).append(r)
    rows = []
    for kind, results in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        best = [r.logged_best_of_n for r in results if r.logged_best_of_n is not None]
        rows.append([kind, str(len(results)), f"{mean(r.base_score for r in results):.3f}",
                     f"{mean(best):.3f}" if best else "-", f"{mean(r.new_score for r in results):.3f}"])
    return rows


def _winners(logged: list[LoggedPrompt], prompt_text: str):
    return next((p.winners() for p in logged if p.prompt_text == prompt_text), [])


if __name__ == "__main__":
    main()
