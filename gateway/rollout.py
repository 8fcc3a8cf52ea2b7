"""Gradual rollout of distilled checkpoints: arms, the traffic split, and the promotion policy.

Per public model there is at most one rollout. While it is a **canary**, requests are split
between the incumbent arm (`base`: the base weights at the model's best_of) and the candidate
arm (`candidate`: the checkpoint's LoRA adapter at `rollout.candidate_best_of`, normally 1) by a
stable hash of the `user` field (else the API key, else the request id), so a user stays on one
arm. A sampled share of incumbent requests is also answered by the candidate in the background
(arm `shadow`, logged, never returned) so both arms are compared on the same prompts too.

**The statistic.** Every `check_interval_s`, over the requests logged since the current step
began: candidate reward c (candidate + shadow replies) and incumbent best-of-N reward b, their
means, variances and counts. With d = mean(c) − mean(b) and se = sqrt(var(c)/n_c + var(b)/n_b):
- roll back at once when the upper bound d + z·se < −margin (confidently worse than allowed), or
  when the candidate's error rate exceeds the incumbent's by more than max_error_rate_increase
  (each once both arms have min_requests_rollback scored replies; the error rule needs only the
  candidate's);
- step up (10 → 25 → 50 → 100 %) when the lower bound d − z·se ≥ −margin over at least
  min_requests candidate replies; passing the last step promotes;
- otherwise hold. (z = 1.645: one-sided 95 % normal bounds on the difference of means.)
Every start, step, promotion, rollback and failure is a `rollout_events` row with the numbers.

After **promotion** the checkpoint serves all traffic at its best_of (arm `promoted`), so the
served cost drops by the incumbent's N. The state lives in the store's `rollouts` table: a
restarted gateway reloads the adapter and resumes the same split.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from gateway.backends import Backend
from gateway.config import ModelConfig, Settings
from gateway.errors import APIError
from gateway.metrics import Metrics
from gateway.store import Store

log = logging.getLogger(__name__)

BASE_ARM, CANDIDATE_ARM, SHADOW_ARM, PROMOTED_ARM = "base", "candidate", "shadow", "promoted"
ARMS = (BASE_ARM, CANDIDATE_ARM)
CANARY, PROMOTED, ROLLED_BACK, FAILED = "canary", "promoted", "rolled_back", "failed"


def bucket(key: str) -> float:
    """A stable position in [0, 100) for a routing key."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0x100000000 * 100


