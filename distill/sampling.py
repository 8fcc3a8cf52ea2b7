"""Answers from the policy being distilled, through the path the gateway serves with.

The gate and the iterated rounds both sample here: the local backend, the served model's
temperature, top_p and max_tokens, each adapter loaded as a rollout loads it, and each answer
scored alone by the gateway's scorer, as an N=1 reply is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from distill.dataset import LoggedPrompt
from gateway.backends import GenerationRequest
from gateway.backends.local import LocalBackend
from gateway.config import ModelConfig, with_updates
from gateway.rewards import Scorer


@dataclass
class Answer:
    text: str
    score: float
    tokens: int
    ended: bool  # finished on its own, not cut at max_tokens


class PolicySampler:
    """`async with PolicySampler(base, sampling, scorer, {"name": adapter_dir})`: the base model on
    the local backend with those adapters loaded beside it."""

    def __init__(self, base_dir: Path, sampling: ModelConfig, scorer: Scorer, adapters: dict[str, Path]) -> None:
        self.backend = LocalBackend(with_updates(sampling, backend="local", model=str(base_dir), adapter=None))
        self.sampling = sampling
        self.scorer = scorer
        self.adapters = adapters

    async def __aenter__(self) -> PolicySampler:
        await self.backend.start()
        for name, path in self.adapters.items():
            await self.backend.load_adapter(name, str(path))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.backend.close()

    def chunks(self, prompts: list[LoggedPrompt], n: int) -> list[list[LoggedPrompt]]:
        """`prompts` in groups that fill one generate call (max_batch_sequences samples)."""
        size = max(1, self.sampling.max_batch_sequences // n)
        return [prompts[i:i + size] for i in range(0, len(prompts), size)]

    async def answers(self, prompts: list[LoggedPrompt], n: int, seed: int, adapter: str | None) -> list[list[Answer]]:
        """`n` answers to each of `prompts` (one generate call, seeded with `seed`) from `adapter`
        (None: the base weights), each scored alone."""
        params = {"temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
                  "max_tokens": self.sampling.max_tokens}
        generations = await self.backend.generate_batch(
            [GenerationRequest(kind="chat", n=n, params=params, messages=p.messages, adapter=adapter) for p in prompts],
            seed=seed)
        answers: list[list[Answer]] = []
        for prompt, generation in zip(prompts, generations):
            answers.append([])
            for candidate in generation.candidates:
                [score] = await self.scorer.score(prompt.prompt_text, [candidate.text])
                answers[-1].append(Answer(text=candidate.text, score=float(score), tokens=candidate.completion_tokens,
                                          ended=candidate.finish_reason == "stop"))
        return answers
