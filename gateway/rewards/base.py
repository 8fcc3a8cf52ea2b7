"""The scorer contract (given the prompt text and N candidate texts, one reward per candidate), and
what the scorers share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gateway.rewards.stopping import run_stoppable

if TYPE_CHECKING:
    from gateway.protocol import Readings

Detailed = Callable[[str, list[str]], "tuple[Sequence[float], Readings]"]


class Scorer(Protocol):
    """What the engine asks of a scorer: rewards for candidates, and whether a prompt gives it
    anything to verify (where it does not, near-ties are broken by consensus: `reward.tie_margin`)."""

    name: str

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """Rewards, higher is better, one per candidate in order. May raise: the engine degrades."""

    async def states_something_verifiable(self, prompt: str) -> bool:
        """Does the prompt state anything this scorer checks? True when the scorer cannot tell (a
        reward model, a judge): then the reward alone ranks the candidates."""


async def score_with_readings(scorer: Scorer, prompt: str, candidates: Sequence[str]) -> tuple[list[float],
                                                                                            Readings | None]:
    """Rewards, and what the scorer read and checked where it can say (a scorer that reads instructions
    has `score_with_readings`; any other gives its rewards alone)."""
    detailed = getattr(scorer, "score_with_readings", None)
    if detailed is None:
        return await scorer.score(prompt, candidates), None
    return await detailed(prompt, candidates)


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


class FunctionScorer:
    """A plain `fn(prompt, candidates) -> list[float]`, always run on a thread of its own, off the
    event loop, and told to stop when the engine stops waiting (`gateway.rewards.stopping`).

    Even the built-in default scorer: it usually takes a few milliseconds, but its language and
    case checks (langdetect) take longer on long replies, and the loop must not wait on any of it.
    Starting the thread costs tens of microseconds.
    """

    def __init__(self, name: str, fn: Callable[[str, list[str]], Sequence[float]], *,
                 verifiable: Callable[[str], bool] | None = None, detailed: Detailed | None = None) -> None:
        self.name = name
        self._fn = fn
        self._verifiable = verifiable
        self._detailed = detailed

    async def states_something_verifiable(self, prompt: str) -> bool:
        """Does the prompt state anything this scorer checks? True unless the scorer can tell (the
        engine's consensus tie-break applies only where it says no)."""
        if self._verifiable is None:
            return True
        return await run_stoppable(self._verifiable, prompt)

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        result = await run_stoppable(self._fn, prompt, list(candidates))
        return validated(result, len(candidates), self.name)

    async def score_with_readings(self, prompt: str, candidates: Sequence[str]) -> tuple[list[float],
                                                                                         Readings | None]:
        """`detailed`'s rewards and readings, computed once (the checks are the scoring); the rewards
        alone for a function that reads nothing."""
        if self._detailed is None:
            return await self.score(prompt, candidates), None
        scores, readings = await run_stoppable(self._detailed, prompt, list(candidates))
        return validated(scores, len(candidates), self.name), readings
