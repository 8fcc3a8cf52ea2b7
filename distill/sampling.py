"""Answers from the policy being distilled, through the path the gateway serves with.

The gate and the iterated rounds both sample here: the served model's temperature, top_p and
max_tokens, each adapter loaded as a rollout loads it, and each answer scored alone by the
gateway's scorer, as an N=1 reply is. Where (`distill.sample_on`): a local backend on the distill
machine over the base weights, or the served model's own backend, e.g. its vLLM servers with the
adapter loaded at runtime, so the gate measures the engine the rollout will serve with.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from distill.dataset import LoggedPrompt
from gateway.backends import Backend, GenerationRequest, build_backend
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
    """`async with PolicySampler(base, sampling, scorer, {"name": adapter_dir})`: the base weights
    with those adapters loaded, on a local backend, or with `on_serving` on the served model's own
    backend (`sampling` is then its config). On a server others use, the adapters get names of
    their own for this sampler (`distill-<id>-<name>`) and are freed on the way out."""

    def __init__(self, base_dir: Path, sampling: ModelConfig, scorer: Scorer, adapters: dict[str, Path],
                 on_serving: bool = False) -> None:
        self.remote = on_serving and sampling.backend != "local"
        if self.remote and not sampling.api_bases:
            raise ValueError(f"distill.sample_on serving: model {sampling.name} has no api_base, so no server to load "
                             "the adapters on; sample locally (distill.sample_on: local)")
        self.backend: Backend = (build_backend(sampling) if self.remote else
                                 LocalBackend(with_updates(sampling, backend="local", model=str(base_dir), adapter=None)))
        self.sampling = sampling
        self.scorer = scorer
        self.adapters = adapters
        prefix = f"distill-{uuid.uuid4().hex[:8]}-" if self.remote else ""
        self._served_names = {name: prefix + name for name in adapters}

    async def __aenter__(self) -> PolicySampler:
        await self.backend.start()
        for name, path in self.adapters.items():
            await self.backend.load_adapter(self._served_names[name], str(path))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        try:
            if self.remote:
                for name in self._served_names.values():
                    await self.backend.unload_adapter(name)
        finally:
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
        served = self._served_names[adapter] if adapter else None
        if not self.remote:  # the local backend: every prompt in one generate call
            generations = await self.backend.generate_batch(
                [GenerationRequest(kind="chat", n=n, params=params, messages=p.messages, adapter=served)
                 for p in prompts], seed=seed)
        else:  # one call per prompt, all at once; a seed each, the same for every adapter (paired samples)
            generations = await asyncio.gather(*(self.backend.generate(GenerationRequest(
                kind="chat", n=n, params={**params, "seed": seed * 1000 + i}, messages=p.messages, adapter=served))
                for i, p in enumerate(prompts)))
        answers: list[list[Answer]] = []
        for prompt, generation in zip(prompts, generations):
            answers.append([])
            for candidate in generation.candidates:
                [score] = await self.scorer.score(prompt.prompt_text, [candidate.text])
                answers[-1].append(Answer(text=candidate.text, score=float(score), tokens=candidate.completion_tokens,
                                          ended=candidate.finish_reason == "stop"))
        return answers
