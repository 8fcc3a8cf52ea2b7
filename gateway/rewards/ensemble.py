"""A weighted sum of other scorers, run concurrently. Any member failing fails the ensemble."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.protocol import Readings
from gateway.rewards.base import Scorer, score_with_readings


class EnsembleScorer:
    def __init__(self, members: list[tuple[float, Scorer]]) -> None:
        if not members:
            raise ValueError("an ensemble scorer needs at least one member")
        self.members = members
        self.name = "ensemble(" + ",".join(f"{w:g}*{s.name}" for w, s in members) + ")"

    async def states_something_verifiable(self, prompt: str) -> bool:
        """Yes when any member says so: then the summed reward, not consensus, ranks near-ties."""
        answers = await asyncio.gather(*(s.states_something_verifiable(prompt) for _, s in self.members))
        return any(answers)

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        return (await self.score_with_readings(prompt, candidates))[0]

    async def score_with_readings(self, prompt: str, candidates: Sequence[str]) -> tuple[list[float],
                                                                                         Readings | None]:
        """The weighted sum, and the readings of the first member that reads instructions."""
        results = await asyncio.gather(*(score_with_readings(s, prompt, candidates) for _, s in self.members))
        summed = [sum(weight * scores[i] for (weight, _), (scores, _) in zip(self.members, results))
                  for i in range(len(candidates))]
        return summed, next((readings for _, readings in results if readings is not None), None)
