"""The scorer as the engine uses it: within `reward.timeout_s`, and a failure degrades, never fails."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.bestofn.pool import CandidatePool
from gateway.bestofn.selection import select_best_candidates
from gateway.config import RewardConfig
from gateway.metrics import Metrics
from gateway.request import ServeRequest
from gateway.rewards import Scorer
from gateway.rewards.base import score_with_readings

log = logging.getLogger(__name__)


class PoolScoring:
    def __init__(self, scorer: Scorer, reward: RewardConfig, metrics: Metrics) -> None:
        self.scorer = scorer
        self.reward = reward
        self.metrics = metrics

    async def score(self, req: ServeRequest, pool: CandidatePool) -> None:
        """Score the pool's unscored candidates; a failing scorer leaves all unscored and says why."""
        todo = [i for i, s in enumerate(pool.scores) if s is None]
        if not todo or pool.degraded_reason is not None:
            return
        started = time.perf_counter()
        try:
            scores, readings = await asyncio.wait_for(
                score_with_readings(self.scorer, req.prompt, [pool.candidates[i].text for i in todo]),
                self.reward.timeout_s)
            for i, score in zip(todo, scores, strict=True):
                pool.scores[i] = score
            if readings is not None:
                if pool.readings is None and readings.unverifiable:
                    self.metrics.unverifiable.labels(req.model.name).inc(len(readings.unverifiable))
                pool.add_readings(todo, readings)
        except TimeoutError:
            pool.degraded_reason = f"scorer timed out after {self.reward.timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - any scorer failure degrades, never fails
            pool.degraded_reason = f"scorer failed: {type(exc).__name__}: {exc}"
        pool.scoring_ms += (time.perf_counter() - started) * 1000
        if pool.degraded_reason is not None:
            pool.scores = [None] * len(pool.candidates)
            self.metrics.degraded.labels(req.model.name, "scorer").inc()
            log.warning("request %s degraded: %s", req.request_id, pool.degraded_reason)

    async def select(self, req: ServeRequest, pool: CandidatePool) -> list[int]:
        """The candidates to return, best first: those that held the request's contract before those
        that broke it, then by reward; where the prompt states nothing the scorer can verify, near-ties
        of the reward (`reward.tie_margin`) are ordered by consensus."""
        if self.reward.tie_margin > 0 and pool.scored and len(pool.candidates) > 1 \
                and not await self._states_something_verifiable(req.prompt):
            return select_best_candidates(pool.scores, req.n, [c.text for c in pool.candidates], self.reward.tie_margin,
                                          pool.held)
        return select_best_candidates(pool.scores, req.n, held=pool.held)

    async def _states_something_verifiable(self, prompt: str) -> bool:
        """The scorer's answer within its time budget; True (rank by reward alone) when it has none."""
        try:
            return await asyncio.wait_for(self.scorer.states_something_verifiable(prompt), self.reward.timeout_s)
        except Exception as exc:  # noqa: BLE001 - a timeout or a failure only skips the tie-break
            log.warning("the scorer could not say whether the prompt states anything verifiable: %s",
                        type(exc).__name__)
            return True
