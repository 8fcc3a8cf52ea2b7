"""The scorer contract (given the prompt text and N candidate texts, one reward per candidate), and
what the scorers share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Scorer(Protocol):
    name: str

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """Rewards, higher is better, one per candidate in order. May raise: the engine degrades."""


class ScorerOutputError(ValueError):
    """A scorer returned something other than one number per candidate."""


def validated(scores: object, count: int, name: str) -> list[float]:
    if not isinstance(scores, (list, tuple)) or len(scores) != count:
        raise ScorerOutputError(f"scorer {name} returned {scores!r:.200}; expected {count} numbers")
    try:
        return [float(s) for s in scores]
    except (TypeError, ValueError) as exc:
        raise ScorerOutputError(f"scorer {name} returned a non-number: {exc}") from exc


def reward_model_input(tokenizer: Any, prompt: str, candidate: str) -> str:
    """The text a reward model reads for one candidate: the user turn and the reply in the
    tokenizer's chat template (what chat reward models are trained on), else both plainly joined."""
    if tokenizer is not None and tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": candidate}], tokenize=False)
    return f"{prompt}\n\n{candidate}"


# Inline scoring keeps to inputs a fast function handles in a few milliseconds (the default scorer
# takes ~0.8 µs per prompt character and ~0.15 µs per candidate character); larger ones go to a thread.
INLINE_MAX_PROMPT_CHARS = 4_000
INLINE_MAX_CANDIDATE_CHARS = 32_000


class FunctionScorer:
    """A plain `fn(prompt, candidates) -> list[float]`, run on a worker thread off the event loop.

    `inline=True` runs it on the event loop instead when the input is small: only for functions
    known to take well under a millisecond on ordinary input (the built-in default scorer), where
    the thread hop would cost more than the work. A large prompt or candidate still goes to the
    thread, so no input size blocks the loop for more than a few milliseconds.
    """

    def __init__(self, name: str, fn: Callable[[str, list[str]], Sequence[float]], *, inline: bool = False,
                 verifiable: Callable[[str], bool] | None = None) -> None:
        self.name = name
        self._fn = fn
        self._inline = inline
        self._verifiable = verifiable

    async def states_something_verifiable(self, prompt: str) -> bool:
        """Does the prompt state anything this scorer checks? True unless the scorer can tell (the
        engine's consensus tie-break applies only where it says no)."""
        if self._verifiable is None:
            return True
        if self._inline and len(prompt) <= INLINE_MAX_PROMPT_CHARS:
            return self._verifiable(prompt)
        return await asyncio.to_thread(self._verifiable, prompt)

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        if self._inline and len(prompt) <= INLINE_MAX_PROMPT_CHARS and \
                sum(map(len, candidates)) <= INLINE_MAX_CANDIDATE_CHARS:
            result = self._fn(prompt, list(candidates))
        else:
            result = await asyncio.to_thread(self._fn, prompt, list(candidates))
        return validated(result, len(candidates), self.name)
