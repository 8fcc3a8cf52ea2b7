"""Gradual rollout of distilled checkpoints: arms, the traffic split, and the promotion policy.

Per public model there is at most one rollout. While it is a **canary**, requests are split
between the incumbent arm (`base`: the base weights at the model's best_of) and the candidate
arm (`candidate`: the checkpoint's LoRA adapter at `rollout.candidate_best_of`, normally 1) by a
stable hash of the `user` field (else the API key, else the request id), so a user stays on one
arm. A sampled share of incumbent requests is also answered by the candidate in the background
(arm `shadow`, logged, never returned) so both arms are compared on the same prompts too.

**The statistic** (`gateway.stats`, the same one the eval gate uses). The reward comparison is
paired: for every incumbent request that was also answered in shadow, d = candidate's shadow
score − incumbent's best-of-N winner score on the same prompt (only incumbent requests that really
generated more than one candidate, and shadow replies at the candidate's N). The policy looks at
the pairs at planned moments only, every `pairs_per_look` pairs, at most `max_looks` times, each
look at z = Φ⁻¹(1 − alpha / max_looks), so the chance of a wrong promotion (or a wrong rollback)
stays below `alpha` across all looks (re-testing a fixed z every few seconds does not). At a look,
with the mean of d and its one-sided bounds mean ± z·sd/√pairs:
- upper bound < −margin: roll back (the candidate is confidently worse than allowed);
- lower bound ≥ −margin: climb to the next share (10 → 25 → 50 → 100 %); past the last, promote;
- otherwise hold, except at the last look, where a candidate not shown within the margin is
  rolled back (the test is truncated: production keeps the incumbent when in doubt).
Independently of the looks, the candidate is rolled back when its error rate exceeds the
incumbent's by more than max_error_rate_increase (after min_requests_rollback candidate requests).
Every start, look, step, promotion, rollback and failure is a `rollout_events` row with the numbers. A
rollback also marks the checkpoint `rolled_back`, so the next distill run uses its data window again.

After **promotion** the checkpoint serves all traffic at its best_of (arm `promoted`), so the
served cost drops by the incumbent's N. The state lives in the store's `rollouts` table: a
restarted gateway reloads the adapter and resumes the same split.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from statistics import fmean, variance
from typing import Any

import sqlite_utils

from gateway.backends import Backend
from gateway.buckets import stable_fraction
from gateway.config import ModelConfig, RolloutConfig, Settings
from gateway.errors import APIError
from gateway.metrics import Metrics
from gateway.stats import LookSchedule, paired_bound
from gateway.store import (
    Arm,
    ArmOutcomes,
    Checkpoint,
    CheckpointStatus,
    Rollout,
    RolloutState,
    ShadowPair,
    Store,
    active_rollouts,
    arm_outcomes,
    get_checkpoint,
    get_rollout,
    save_rollout,
    set_checkpoint_status,
    shadow_pairs,
)

log = logging.getLogger(__name__)

INCUMBENT_ARMS = (Arm.BASE,)
CANDIDATE_ARMS = (Arm.CANDIDATE, Arm.SHADOW)  # every reply of the checkpoint during the canary


def adapter_name(checkpoint_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", checkpoint_id)


@dataclass
class Route:
    """Where one request goes."""

    arm: Arm
    adapter: str | None
    default_best_of: int
    model_version: str | None


@dataclass
class ArmStats:
    requests: int  # all logged requests of the arm(s), errors included
    errors: int
    scored: int  # replies with a reward
    mean: float
    variance: float
    tokens_per_request: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Decision:
    action: str  # hold | advance | promote | rollback
    reason: str
    numbers: dict[str, Any]
    look: int | None = None  # the look this decision was taken at, when it was one


def arm_stats(outcomes: ArmOutcomes) -> ArmStats:
    """The policy's view of an arm: counts, error rate, reward mean and (sample) variance."""
    rewards = outcomes.rewards
    return ArmStats(requests=outcomes.requests, errors=outcomes.errors, scored=len(rewards),
                    mean=fmean(rewards) if rewards else 0.0, variance=variance(rewards) if len(rewards) > 1 else 0.0,
                    tokens_per_request=outcomes.tokens_per_request)


def look_schedule(config: RolloutConfig) -> LookSchedule:
    return LookSchedule(min_pairs=config.pairs_per_look, max_looks=config.max_looks, alpha=config.alpha)


