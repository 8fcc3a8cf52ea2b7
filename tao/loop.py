"""`tao loop`: TAO's continuous improvement, unattended: distill → gate → rollout → decision → again.

Each `Loop.advance` does the one thing the log says is next for the model, and returns a `Step`:
- a canary is running: wait for the gateway's policy to decide it;
- a checkpoint was published and no rollout has taken it up: start it on the gateway (admin API),
  against whatever serves now (the base weights, or the promoted checkpoint);
- otherwise: distill the log since the last checkpoint (after a promotion, the promoted
  checkpoint's own best-of-N traffic, arm explore).

Nothing is kept in the process: which checkpoint is promoted, which is a canary and which is
published but not started are all in the store, so a loop killed at any point and started again
goes on from there (a killed distill leaves only a staging directory, removed by the next run). One
loop works on a store at a time: it holds the store lock `loop`, a lease like distill's.

Exit codes: 0 the cycles asked for (`--cycles`) ended; 1 an error; 4 another loop holds the lease;
5 the promoted checkpoint has lost its adapter files; 6 the gateway refused a call (a wrong admin
key, an unknown model). SIGTERM ends it at once with 143, the lease released.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx
import sqlite_utils

from distill.job import INCUMBENT_MISSING, LOCKED, PUBLISHED, REJECTED, TOO_LITTLE_DATA, DistillOutcome, run_distill
from gateway.config import Settings
from gateway.store import (
    CheckpointStatus,
    LockHeld,
    Rollout,
    RolloutState,
    Store,
    connection,
    exclusive,
    get_checkpoint,
    get_rollout,
    set_checkpoint_status,
    unstarted_candidate,
)

log = logging.getLogger(__name__)

CYCLES_DONE, ERROR, LOOP_LOCKED, CHECKPOINT_FILES_GONE, GATEWAY_REFUSED = 0, 1, 4, INCUMBENT_MISSING, 6

CycleOutcome = Literal["promoted", "rolled_back", "rejected", "stale", "failed"]


@dataclass(frozen=True)
class CycleEnd:
    """How one cycle ended: its checkpoint (None when distill published nothing) and what became of it."""

    checkpoint_id: str | None
    outcome: CycleOutcome
    best_of: int | None  # the k the checkpoint was rolled out at


@dataclass(frozen=True)
class Step:
    """What one `advance` did, and how long the next one is worth waiting for."""

    kind: Literal["waiting", "started", "distilled", "ended"]
    message: str
    wait_s: float = 0.0
    ended: CycleEnd | None = None
    distill: DistillOutcome | None = None


class LoopStopped(Exception):
    """A state the loop cannot get past on its own; `exit_code` says which."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class GatewayAdmin:
    """The gateway's /admin/rollout routes, as `tao rollout` calls them."""

    def __init__(self, url: str, admin_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}

    def start(self, model: str, checkpoint_id: str) -> httpx.Response:
        return httpx.post(f"{self.url}/admin/rollout/{model}/start", json={"checkpoint": checkpoint_id},
                          headers=self.headers, timeout=600)


