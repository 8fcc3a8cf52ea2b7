"""One distill run, end to end: lock → window → dataset → train → eval gate → publish or reject.

Exit codes (also `DistillOutcome.exit_code`): 0 published, 2 too little data, 3 rejected by the
gate, 4 another run holds the lock, 5 the promoted checkpoint it would start from or be judged
against has lost its adapter files.

After a promotion the run learns from the promoted checkpoint's own best-of-N traffic (arm explore)
and is judged against that checkpoint, not the base weights (`distill.start_from` says what it trains).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlite_utils
from tqdm.auto import tqdm

from distill.dataset import LoggedPrompt, build_rows, load_prompts, renders_tools, split, to_dataset, with_samples
from distill.evaluate import EvalReport, evaluate, gate
from distill.publish import new_checkpoint_id, publish, register, remove_stale_staging, staging_dir
from distill.sampling import Answer, PolicySampler
from distill.train import METHODS, TrainResult, uses_bf16
from gateway.config import EMBEDDED_MODEL, DistillConfig, ModelConfig, Settings, with_updates
from gateway.rewards import Scorer, build_scorer
from gateway.rollout import sequential_plan
from gateway.stats import z_for
from gateway.store import (
    CheckpointStatus,
    LockHeld,
    Store,
    exclusive,
    last_distilled_until,
    promoted_incumbent,
    record_distill_run,
)

log = logging.getLogger(__name__)

PUBLISHED, TOO_LITTLE_DATA, REJECTED, LOCKED, INCUMBENT_MISSING = 0, 2, 3, 4, 5
ROUND_ADAPTER = "round"  # the adapter an iterated round samples from
OUTCOMES = {PUBLISHED: "published", TOO_LITTLE_DATA: "too_little_data", REJECTED: "rejected", LOCKED: "locked",
            INCUMBENT_MISSING: "incumbent_missing"}


@dataclass
class DistillOutcome:
    exit_code: int
    message: str
    checkpoint_id: str | None = None
    path: Path | None = None
    report: EvalReport | None = None
    counts: dict[str, float] = field(default_factory=dict)  # rows per stage and round; rounds' in-sample reward


def base_weights(settings: Settings) -> tuple[ModelConfig, Path]:
    """The served model's config and the weights directory to fine-tune."""
    model = settings.model_by_name(settings.distill.model)
    if model is None:
        raise ValueError(f"distill.model {settings.distill.model!r} is not among the configured models")
    if settings.distill.base_model:
        return model, Path(settings.distill.base_model)
    if model.backend != "local":
        raise ValueError(f"model {model.name} is served by {model.backend}; set distill.base_model to its "
                         "weights directory so it can be fine-tuned here")
    if model.model == EMBEDDED_MODEL:
        from gateway.embedded import embedded_model_dir

        return model, embedded_model_dir()
    return model, Path(model.model)


def stages(cfg: DistillConfig) -> list[str]:
    """The training functions `method` runs in turn on one adapter ("sft+dpo": SFT, then DPO)."""
    return cfg.method.split("+")


def train_rounds(cfg: DistillConfig, train: list[LoggedPrompt], heldout: list[LoggedPrompt], base_dir: Path,
                 staging: Path, scorer: Scorer, sampling: ModelConfig, counts: dict[str, Any],
                 start_adapter: Path | None = None) -> TrainResult:
    """Each stage of `method` on one adapter (a new one, or `start_adapter` trained further; its files
    are never written); then `rounds - 1` iterated rounds: sample
    `round.best_of` answers per training prompt from the adapter (through the local backend, with
    serving's sampling settings), score them, pair them with the logged candidates (`round.rejected`),
    and train the adapter again. A round whose samples give no rows leaves the adapter as it is."""
    adapter: Path | None = start_adapter
    result: TrainResult | None = None
    data, run_stages = train, stages(cfg)
    grpo_sampling = {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}
    for round_no in range(1, cfg.rounds + 1):
        if round_no > 1:  # the sampler renders no tools: prompts that use them keep their logged answers only
            text_only = [p for p in train if not p.uses_tools]
            samples = _round_samples(base_dir, adapter, text_only, sampling, scorer, cfg, round_no)
            counts[f"round{round_no}_policy_reward"] = _log_policy_reward(round_no, text_only, samples)
            data = with_samples(text_only, samples, f"round{round_no}") + [p for p in train if p.uses_tools]
            run_stages = [cfg.round.method or run_stages[-1]]
        for stage in run_stages:
            rows = build_rows(stage, data, cfg)
            counts[f"round{round_no}_{stage}_rows"] = len(rows)
            if not rows:  # a round whose samples gave nothing to learn: the adapter stays as it is
                log.info("round %d: no %s rows; %s is not trained again", round_no, stage, adapter)
                continue
            heldout_rows = build_rows(stage, heldout, cfg) if stage != "grpo" else []
            out = staging / f"round{round_no}-{stage}" / "adapter"
            result = METHODS[stage](to_dataset(rows), base_dir, out, out.parent, cfg, scorer=scorer,
                                    eval_dataset=to_dataset(heldout_rows) if heldout_rows else None,
                                    init_adapter=adapter, **(grpo_sampling if stage == "grpo" else {}))
            adapter = result.adapter_dir
    final = staging / "adapter"
    shutil.copytree(adapter, final)
    return replace(result, adapter_dir=final)