def adapter_name(checkpoint_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", checkpoint_id)


@dataclass
class Route:
    """Where one request goes."""

    arm: str
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


def arm_stats(db, model: str, arms: tuple[str, ...], since: float) -> ArmStats:
    """Counts, error rate, reward mean/variance and tokens per request of the arms since `since`."""
    marks = ",".join("?" for _ in arms)
    params = [model, *arms, since]
    total, errors, tokens = db.execute(
        f"SELECT COUNT(*), SUM(r.status = 'error'), AVG(r.completion_tokens) FROM requests r "
        f"WHERE r.model = ? AND r.arm IN ({marks}) AND r.created_at >= ?", params).fetchone()
    rewards = [row[0] for row in db.execute(
        f"SELECT c.score FROM requests r JOIN candidates c ON c.request_id = r.id AND c.won = 1 "
        f"WHERE r.model = ? AND r.arm IN ({marks}) AND r.created_at >= ? AND r.status = 'ok' "
        f"AND c.score IS NOT NULL", params).fetchall()]
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    variance = sum((x - mean) ** 2 for x in rewards) / (len(rewards) - 1) if len(rewards) > 1 else 0.0
    return ArmStats(requests=total or 0, errors=errors or 0, scored=len(rewards), mean=mean, variance=variance,
                    tokens_per_request=float(tokens or 0.0))


def decide(candidate: ArmStats, incumbent: ArmStats, settings_margin: float, z: float, min_requests: int,
           min_requests_rollback: int, max_error_rate_increase: float) -> Decision:
    diff = candidate.mean - incumbent.mean
    se = math.sqrt(candidate.variance / max(candidate.scored, 1) + incumbent.variance / max(incumbent.scored, 1))
    numbers = {"candidate": asdict(candidate), "incumbent": asdict(incumbent), "difference": diff,
               "lower_bound": diff - z * se, "upper_bound": diff + z * se, "margin": settings_margin, "z": z}
    error_gap = candidate.error_rate - incumbent.error_rate
    if candidate.requests >= min_requests_rollback and error_gap > max_error_rate_increase:
        return Decision("rollback", f"candidate error rate {candidate.error_rate:.1%} exceeds the incumbent's "
                        f"{incumbent.error_rate:.1%} by more than {max_error_rate_increase:.1%}", numbers)
    # Both means need some evidence before a normal bound on their difference means anything.
    comparable = incumbent.scored >= max(2, min_requests_rollback)
    if comparable and candidate.scored >= min_requests_rollback and diff + z * se < -settings_margin:
        return Decision("rollback", f"candidate reward is confidently below the incumbent's: upper bound of the "
                        f"difference {diff + z * se:+.4f} < -{settings_margin:g}", numbers)
    if comparable and candidate.scored >= min_requests and diff - z * se >= -settings_margin:
        return Decision("advance", f"lower bound of the difference {diff - z * se:+.4f} >= -{settings_margin:g} "
                        f"over {candidate.scored} candidate replies", numbers)
    return Decision("hold", f"{candidate.scored} candidate / {incumbent.scored} incumbent scored replies; "
                    f"bounds [{diff - z * se:+.4f}, {diff + z * se:+.4f}]", numbers)


class RolloutManager:
    def __init__(self, settings: Settings, backends: dict[str, Backend], store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.config = settings.rollout
        self.backends = backends
        self.store = store
        self.metrics = metrics
        self.rollouts: dict[str, dict[str, Any]] = {}
        self._rng = random.Random()
        self._task: asyncio.Task | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    async def resume(self) -> None:
        """Reload active rollouts from the store (after a restart) and their adapters."""
        db = self.store.connect()
        rows = list(db["rollouts"].rows_where("state IN (?, ?)", [CANARY, PROMOTED]))
        for row in rows:
            if row["model"] not in self.backends:
                continue
            try:
                await self.backends[row["model"]].load_adapter(adapter_name(row["checkpoint_id"]), row["adapter_path"])
            except Exception as exc:  # noqa: BLE001 - the incumbent keeps serving
                self._set(db, {**row, "state": FAILED, "share": 0.0}, "failed", f"adapter reload failed: {exc}", {})
                continue
            self.rollouts[row["model"]] = row
            self.metrics.rollout_share.labels(row["model"]).set(row["share"])
            log.info("resumed rollout of %s on %s: %s at %g%%", row["checkpoint_id"], row["model"], row["state"],
                     row["share"])

    def start_policy(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._policy_loop())

    async def stop_policy(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _policy_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval_s)
            for model in [m for m, r in self.rollouts.items() if r["state"] == CANARY]:
                try:
                    await asyncio.to_thread(self.check, model)
                except Exception:  # noqa: BLE001 - the loop must survive one bad check
                    log.exception("rollout check of %s failed", model)

    # ---- routing ------------------------------------------------------------------------------
    def route(self, model: ModelConfig, key: str, pinned: str | None) -> Route:
        rollout = self.rollouts.get(model.name)
        base = Route(BASE_ARM, None, model.best_of, None)
        if rollout is None:
            if pinned == CANDIDATE_ARM:
                raise APIError(400, f"model {model.name} has no rollout to pin", param="X-TAO-Arm")
            return base
        candidate = Route(CANDIDATE_ARM, adapter_name(rollout["checkpoint_id"]), rollout["candidate_best_of"],
                          rollout["checkpoint_id"])
        if rollout["state"] == PROMOTED:
            return Route(PROMOTED_ARM, candidate.adapter, candidate.default_best_of, candidate.model_version)
        if pinned is not None:
            return candidate if pinned == CANDIDATE_ARM else base
        return candidate if bucket(key) < rollout["share"] else base

    def shadow(self, model: str) -> Route | None:
        """For an incumbent request: a candidate route to answer it in the background, if sampled."""
        rollout = self.rollouts.get(model)
        if rollout is None or rollout["state"] != CANARY or self._rng.random() >= self.config.shadow_fraction:
            return None
        return Route(SHADOW_ARM, adapter_name(rollout["checkpoint_id"]), rollout["candidate_best_of"],
                     rollout["checkpoint_id"])

    # ---- control ------------------------------------------------------------------------------
    async def start(self, model: str, checkpoint: str, canary: float | None, best_of: int | None) -> dict[str, Any]:
        if model not in self.backends:
            raise APIError(404, f"model {model!r} does not exist", type="not_found_error", param="model",
                           code="model_not_found")
        current = self.rollouts.get(model)
        if current is not None and current["state"] == CANARY:
            raise APIError(409, f"model {model} already has a canary of {current['checkpoint_id']}; promote or "
                           "roll it back first", code="rollout_active")
        db = self.store.connect()
        found = db.execute("SELECT id, path, status FROM checkpoints WHERE id = ?", [checkpoint]).fetchone()
        if found is None:
            raise APIError(404, f"checkpoint {checkpoint!r} is not registered (see `tao distill`)",
                           type="not_found_error", param="checkpoint", code="checkpoint_not_found")
        if not found[1]:
            raise APIError(400, f"checkpoint {checkpoint} has no files (status {found[2]})", param="checkpoint")
        share = canary if canary is not None else self.config.steps[0]
        now = time.time()
        row = {"model": model, "checkpoint_id": checkpoint, "adapter_path": found[1], "state": CANARY,
               "share": share, "candidate_best_of": best_of or self.config.candidate_best_of,
               "incumbent_best_of": self.settings.model_by_name(model).best_of, "started_at": now,
               "step_started_at": now, "updated_at": now}
        try:  # load before the arm takes any traffic
            await self.backends[model].load_adapter(adapter_name(checkpoint), found[1])
        except Exception as exc:  # noqa: BLE001
            self._set(db, {**row, "state": FAILED, "share": 0.0}, "failed", f"adapter load failed: {exc}", {})
            raise APIError(502, f"loading checkpoint {checkpoint} failed; the incumbent keeps 100 % of traffic: "
                           f"{exc}", type="upstream_error", code="adapter_load_failed") from exc
        self._set(db, row, "start", f"canary at {share:g}%", {"share": share})
        return self.describe(model)

    def promote(self, model: str, reason: str = "promoted by an operator", numbers: dict | None = None) -> dict:
        row = self._active(model)
        db = self.store.connect()
        self._set(db, {**row, "state": PROMOTED, "share": 100.0}, "promote", reason, numbers or {})
        db["checkpoints"].update(row["checkpoint_id"], {"status": "promoted"})
        return self.describe(model)

    def rollback(self, model: str, reason: str = "rolled back by an operator", numbers: dict | None = None) -> dict:
        row = self._active(model)
        self._set(self.store.connect(), {**row, "state": ROLLED_BACK, "share": 0.0}, "rollback", reason,
                  numbers or {})
        self.rollouts.pop(model, None)
        return self.describe(model)

    def check(self, model: str) -> Decision:
        """Run the policy once for `model` and apply its decision."""
        row = self._active(model)
        if row["state"] != CANARY:
            return Decision("hold", "not a canary", {})
        db = self.store.connect()
        cfg = self.config
        candidate = arm_stats(db, model, (CANDIDATE_ARM, SHADOW_ARM), row["step_started_at"])
        incumbent = arm_stats(db, model, (BASE_ARM,), row["step_started_at"])
        decision = decide(candidate, incumbent, cfg.margin, cfg.z, cfg.min_requests, cfg.min_requests_rollback,
                          cfg.max_error_rate_increase)
        if decision.action == "rollback":
            self.rollback(model, decision.reason, decision.numbers)
        elif decision.action == "advance":
            higher = [s for s in cfg.steps if s > row["share"]]
            if not higher or higher[0] >= 100:
                decision.action = "promote"
                self.promote(model, decision.reason, decision.numbers)
            else:
                now = time.time()
                self._set(db, {**row, "share": higher[0], "step_started_at": now}, "step",
                          f"{row['share']:g}% → {higher[0]:g}%: {decision.reason}", decision.numbers)
        return decision

    # ---- state ----------------------------------------------------------------------------------
    def _active(self, model: str) -> dict[str, Any]:
        row = self.rollouts.get(model)
        if row is None:
            raise APIError(404, f"model {model!r} has no active rollout", type="not_found_error",
                           param="model", code="no_rollout")
        return row

    def _set(self, db, row: dict[str, Any], event: str, reason: str, numbers: dict[str, Any]) -> None:
        row = {**row, "updated_at": time.time()}
        db["rollouts"].insert(row, replace=True)
        db["rollout_events"].insert({"created_at": row["updated_at"], "model": row["model"], "event": event,
                                     "checkpoint_id": row["checkpoint_id"], "share": row["share"],
                                     "details": json.dumps({"reason": reason, **numbers}, default=str)})
        if row["state"] in (CANARY, PROMOTED):
            self.rollouts[row["model"]] = row
        self.metrics.rollout_share.labels(row["model"]).set(row["share"] if row["state"] in (CANARY, PROMOTED) else 0)
        self.metrics.rollout_events.labels(row["model"], event).inc()
        log.info("rollout %s of %s on %s: %s", event, row["checkpoint_id"], row["model"], reason)

    def describe(self, model: str) -> dict[str, Any]:
        db = self.store.connect()
        rows = list(db["rollouts"].rows_where("model = ?", [model]))
        if not rows:
            return {"model": model, "state": None}
        info = rows[0]
        since = info["step_started_at"]
        arms = {name: asdict(arm_stats(db, model, arms, since)) for name, arms in
                (("incumbent", (BASE_ARM,)), ("candidate", (CANDIDATE_ARM, SHADOW_ARM)))}
        before = arm_stats(db, model, (BASE_ARM,), 0.0)  # the incumbent at its best_of
        after = arm_stats(db, model, (PROMOTED_ARM,), info["started_at"])
        info["arms_this_step"] = arms
        info["tokens_per_request"] = {"before": before.tokens_per_request,
                                      "after": after.tokens_per_request if after.requests else None}
        return info

    def status(self) -> list[dict[str, Any]]:
        return [self.describe(m.name) for m in self.settings.models]