class Loop:
    """One model's cycles. `settings` is called at every step, so a changed config file takes effect
    at the next one; `poll_s` is how often a canary's decision is looked for, `retry_s` how long to
    wait after a step that found nothing to do."""

    def __init__(self, settings: Callable[[], Settings], admin: GatewayAdmin, poll_s: float = 10.0,
                 retry_s: float = 600.0) -> None:
        self.settings = settings
        self.admin = admin
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.watching: str | None = None  # the canary this loop is waiting on
        Store(settings().store.path)  # the schema (and its locks table), on a store no gateway has written yet

    def advance(self) -> Step:
        settings = self.settings()
        model = settings.distill.model
        with connection(settings.store.path) as db:
            rollout = get_rollout(db, model)
            if rollout is not None and rollout.state == RolloutState.CANARY:
                self.watching = rollout.checkpoint_id
                return Step("waiting", f"{rollout.checkpoint_id} is a canary at {rollout.share:g}% ({rollout.looks} "
                            f"looks taken): waiting for the gateway's rollout policy", self.poll_s)
            if self.watching is not None:
                return self._decided(db, self.watching, rollout)
            pending = unstarted_candidate(db, model)
        if pending is not None:
            return self._start(settings, model, pending.id)
        if rollout is not None and rollout.state == RolloutState.PROMOTED and settings.rollout.explore_fraction == 0:
            return Step("waiting", f"no new data: {rollout.checkpoint_id} serves every request of {model} at its k "
                        "and rollout.explore_fraction is 0, so no best-of-N traffic is logged to learn from. Set "
                        "rollout.explore_fraction above 0 (e.g. 0.1) in the gateway's config", self.retry_s)
        return self._distill(settings)

    def _decided(self, db: sqlite_utils.Database, checkpoint_id: str, rollout: Rollout | None) -> Step:
        """The watched canary is over: how did it end?"""
        self.watching = None
        checkpoint = get_checkpoint(db, checkpoint_id)
        status = checkpoint.status if checkpoint else None
        outcome: CycleOutcome = ("promoted" if status == CheckpointStatus.PROMOTED
                                 else "rolled_back" if status == CheckpointStatus.ROLLED_BACK else "failed")
        best_of = checkpoint.metrics.get("best_of") if checkpoint else None
        serving = (f"{rollout.checkpoint_id} serves at best-of-{rollout.candidate_best_of}"
                   if rollout is not None and rollout.active else "the base weights serve")
        return Step("ended", f"cycle ended: {checkpoint_id} {outcome.replace('_', ' ')}; {serving}",
                    ended=CycleEnd(checkpoint_id, outcome, best_of))

    def _start(self, settings: Settings, model: str, checkpoint_id: str) -> Step:
        try:
            response = self.admin.start(model, checkpoint_id)
        except httpx.HTTPError as exc:
            return Step("waiting", f"cannot reach the gateway at {self.admin.url} to start {checkpoint_id}: {exc}",
                        self.poll_s)
        if response.status_code == 200:
            self.watching = checkpoint_id
            body = response.json()
            return Step("started", f"started {checkpoint_id}: canary at {body['share']:g}%, best-of-"
                        f"{body['candidate_best_of']} against {body['incumbent_checkpoint_id'] or 'the base weights'}"
                        f" at best-of-{body['incumbent_best_of']}", self.poll_s)
        error = _error(response)
        if response.status_code == 409 and error.get("code") == "rollout_active":
            return Step("waiting", f"{checkpoint_id} waits: {error.get('message')}", self.poll_s)
        if response.status_code in (409, 502):  # gated against an incumbent replaced since, or it did not load
            with connection(settings.store.path) as db:
                set_checkpoint_status(db, checkpoint_id, CheckpointStatus.RETIRED)
            outcome: CycleOutcome = "stale" if error.get("code") == "incumbent_changed" else "failed"
            return Step("ended", f"cycle ended: {checkpoint_id} retired, not rolled out: {error.get('message')}",
                        ended=CycleEnd(checkpoint_id, outcome, None))
        raise LoopStopped(GATEWAY_REFUSED, f"the gateway at {self.admin.url} refused to start {checkpoint_id}: "
                          f"{response.status_code} {error.get('message', response.text)}")

    def _distill(self, settings: Settings) -> Step:
        outcome = run_distill(settings)
        if outcome.exit_code == PUBLISHED:
            return Step("distilled", outcome.message, distill=outcome)
        if outcome.exit_code == REJECTED:
            return Step("ended", f"cycle ended: {outcome.message}", self.retry_s,
                        ended=CycleEnd(outcome.checkpoint_id, "rejected", None), distill=outcome)
        if outcome.exit_code in (TOO_LITTLE_DATA, LOCKED):
            return Step("waiting", outcome.message, self.retry_s, distill=outcome)
        raise LoopStopped(outcome.exit_code, outcome.message)

    def run(self, cycles: int | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
        """Advance until `cycles` cycles have ended (None: until stopped), under the `loop` lease."""
        settings = self.settings()
        try:
            with exclusive(settings.store.path, "loop", settings.distill.lock_ttl_s):
                ended = 0
                while cycles is None or ended < cycles:
                    step = self.advance()
                    log.info("%s", step.message)
                    ended += step.ended is not None
                    if step.wait_s and (cycles is None or ended < cycles):
                        sleep(step.wait_s)
        except LockHeld as exc:
            log.error("another tao loop works on %s: %s (a killed loop's lease runs out within "
                      "distill.lock_ttl_s, %g s)", settings.store.path, exc, settings.distill.lock_ttl_s)
            return LOOP_LOCKED
        except LoopStopped as exc:
            log.error("%s", exc)
            return exc.exit_code
        return CYCLES_DONE


def _error(response: httpx.Response) -> dict:
    """The OpenAI-style error object of a refused admin call (empty when the body is not one)."""
    try:
        return response.json().get("error") or {}
    except ValueError:
        return {}