def _log_policy_reward(round_no: int, train: list[LoggedPrompt], samples: list[list[Answer]]) -> float:
    """The adapter's mean reward on the training prompts, beside the log's N=1 and best-of-N there: a
    round's progress in-sample, where a shortfall means too little training rather than too little
    transfer (on one benchmark log: 0.528, 0.653, 0.743, 0.784, 0.807 after rounds 1-5, where the logged
    N=1 was 0.448 and best-of-8 0.729)."""
    scores = [a.score for answers in samples for a in answers]
    policy = sum(scores) / len(scores) if scores else 0.0
    n1 = [p.n1_score for p in train if p.n1_score is not None]
    best = [p.best_of_n_score for p in train if p.best_of_n_score is not None]
    log.info("round %d: the adapter after round %d scores %.3f on the %d training prompts (logged N=1 %.3f, "
             "best-of-N %.3f)", round_no, round_no - 1, policy, len(train), sum(n1) / max(len(n1), 1),
             sum(best) / max(len(best), 1))
    return round(policy, 4)


def _round_samples(base_dir: Path, adapter: Path, prompts: list[LoggedPrompt], sampling: ModelConfig,
                   scorer: Scorer, cfg: DistillConfig, round_no: int) -> list[list[Answer]]:
    """`round.best_of` scored answers per prompt from the adapter, loaded as serving loads it (merged
    into a copy of the weights), in bf16 where `distill.bf16` says so (1.7–1.9× the tokens/s of fp32
    on a CPU with AVX512-BF16)."""
    sampling = with_updates(sampling, dtype="bfloat16" if uses_bf16(cfg) else "float32")

    async def sample() -> list[list[Answer]]:
        async with PolicySampler(base_dir, sampling, scorer, {ROUND_ADAPTER: adapter},
                                 on_serving=cfg.sample_on == "serving") as sampler:
            answers: list[list[Answer]] = []
            with tqdm(total=len(prompts), desc=f"round {round_no}: best-of-{cfg.round.best_of} from the adapter",
                      unit="prompt") as progress:
                for i, chunk in enumerate(sampler.chunks(prompts, cfg.round.best_of)):
                    answers += await sampler.answers(chunk, cfg.round.best_of, cfg.seed + 1000 * round_no + i,
                                                     ROUND_ADAPTER)
                    progress.update(len(chunk))
            return answers

    return asyncio.run(sample())


def run_distill(settings: Settings, *, since: float | None = None, until: float | None = None,
                exclude: Callable[[LoggedPrompt], bool] | None = None) -> DistillOutcome:
    """One run, on one connection held for its whole length, under the store's distill lock (a lease).
    `exclude` leaves matching prompts out of training and of the gate (the distill benchmark holds
    out whole instruction kinds this way, to measure generalisation)."""
    store = Store(settings.store.path)  # creates the schema on a new database
    started = time.time()
    try:
        with exclusive(settings.store.path, "distill", settings.distill.lock_ttl_s), store.connection() as db:
            outcome = _run_locked(settings, db, since, until, exclude)
    except LockHeld as exc:
        outcome = DistillOutcome(LOCKED, f"another distill run is active: {exc}")
    except Exception as exc:
        with store.connection() as db:
            record_distill_run(db, "failed", 1, f"{type(exc).__name__}: {exc}", started)
        raise
    with store.connection() as db:
        record_distill_run(db, OUTCOMES[outcome.exit_code], outcome.exit_code, outcome.message, started)
    return outcome


def serving_best_of(settings: Settings, report: EvalReport) -> int:
    """The N the checkpoint's rollout arm will serve at: `rollout.candidate_best_of`, or with `auto`
    the cheapest k the gate's samples predict within the margin of the logged best-of-N."""
    configured = settings.rollout.candidate_best_of
    return report.chosen_best_of(sequential_plan(settings.rollout)) if configured == "auto" else configured


def learnable_tool_prompts(settings: Settings, prompts: list[LoggedPrompt]) -> tuple[list[LoggedPrompt], int]:
    """The prompts distill may learn from, and how many that use tools were left out: all of those when
    the base model's chat template cannot render tools (never train a tool call without its tools)."""
    using = [p for p in prompts if p.uses_tools]
    if not using:
        return prompts, 0
    from transformers import AutoTokenizer

    if renders_tools(AutoTokenizer.from_pretrained(base_weights(settings)[1])):
        return prompts, 0
    log.warning("%d prompts use tools, and the chat template of %s cannot render tools: they are left out",
                len(using), settings.distill.model)
    return [p for p in prompts if not p.uses_tools], len(using)