def decide_at_look(differences: list[float], look: int, schedule: LookSchedule, margin: float) -> Decision:
    """The reward rule at planned look `look` over the paired differences (candidate − incumbent)."""
    bound = paired_bound(differences, schedule.z)
    numbers = {"look": look, "max_looks": schedule.max_looks, "margin": margin, "alpha": schedule.alpha,
               **bound.as_dict()}
    where = f"look {look}/{schedule.max_looks}, {bound.pairs} pairs: difference {bound.mean:+.4f}"
    if bound.upper < -margin:
        return Decision("rollback", f"{where}, upper bound {bound.upper:+.4f} < -{margin:g}: the candidate is "
                        "confidently worse than allowed", numbers, look)
    if bound.lower >= -margin:
        return Decision("advance", f"{where}, lower bound {bound.lower:+.4f} >= -{margin:g}", numbers, look)
    if schedule.is_last(look):
        return Decision("rollback", f"{where}, bounds [{bound.lower:+.4f}, {bound.upper:+.4f}]: not shown within "
                        f"-{margin:g} of the incumbent by the last look", numbers, look)
    return Decision("hold", f"{where}, bounds [{bound.lower:+.4f}, {bound.upper:+.4f}] straddle -{margin:g}",
                    numbers, look)


def decide(pairs: list[ShadowPair], looks_taken: int, candidate: ArmStats, incumbent: ArmStats,
           config: RolloutConfig) -> Decision:
    """The policy: the error-rate rule at any time; the reward rule only at a new planned look."""
    error_gap = candidate.error_rate - incumbent.error_rate
    if candidate.requests >= config.min_requests_rollback and error_gap > config.max_error_rate_increase:
        return Decision("rollback", f"candidate error rate {candidate.error_rate:.1%} exceeds the incumbent's "
                        f"{incumbent.error_rate:.1%} by more than {config.max_error_rate_increase:.1%}",
                        {"candidate": asdict(candidate), "incumbent": asdict(incumbent)})
    schedule = look_schedule(config)
    look = looks_taken + 1  # one look at a time, each over the first pairs_for(look) pairs
    needed = schedule.pairs_for(look)
    if len(pairs) < needed:
        return Decision("hold", f"{len(pairs)} of the {needed} shadow pairs for look {look}", {})
    return decide_at_look([p.difference for p in pairs[:needed]], look, schedule, config.margin)


