"""A weighted sum of other scorers, run concurrently. Any member failing fails the ensemble."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.rewards.base import Scorer


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
        results = await asyncio.gather(*(s.score(prompt, candidates) for _, s in self.members))
        return [
            sum(weight * scores[i] for (weight, _), scores in zip(self.members, results))
            for i in range(len(candidates))
        ]