def _run_locked(settings: Settings, db: sqlite_utils.Database, since: float | None, until: float | None,
                exclude: Callable[[LoggedPrompt], bool] | None) -> DistillOutcome:
    cfg = settings.distill
    checkpoints_dir = cfg.checkpoints_dir
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_staging(checkpoints_dir):
        log.warning("removed %s left by an interrupted run", stale)

    incumbent = promoted_incumbent(db, cfg.model)
    if incumbent is not None and not (Path(incumbent.adapter_path) / "adapter_config.json").is_file():
        return DistillOutcome(
            INCUMBENT_MISSING,
            f"the promoted checkpoint {incumbent.checkpoint_id} of {cfg.model} has no adapter at "
            f"{incumbent.adapter_path}: a new checkpoint can be neither trained from it nor judged against it. "
            f"Restore its files, or go back to the base weights with `tao rollout rollback {cfg.model}`.")
    from_incumbent = incumbent is not None and cfg.start_from == "incumbent"
    until = until or time.time()
    if since is None:  # training from base weights that a promotion has replaced: the whole log
        since = last_distilled_until(db, cfg.model) if from_incumbent or incumbent is None else 0.0
    prompts = [p for p in load_prompts(db, cfg.model, since=since, until=until, with_tools=True)
               if not (exclude and exclude(p))]
    prompts, skipped_tools = learnable_tool_prompts(settings, prompts)
    train, heldout = split(prompts, cfg.holdout_fraction)
    heldout = [p for p in heldout if not p.uses_tools]  # the gate samples answers without tools
    rows = build_rows(stages(cfg)[0], train, cfg)
    counts = {"prompts": len(prompts), "train_prompts": len(train), "heldout_prompts": len(heldout),
              "train_rows": len(rows), "skipped_tool_prompts": skipped_tools}
    window = f"since {time.ctime(since)}" if since else "from the start of the log"
    log.info("data %s: %d prompts (%d train, %d held out) → %d %s rows; training %s", window, len(prompts),
             len(train), len(heldout), len(rows), cfg.method,
             f"promoted {incumbent.checkpoint_id} further" if from_incumbent else "a new adapter on the base weights")
    if len(rows) < cfg.min_train_prompts or len(heldout) < cfg.min_heldout_prompts:
        return DistillOutcome(
            TOO_LITTLE_DATA,
            f"too little data to distill {cfg.model} with {cfg.method}: {len(rows)} training rows "
            f"(need {cfg.min_train_prompts}) and {len(heldout)} held-out prompts (need "
            f"{cfg.min_heldout_prompts}) in {len(prompts)} logged prompts {window}. Serve more best-of-N "
            "traffic, or lower distill.min_train_prompts / dpo.min_gap / sft.margin.",
            counts=counts)

    model_config, base_dir = base_weights(settings)
    scorer = build_scorer(settings.reward)
    checkpoint_id = new_checkpoint_id(cfg.model, cfg.method)
    staging = staging_dir(checkpoints_dir, checkpoint_id)
    try:
        result = train_rounds(cfg, train, heldout, base_dir, staging, scorer, model_config, counts,
                              start_adapter=Path(incumbent.adapter_path) if from_incumbent else None)
        report = evaluate(base_dir, result.adapter_dir, heldout, scorer, model_config, cfg.eval_samples, cfg.seed,
                          z=z_for(settings.rollout.alpha),
                          incumbent=incumbent, on_serving=cfg.sample_on == "serving")
        best_of = serving_best_of(settings, report)
        verdict = gate(report, cfg.gate_margin, settings.rollout.margin, best_of)
        metrics = {"eval": report.as_dict(), "best_of": best_of, "counts": counts,
                   "incumbent": incumbent.checkpoint_id if incumbent else None,
                   "started_from": incumbent.checkpoint_id if from_incumbent else "base", "train": result.metrics, "steps": result.steps,
                   "config": cfg.model_dump(mode="json"), "reward": settings.reward.model_dump(mode="json")}
        row = {"id": checkpoint_id, "created_at": time.time(), "model": cfg.model, "base_model": str(base_dir),
               "method": cfg.method, "data_since": since, "data_until": until, "metrics": metrics}
        if not verdict.publish:
            register(db, {**row, "path": None, "status": CheckpointStatus.REJECTED})
            return DistillOutcome(REJECTED, f"rejected by the eval gate: {verdict.reason}",
                                  checkpoint_id=checkpoint_id, report=report, counts=counts)
        final = publish(staging, checkpoints_dir, checkpoint_id, metadata=row,
                        merge_base=base_dir if cfg.merge else None)
        register(db, {**row, "path": str(final / "adapter"), "status": CheckpointStatus.CANDIDATE})
        return DistillOutcome(PUBLISHED, f"published {checkpoint_id} at {final / 'adapter'}: {verdict.reason}",
                              checkpoint_id=checkpoint_id, path=final / "adapter", report=report, counts=counts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