class RolloutManager:
    """The rollouts of every model: routing per request, the policy loop, and operator control.

    Each public method that touches the store opens one connection for its unit of work and closes
    it; the async ones do that work in a thread, off the event loop.
    """

    def __init__(self, settings: Settings, backends: dict[str, Backend], store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.config = settings.rollout
        self.backends = backends
        self.store = store
        self.metrics = metrics
        self.rollouts: dict[str, Rollout] = {}  # the active (canary or promoted) rollout of each model
        self._rng = random.Random()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop, for work decided on threads
        self._unloads: set[asyncio.Task] = set()

    # ---- lifecycle ----------------------------------------------------------------------------
    async def resume(self) -> None:
        """Reload active rollouts from the store (after a restart) and their adapters."""
        self._loop = asyncio.get_running_loop()
        for rollout in await asyncio.to_thread(self._stored_active):
            if rollout.model not in self.backends:
                continue
            try:
                await self.backends[rollout.model].load_adapter(adapter_name(rollout.checkpoint_id),
                                                                rollout.adapter_path)
            except Exception as exc:  # noqa: BLE001 - the incumbent keeps serving
                await asyncio.to_thread(self._transition, replace(rollout, state=RolloutState.FAILED, share=0.0),
                                        "failed", f"adapter reload failed: {exc}", {})
                continue
            self.rollouts[rollout.model] = rollout
            self.metrics.rollout_share.labels(rollout.model).set(rollout.share)
            log.info("resumed rollout of %s on %s: %s at %g%%", rollout.checkpoint_id, rollout.model, rollout.state,
                     rollout.share)

    def start_policy(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._policy_loop())

    async def stop_policy(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _policy_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval_s)
            for model in [m for m, r in self.rollouts.items() if r.state == RolloutState.CANARY]:
                try:
                    await asyncio.to_thread(self.check, model)
                except Exception:  # noqa: BLE001 - the loop must survive one bad check
                    log.exception("rollout check of %s failed", model)

    # ---- routing ------------------------------------------------------------------------------
    def route(self, model: ModelConfig, key: str, pinned: str | None) -> Route:
        rollout = self.rollouts.get(model.name)
        base = Route(Arm.BASE, None, model.best_of, None)
        if rollout is None:
            if pinned == Arm.CANDIDATE:
                raise APIError(400, f"model {model.name} has no rollout to pin", param="X-TAO-Arm")
            return base
        candidate = Route(Arm.CANDIDATE, adapter_name(rollout.checkpoint_id), rollout.candidate_best_of,
                          rollout.checkpoint_id)
        if rollout.state == RolloutState.PROMOTED:
            return replace(candidate, arm=Arm.PROMOTED)
        if pinned is not None:
            return candidate if pinned == Arm.CANDIDATE else base
        return candidate if stable_fraction(key) * 100 < rollout.share else base

    def shadow(self, model: str) -> Route | None:
        """For an incumbent request: a candidate route to answer it in the background, if sampled."""
        rollout = self.rollouts.get(model)
        if (rollout is None or rollout.state != RolloutState.CANARY
                or self._rng.random() >= self.config.shadow_fraction):
            return None
        return Route(Arm.SHADOW, adapter_name(rollout.checkpoint_id), rollout.candidate_best_of,
                     rollout.checkpoint_id)

    # ---- control ------------------------------------------------------------------------------
    async def start(self, model: str, checkpoint: str, canary: float | None, best_of: int | None,
                    force: bool = False) -> dict[str, Any]:
        if model not in self.backends:
            raise APIError(404, f"model {model!r} does not exist", type="not_found_error", param="model",
                           code="model_not_found")
        current = self.rollouts.get(model)
        if current is not None and current.state == RolloutState.CANARY:
            raise APIError(409, f"model {model} already has a canary of {current.checkpoint_id}; promote or "
                           "roll it back first", code="rollout_active")
        found = await asyncio.to_thread(self._servable_checkpoint, checkpoint, force)
        share = canary if canary is not None else self.config.steps[0]
        now = time.time()
        rollout = Rollout(model=model, checkpoint_id=checkpoint, adapter_path=found.path, state=RolloutState.CANARY,
                          share=share, candidate_best_of=best_of or self.config.candidate_best_of,
                          incumbent_best_of=self.settings.model_by_name(model).best_of, started_at=now,
                          step_started_at=now, updated_at=now)
        try:  # load before the arm takes any traffic
            await self.backends[model].load_adapter(adapter_name(checkpoint), found.path)
        except Exception as exc:  # noqa: BLE001
            await asyncio.to_thread(self._transition, replace(rollout, state=RolloutState.FAILED, share=0.0),
                                    "failed", f"adapter load failed: {exc}", {})
            raise APIError(502, f"loading checkpoint {checkpoint} failed; the incumbent keeps 100 % of traffic: "
                           f"{exc}", type="upstream_error", code="adapter_load_failed") from exc
        return await asyncio.to_thread(self._transition, rollout, "start", f"canary at {share:g}%", {"share": share})

    def promote(self, model: str, reason: str = "promoted by an operator", numbers: dict | None = None) -> dict:
        rollout = self._active(model)
        with self.store.connection() as db:
            self._promote(db, rollout, reason, numbers or {})
            return self._describe(db, model)

    def rollback(self, model: str, reason: str = "rolled back by an operator", numbers: dict | None = None) -> dict:
        rollout = self._active(model)
        with self.store.connection() as db:
            self._rollback(db, rollout, reason, numbers or {})
            return self._describe(db, model)

    def check(self, model: str) -> Decision:
        """Run the policy once for `model` and apply its decision."""
        rollout = self._active(model)
        if rollout.state != RolloutState.CANARY:
            return Decision("hold", "not a canary", {})
        cfg = self.config
        with self.store.connection() as db:
            since = rollout.started_at
            candidate = arm_stats(arm_outcomes(db, model, CANDIDATE_ARMS, since))
            incumbent = arm_stats(arm_outcomes(db, model, INCUMBENT_ARMS, since))
            pairs = shadow_pairs(db, model, since=since, candidate_n=rollout.candidate_best_of)
            decision = decide(pairs, rollout.looks, candidate, incumbent, cfg)
            if decision.look is not None:
                rollout = replace(rollout, looks=decision.look)
            if decision.action == "rollback":
                self._rollback(db, rollout, decision.reason, decision.numbers)
            elif decision.action == "advance":
                higher = [s for s in cfg.steps if s > rollout.share]
                if not higher or higher[0] >= 100:
                    decision.action = "promote"
                    self._promote(db, rollout, decision.reason, decision.numbers)
                else:
                    self._set(db, replace(rollout, share=higher[0], step_started_at=time.time()), "step",
                              f"{rollout.share:g}% → {higher[0]:g}%: {decision.reason}", decision.numbers)
            elif decision.look is not None:
                self._set(db, rollout, "look", decision.reason, decision.numbers)
        return decision

    def status(self) -> list[dict[str, Any]]:
        with self.store.connection() as db:
            return [self._describe(db, m.name) for m in self.settings.models]

    # ---- state ----------------------------------------------------------------------------------
    def _active(self, model: str) -> Rollout:
        rollout = self.rollouts.get(model)
        if rollout is None:
            raise APIError(404, f"model {model!r} has no active rollout", type="not_found_error",
                           param="model", code="no_rollout")
        return rollout

    def _stored_active(self) -> list[Rollout]:
        with self.store.connection() as db:
            return active_rollouts(db)

    def _servable_checkpoint(self, checkpoint_id: str, force: bool) -> Checkpoint:
        """The registered checkpoint, if it is an adapter with files that the gate did not refuse (unless
        forced); else the error that says why not."""
        with self.store.connection() as db:
            found = get_checkpoint(db, checkpoint_id)
        if found is None:
            raise APIError(404, f"checkpoint {checkpoint_id!r} is not registered (see `tao distill`)",
                           type="not_found_error", param="checkpoint", code="checkpoint_not_found")
        if found.is_reward_model:
            raise APIError(400, f"checkpoint {checkpoint_id} is a reward model (from `tao reward train`): it scores "
                           f"replies (reward: {{kind: hf, path: {found.path}}}) and cannot serve them",
                           param="checkpoint", code="not_servable")
        if not found.path:
            raise APIError(400, f"checkpoint {checkpoint_id} has no files (status {found.status})", param="checkpoint")
        if found.status in (CheckpointStatus.REJECTED, CheckpointStatus.RETIRED) and not force:
            raise APIError(409, f"checkpoint {checkpoint_id} is {found.status}; start it anyway with \"force\": true",
                           param="checkpoint", code="checkpoint_not_candidate")
        return found

    def _transition(self, rollout: Rollout, event: str, reason: str, numbers: dict[str, Any]) -> dict[str, Any]:
        """Record a new state in one unit of work; returns the model's description."""
        with self.store.connection() as db:
            self._set(db, rollout, event, reason, numbers)
            return self._describe(db, rollout.model)

    def _promote(self, db: sqlite_utils.Database, rollout: Rollout, reason: str, numbers: dict[str, Any]) -> None:
        self._set(db, replace(rollout, state=RolloutState.PROMOTED, share=100.0), "promote", reason, numbers)
        set_checkpoint_status(db, rollout.checkpoint_id, CheckpointStatus.PROMOTED)

    def _rollback(self, db: sqlite_utils.Database, rollout: Rollout, reason: str, numbers: dict[str, Any]) -> None:
        self._set(db, replace(rollout, state=RolloutState.ROLLED_BACK, share=0.0), "rollback", reason, numbers)
        self.rollouts.pop(rollout.model, None)
        set_checkpoint_status(db, rollout.checkpoint_id, CheckpointStatus.ROLLED_BACK)
        self._unload_later(rollout)

    def _unload_later(self, rollout: Rollout) -> None:
        """Free the rolled-back adapter on its backend (from whichever thread decided the rollback).
        A failure only costs the server memory, so it is logged, not raised."""
        if self._loop is None:
            return

        async def unload() -> None:
            try:
                await self.backends[rollout.model].unload_adapter(adapter_name(rollout.checkpoint_id))
            except Exception as exc:  # noqa: BLE001
                log.warning("unloading adapter of %s from %s failed: %s", rollout.checkpoint_id, rollout.model, exc)

        def schedule() -> None:
            task = self._loop.create_task(unload())
            self._unloads.add(task)
            task.add_done_callback(self._unloads.discard)

        self._loop.call_soon_threadsafe(schedule)

    def _set(self, db: sqlite_utils.Database, rollout: Rollout, event: str, reason: str,
             numbers: dict[str, Any]) -> None:
        rollout = replace(rollout, updated_at=time.time())
        save_rollout(db, rollout, event, {"reason": reason, **numbers})
        if rollout.active:
            self.rollouts[rollout.model] = rollout
        self.metrics.rollout_share.labels(rollout.model).set(rollout.share if rollout.active else 0)
        self.metrics.rollout_events.labels(rollout.model, event).inc()
        log.info("rollout %s of %s on %s: %s", event, rollout.checkpoint_id, rollout.model, reason)

    def _describe(self, db: sqlite_utils.Database, model: str) -> dict[str, Any]:
        rollout = get_rollout(db, model)
        if rollout is None:
            return {"model": model, "state": None}
        since = rollout.step_started_at
        arms = {name: asdict(arm_stats(arm_outcomes(db, model, arms, since))) for name, arms in
                (("incumbent", INCUMBENT_ARMS), ("candidate", CANDIDATE_ARMS))}
        before = arm_outcomes(db, model, INCUMBENT_ARMS, 0.0)  # the incumbent at its best_of
        after = arm_outcomes(db, model, (Arm.PROMOTED,), rollout.started_at)
        pairs = shadow_pairs(db, model, since=rollout.started_at, candidate_n=rollout.candidate_best_of)
        bound = paired_bound([p.difference for p in pairs], look_schedule(self.config).z)
        return {**asdict(rollout), "arms_this_step": arms, "shadow_pairs": bound.as_dict(),
                "tokens_per_request": {"before": before.tokens_per_request,
                                       "after": after.tokens_per_request if after.requests else None}}
