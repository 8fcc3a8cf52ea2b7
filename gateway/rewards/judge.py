"""An LLM judge through LiteLLM. Listwise by default: ONE call sees the instruction once and every
distinct candidate, tagged [1]..[k], and returns JSON `{"scores": [...]}` with a score in [0, 1]
per candidate; identical candidates are sent once. `mode: pointwise` asks once per distinct
candidate instead (`{"score": x}`), for judges that compare poorly. Malformed output is retried
once; a second failure raises, which degrades the reply (flagged, never a crash).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from gateway.config import JudgeReward
from gateway.rewards.base import ScorerOutputError
from gateway.rewards.reading import excerpt

log = logging.getLogger(__name__)

RUBRIC = (
    "You are a strict grader. Judge how well each response follows the user's instruction: every stated "
    "constraint (length, format, words to use or avoid, case, structure), correctness, and clarity. "
    "Score each response from 0 (fails the instruction) to 1 (follows it perfectly)."
)


def _json_object(text: str) -> dict[str, Any]:
    match = re.search(r"\{.*\}", text or "", flags=re.DOTALL)
    if not match:
        raise ScorerOutputError(f"judge returned no JSON object: {text!r:.200}")
    try:
        return json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ScorerOutputError(f"judge returned invalid JSON: {exc}") from exc


def _unit(value: Any) -> float:
    score = float(value)
    if not 0.0 <= score <= 1.0:
        raise ScorerOutputError(f"judge score {score} is outside [0, 1]")
    return score


class JudgeScorer:
    def __init__(self, config: JudgeReward) -> None:
        self.name = f"judge:{config.model}"
        self.config = config
        self.calls = 0

    async def states_something_verifiable(self, prompt: str) -> bool:
        return True  # it scores every prompt alike: the reward alone ranks

    def _fit(self, text: str, limit: int, what: str) -> str:
        """`text` within `limit` characters: its start and its end, with a notice when it is cut."""
        cut = excerpt(text, limit * 3 // 4, limit - limit * 3 // 4)
        if cut.skipped_chars:
            log.info("%s: read %d of the %d characters of the %s (its start and end)", self.name,
                     len(text) - cut.skipped_chars, len(text), what)
        return cut.text

    async def _ask(self, user: str) -> str:
        import litellm

        self.calls += 1
        config = self.config
        kwargs: dict[str, Any] = {"model": config.model, "temperature": config.temperature,
                                  "timeout": config.timeout_s,
                                  "messages": [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}]}
        if config.api_base:
            kwargs["api_base"] = config.api_base
        if config.api_key:
            kwargs["api_key"] = config.api_key
        response = await litellm.acompletion(**kwargs)
        return response.choices[0].message.content or ""

    async def _with_retry(self, user: str, parse) -> Any:
        try:
            return parse(await self._ask(user))
        except (ScorerOutputError, KeyError, TypeError, ValueError):
            return parse(await self._ask(user + "\n\nReply with the JSON object only."))

    async def _listwise(self, prompt: str, distinct: list[str]) -> list[float]:
        tagged = "\n\n".join(f"[{i + 1}]\n{self._fit(text, self.config.max_chars, 'response')}"
                               for i, text in enumerate(distinct))
        instruction = self._fit(prompt, self.config.max_prompt_chars, "instruction")
        user = (f"Instruction:\n{instruction}\n\nResponses:\n{tagged}\n\nReturn a JSON object "
                f'{{"scores": [...]}} with exactly {len(distinct)} numbers in [0, 1], one per response, in order.')

        def parse(text: str) -> list[float]:
            scores = _json_object(text)["scores"]
            if not isinstance(scores, list) or len(scores) != len(distinct):
                raise ScorerOutputError(f"judge gave {scores!r:.100} for {len(distinct)} responses")
            return [_unit(s) for s in scores]

        return await self._with_retry(user, parse)

    async def _pointwise(self, prompt: str, distinct: list[str]) -> list[float]:
        async def one(text: str) -> float:
            user = (f"Instruction:\n{self._fit(prompt, self.config.max_prompt_chars, 'instruction')}\n\n"
                    f"Response:\n{self._fit(text, self.config.max_chars, 'response')}\n\n"
                    'Return a JSON object {"score": <number in [0, 1]>}.')
            return await self._with_retry(user, lambda reply: _unit(_json_object(reply)["score"]))

        return list(await asyncio.gather(*(one(text) for text in distinct)))

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        distinct = list(dict.fromkeys(candidates))  # identical candidates are judged once
        judged = await (self._listwise if self.config.mode == "listwise" else self._pointwise)(prompt, distinct)
        by_text = dict(zip(distinct, judged))
        return [by_text[c] for c in candidates]
