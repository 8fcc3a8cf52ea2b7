"""`RolloutManager`: the rollout of every model as state in the log, the policy loop that applies
`policy.decide`, and the operator's control (start, promote, roll back, status).

Each public method that touches the store opens one connection for its unit of work and closes it;
the async ones do that work in a thread, off the event loop.

Several gateways on one log act as one. Each reads the rollout state from the store every
`rollout.sync_interval_s` and serves it (`follow`): a rollout started, stepped, promoted or rolled
back by another gateway, or by an operator's call to another replica, is loaded and routed here
within one sync. Only the gateway holding the `rollout-decider` lease (`hold_lease`, renewed every
sync) runs the policy's checks; when it dies, another takes over within `rollout.lease_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import asdict, replace
from typing import Any

import sqlite_utils

from gateway.backends import Backend
from gateway.config import ModelConfig, Settings
from gateway.errors import APIError
from gateway.metrics import Metrics
from gateway.rollout.adapters import Adapters
from gateway.rollout.policy import CANDIDATE_ARMS, INCUMBENT_ARMS, Decision, arm_stats, decide, sequential_plan
from gateway.rollout.routing import Route, route, shadow_route
from gateway.rollout.servable import servable_checkpoint
from gateway.sequential import clustered_difference
from gateway.store import (
    Arm,
    Checkpoint,
    CheckpointStatus,
    Rollout,
    RolloutState,
    Store,
    active_rollouts,
    arm_outcomes,
    get_rollout,
    hold_lease,
    release_lease,
    save_rollout,
    set_checkpoint_status,
    shadow_pairs,
)

log = logging.getLogger(__name__)
DECIDER_LEASE = "rollout-decider"


def _check_gated_against(checkpoint: Checkpoint, incumbent: Rollout | None, force: bool) -> None:
    """Refuse a checkpoint whose eval gate compared it with another incumbent than the one serving now
    (a promotion happened while it was distilled): its gate says nothing about this rollout."""
    gated_against = checkpoint.metrics.get("incumbent")
    serving = incumbent.checkpoint_id if incumbent else None
    if gated_against != serving and not force:
        raise APIError(409, f"checkpoint {checkpoint.id} was gated against "
                       f"{gated_against or 'the base weights'}, but {serving or 'the base weights'} serves now; "
                       "distill again, or start it anyway with \"force\": true", param="checkpoint",
                       code="incumbent_changed")


class RolloutManager:
    """The rollouts of every model: routing per request, the policy loop, and operator control."""

    def __init__(self, settings: Settings, backends: dict[str, Backend], store: Store, metrics: Metrics) -> None:
        self.settings = settings
        self.config = settings.rollout
        self.backends = backends
        self.store = store
        self.metrics = metrics
        self.adapters = Adapters(backends)
        self.rollouts: dict[str, Rollout] = {}  # the active (canary or promoted) rollout of each model
        self._rng = random.Random()
        self._task: asyncio.Task | None = None
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.deciding = False  # holds the decider lease
        self._state_lock = threading.Lock()  # memory and store change together (`_set`, `follow`)
        self._changes = 0  # state changes made here: a sync read before one is stale

    # ---- lifecycle ----------------------------------------------------------------------------
    async def resume(self) -> None:
        """Reload active rollouts from the store (after a restart) and their adapters. A rollout whose
        adapter no longer loads (its files gone) fails: a canary hands back to the promoted checkpoint
        it was tested against (if that one loads), otherwise the base weights serve the model again."""
        self.adapters.bind(asyncio.get_running_loop())
        for rollout in await asyncio.to_thread(self._stored_active):
            if rollout.model not in self.backends:
                continue
            try:
                await self._load(rollout)
            except Exception as exc:  # noqa: BLE001 - the incumbent serves instead
                await asyncio.to_thread(self._transition, replace(rollout, state=RolloutState.FAILED, share=0.0),
                                        "failed", f"adapter reload failed: {exc}", {})
                log.error("rollout of %s on %s failed at restart: its adapter did not load: %s",
                          rollout.checkpoint_id, rollout.model, exc)
                if rollout.state == RolloutState.CANARY and rollout.incumbent_checkpoint_id:
                    await self._restore_after_failed_canary(rollout)
                continue
            self.rollouts[rollout.model] = rollout
            self.metrics.rollout_share.labels(rollout.model).set(rollout.share)
            log.info("resumed rollout of %s on %s: %s at %g%%", rollout.checkpoint_id, rollout.model, rollout.state,
                     rollout.share)

    async def _restore_after_failed_canary(self, canary: Rollout) -> None:
        """A canary that failed at restart hands back to the promoted checkpoint it was tested
        against, if that one still loads (else the base weights serve)."""
        restored = self._restored_incumbent(canary)
        try:
            await self._load(restored)
        except Exception as exc:  # noqa: BLE001
            log.error("the promoted %s does not load either; the base weights serve %s: %s", restored.checkpoint_id,
                      canary.model, exc)
            return
        await asyncio.to_thread(self._transition, restored, "restore",
                                f"{restored.checkpoint_id} serves again: {canary.checkpoint_id} failed at restart", {})
        self.metrics.rollout_share.labels(canary.model).set(restored.share)

    async def _load(self, rollout: Rollout) -> None:
        """Load the adapters the rollout serves: its checkpoint's and, in a canary, a promoted incumbent's."""
        await self.adapters.load(rollout.model, rollout.checkpoint_id, rollout.adapter_path)
        if rollout.state == RolloutState.CANARY and rollout.incumbent_checkpoint_id:
            await self.adapters.load(rollout.model, rollout.incumbent_checkpoint_id, rollout.incumbent_adapter_path)

    def start_policy(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._policy_loop())

    async def stop_policy(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.deciding:  # a successor decides at its next sync, not after the lease runs out
            try:
                await asyncio.to_thread(release_lease, self.store.path, DECIDER_LEASE, self.holder)
            except Exception as exc:  # noqa: BLE001 - the lease then simply expires
                log.warning("releasing the rollout lease failed: %s", exc)

    async def _policy_loop(self) -> None:
        next_check = time.monotonic() + self.config.check_interval_s
        while True:
            await asyncio.sleep(min(self.config.sync_interval_s, self.config.check_interval_s))
            try:
                await self._lead()
                await self.follow()
            except Exception:  # noqa: BLE001 - the loop must survive a busy store
                log.exception("rollout sync failed")
                continue
            if not self.deciding or time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + self.config.check_interval_s
            for model in [m for m, r in self.rollouts.items() if r.state == RolloutState.CANARY]:
                try:
                    await asyncio.to_thread(self.check, model)
                except Exception:  # noqa: BLE001 - the loop must survive one bad check
                    log.exception("rollout check of %s failed", model)

    async def _lead(self) -> None:
        deciding = await asyncio.to_thread(hold_lease, self.store.path, DECIDER_LEASE, self.holder,
                                           self.config.lease_s)
        if deciding != self.deciding:
            log.info("this gateway (%s) %s rollout decisions", self.holder, "now takes" if deciding else "no longer takes")
        self.deciding = deciding

    async def follow(self) -> None:
        """Serve the rollout state the store holds: load what another gateway started, route its
        steps, drop what it ended. Local changes made meanwhile win (they are newer); the next sync
        reads again."""
        changes, stored = await asyncio.to_thread(self._read_stored)
        for model, theirs in stored.items():  # load first, off the lock: loading an adapter takes time
            mine = self.rollouts.get(model)
            if theirs is not None and theirs != mine and (mine is None or not _same_adapters(mine, theirs)):
                try:
                    await self._load(theirs)
                except Exception as exc:  # noqa: BLE001 - the decider records failures; this one keeps serving
                    log.error("following the rollout of %s on %s: its adapter did not load: %s", theirs.checkpoint_id,
                              model, exc)
                    stored[model] = mine
        if not self._state_lock.acquire(blocking=False):
            return  # a change is being written here: read again at the next sync
        try:
            if changes != self._changes:
                return
            for model, theirs in stored.items():
                mine = self.rollouts.get(model)
                if theirs == mine:
                    continue
                if theirs is None:
                    del self.rollouts[model]
                else:
                    self.rollouts[model] = theirs
                for ended in _adapters(mine) - _adapters(theirs):
                    self.adapters.unload_later(model, ended)
                self.metrics.rollout_share.labels(model).set(theirs.share if theirs else 0)
                log.info("following the store: %s on %s is %s", (theirs or mine).checkpoint_id, model,
                         f"{theirs.state} at {theirs.share:g}%" if theirs else "no longer served")
        finally:
            self._state_lock.release()

    def _read_stored(self) -> tuple[int, dict[str, Rollout | None]]:
        with self._state_lock:
            changes = self._changes
            active = {r.model: r for r in self._stored_active() if r.model in self.backends}
        return changes, {model: active.get(model) for model in set(active) | set(self.rollouts)}

    # ---- routing ------------------------------------------------------------------------------
    def route(self, model: ModelConfig, key: str, pinned: str | None) -> Route:
        return route(model, self.rollouts.get(model.name), key, pinned, self.config.explore_fraction, self._rng)

    def shadow(self, model: str) -> Route | None:
        """For an incumbent request: a candidate route to answer it in the background, if sampled."""
        return shadow_route(self.rollouts.get(model), self.config.shadow_fraction, self._rng)

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
        incumbent = current  # None, or the promoted checkpoint the candidate would replace
        if incumbent is not None and incumbent.checkpoint_id == checkpoint:
            raise APIError(409, f"checkpoint {checkpoint} is already promoted on {model}", param="checkpoint",
                           code="already_promoted")
        found = await asyncio.to_thread(self._servable, checkpoint, force)
        _check_gated_against(found, incumbent, force)
        share = canary if canary is not None else self.config.steps[0]
        candidate_best_of, why = (best_of, "asked for") if best_of else self._candidate_best_of(found)
        now = time.time()
        rollout = Rollout(
            model=model, checkpoint_id=checkpoint, adapter_path=found.path, state=RolloutState.CANARY, share=share,
            candidate_best_of=candidate_best_of,
            incumbent_best_of=incumbent.candidate_best_of if incumbent else self.settings.model_by_name(model).best_of,
            started_at=now, step_started_at=now, updated_at=now,
            incumbent_checkpoint_id=incumbent.checkpoint_id if incumbent else None,
            incumbent_adapter_path=incumbent.adapter_path if incumbent else None)
        try:  # load before the arm takes any traffic
            await self.adapters.load(model, checkpoint, found.path)
        except Exception as exc:  # noqa: BLE001
            failed = replace(rollout, state=RolloutState.FAILED, share=0.0)
            await asyncio.to_thread(self._transition, failed, "failed", f"adapter load failed: {exc}", {})
            if incumbent is not None:  # the promoted checkpoint still serves
                await asyncio.to_thread(self._transition, incumbent, "restore",
                                        f"{incumbent.checkpoint_id} serves again: {checkpoint} did not load", {})
            raise APIError(502, f"loading checkpoint {checkpoint} failed; the incumbent keeps 100 % of traffic: "
                           f"{exc}", type="upstream_error", code="adapter_load_failed") from exc
        saving = rollout.incumbent_best_of / candidate_best_of
        against = f"promoted {incumbent.checkpoint_id}" if incumbent else "base"
        return await asyncio.to_thread(
            self._transition, rollout, "start", f"canary at {share:g}%, the candidate at best-of-{candidate_best_of} "
            f"({why}; {saving:g}× fewer answers than the incumbent's ({against}) best-of-{rollout.incumbent_best_of})",
            {"share": share, "candidate_best_of": candidate_best_of, "incumbent": rollout.incumbent_checkpoint_id})

    def _candidate_best_of(self, checkpoint: Checkpoint) -> tuple[int, str]:
        """The candidate arm's N from the config, or with `auto` the one distill chose; and why."""
        configured = self.config.candidate_best_of
        if configured != "auto":
            return configured, "rollout.candidate_best_of"
        chosen = checkpoint.metrics.get("best_of")
        if isinstance(chosen, int) and chosen >= 1:
            return chosen, "auto: the cheapest k the eval gate predicts within the margin"
        return 1, "auto: the checkpoint records no choice"

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
            pairs = shadow_pairs(db, model, since=since, candidate_n=rollout.candidate_best_of,
                                 incumbent_n=rollout.incumbent_best_of)
            decision = decide(pairs, rollout.looks, candidate, incumbent, cfg)
            if decision.look is not None:
                rollout = replace(rollout, looks=decision.look)
            if decision.action == "rollback":
                self._rollback(db, rollout, decision.reason, decision.numbers)
            elif decision.action == "promote":
                self._promote(db, rollout, decision.reason, decision.numbers)
            elif decision.action == "climb" and (higher := [s for s in cfg.steps if rollout.share < s < 100]):
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

    def _servable(self, checkpoint_id: str, force: bool) -> Checkpoint:
        with self.store.connection() as db:
            return servable_checkpoint(db, checkpoint_id, force)

    def _transition(self, rollout: Rollout, event: str, reason: str, numbers: dict[str, Any]) -> dict[str, Any]:
        """Record a new state in one unit of work; returns the model's description."""
        with self.store.connection() as db:
            self._set(db, rollout, event, reason, numbers)
            return self._describe(db, rollout.model)

    def _promote(self, db: sqlite_utils.Database, rollout: Rollout, reason: str, numbers: dict[str, Any]) -> None:
        """The candidate serves everything; a promoted checkpoint it replaced is retired and freed."""
        set_checkpoint_status(db, rollout.checkpoint_id, CheckpointStatus.PROMOTED)  # before the state: see _rollback
        if rollout.incumbent_checkpoint_id:
            set_checkpoint_status(db, rollout.incumbent_checkpoint_id, CheckpointStatus.RETIRED)
            self.adapters.unload_later(rollout.model, rollout.incumbent_checkpoint_id)
        promoted = replace(rollout, state=RolloutState.PROMOTED, share=100.0, incumbent_checkpoint_id=None,
                           incumbent_adapter_path=None)
        self._set(db, promoted, "promote", reason, numbers)

    def _rollback(self, db: sqlite_utils.Database, rollout: Rollout, reason: str, numbers: dict[str, Any]) -> None:
        """The candidate stops serving and is freed; the incumbent it was tested against serves
        everything again: a promoted checkpoint (restored, at its k) or the base weights. The checkpoint's
        status is written before the rollout's state, so whoever sees the canary ended (`tao loop`)
        reads how."""
        set_checkpoint_status(db, rollout.checkpoint_id, CheckpointStatus.ROLLED_BACK)
        self._set(db, replace(rollout, state=RolloutState.ROLLED_BACK, share=0.0), "rollback", reason, numbers)
        self.adapters.unload_later(rollout.model, rollout.checkpoint_id)
        if rollout.state == RolloutState.CANARY and rollout.incumbent_checkpoint_id:
            self._set(db, self._restored_incumbent(rollout), "restore",
                      f"{rollout.incumbent_checkpoint_id} serves again: {rollout.checkpoint_id} was rolled back", {})

    def _restored_incumbent(self, canary: Rollout) -> Rollout:
        """The promoted rollout a canary was tested against, serving everything again at its k."""
        now = time.time()
        return Rollout(model=canary.model, checkpoint_id=canary.incumbent_checkpoint_id,
                       adapter_path=canary.incumbent_adapter_path, state=RolloutState.PROMOTED, share=100.0,
                       candidate_best_of=canary.incumbent_best_of,
                       incumbent_best_of=self.settings.model_by_name(canary.model).best_of, started_at=now,
                       step_started_at=now, updated_at=now)

    def _set(self, db: sqlite_utils.Database, rollout: Rollout, event: str, reason: str,
             numbers: dict[str, Any]) -> None:
        rollout = replace(rollout, updated_at=time.time())
        # routing first, then the log: whoever reads the new state from the store (`tao loop`) finds the
        # gateway already serving it
        with self._state_lock:
            self._changes += 1
            serving = self.rollouts.get(rollout.model)
            if rollout.active:
                self.rollouts[rollout.model] = rollout
            elif serving is not None and serving.checkpoint_id == rollout.checkpoint_id:  # it ends: not another
                del self.rollouts[rollout.model]
            save_rollout(db, rollout, event, {"reason": reason, **numbers})
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
        after = arm_outcomes(db, model, (Arm.PROMOTED, Arm.EXPLORE), rollout.started_at)
        pairs = shadow_pairs(db, model, since=rollout.started_at, candidate_n=rollout.candidate_best_of,
                             incumbent_n=rollout.incumbent_best_of)
        plan = sequential_plan(self.config)
        difference = clustered_difference((p.prompt, p.difference) for p in pairs)
        next_look = min(rollout.looks + 1, plan.max_looks)
        at_next_look = plan.look(next_look, difference) if difference.units > 1 else None  # its boundary, its bounds
        evidence = {**asdict(difference), "next_look": next_look, "max_looks": plan.max_looks,
                    "prompts_for_next_look": plan.units_for(next_look),
                    **{key: None if at_next_look is None else getattr(at_next_look, key)
                       for key in ("boundary", "lower", "upper")}}
        return {**asdict(rollout), "arms_this_step": arms, "shadow_pairs": evidence,
                "saving": rollout.incumbent_best_of / rollout.candidate_best_of,
                "tokens_per_request": {"before": before.tokens_per_request,
                                       "after": after.tokens_per_request if after.requests else None}}


def _adapters(rollout: Rollout | None) -> set[str]:
    """The checkpoints whose adapters a rollout serves (its own; in a canary, a promoted incumbent's)."""
    if rollout is None:
        return set()
    incumbent = rollout.incumbent_checkpoint_id if rollout.state == RolloutState.CANARY else None
    return {rollout.checkpoint_id} | ({incumbent} if incumbent else set())


def _same_adapters(mine: Rollout, theirs: Rollout) -> bool:
    return _adapters(mine) >= _adapters(theirs)
