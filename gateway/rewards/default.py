"""The scorer `tao serve` uses with no config: offline, CPU-only, no API key, sub-millisecond.

For each candidate:

    score = substance * (0.75 * compliance + 0.20 * (1 - repetition) + 0.05 * ends_cleanly)

- compliance: the share of the prompt's verifiable instructions the reply satisfies: the
  instruction kinds of IFEval (word, sentence, paragraph and bullet counts, keywords, language,
  case, JSON, sections, highlights, placeholders, start/end, quotation, no commas, a <<title>>, a
  P.S., ...), read from the prompt by `gateway.rewards.instructions.detect` and checked with
  IFEval's checkers. A prompt with no such instruction gives every reply compliance 1.
- repetition: the share of repeated word trigrams (degenerate loops score low).
- ends_cleanly: 1 when the reply ends with terminal punctuation, a closing bracket or quote
  (i.e. it was not cut off mid-sentence).
- substance: min(1, words / floor), floor = `MIN_WORDS` (6) or half the tightest word limit the prompt
  states, if lower. A near-empty reply ("." or "Ok.") satisfies word limits, forbidden words and
  "no commas" vacuously; without this factor it scored 1.0 and best-of-N (then distillation) learnt
  to say nothing. Any reply of `MIN_WORDS` words or more is unaffected.
An empty reply scores 0. Scores lie in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from gateway.rewards import checks
from gateway.rewards.base import FunctionScorer
from gateway.protocol import InstructionRead, Readings
from gateway.rewards.instructions import Constraint, Reading, read_prompt, warm_up
from gateway.rewards.stopping import check_stopped
from gateway.rewards.text import repetition, words

COMPLIANCE_WEIGHT = 0.75
FLUENCY_WEIGHT = 0.20
CLEAN_END_WEIGHT = 0.05
MIN_WORDS = 6
_CLEAN_ENDINGS = tuple(".!?)]}\"'`»”’>")


def substance_floor(constraints: Sequence[Constraint]) -> float:
    """Words a reply needs for full credit: `MIN_WORDS`, or half the tightest stated word limit."""
    limits = [c.kwargs["upper"] if c.kwargs["relation"] == "between" else c.kwargs["num_words"] for c in constraints
              if c.kind == "number_words" and c.kwargs["relation"] in ("less than", "at most", "between")]
    return max(1.0, min([MIN_WORDS, *(limit / 2 for limit in limits)]))


def _satisfied(constraint: Constraint, text: str) -> bool:
    check_stopped()  # one IFEval check at a time, each on a bounded text (gateway/rewards/reading.py)
    return constraint.satisfied_by(text)


def score_checked(constraints: Sequence[Constraint], met: Sequence[bool], text: str) -> float:
    """The score of a reply whose instructions were checked (`met`, one per constraint)."""
    if not text.strip():
        return 0.0
    substance = min(1.0, len(words(text)) / substance_floor(constraints))
    compliance = sum(met) / len(constraints) if constraints else 1.0
    ends_cleanly = text.rstrip().endswith(_CLEAN_ENDINGS)
    return substance * (
        COMPLIANCE_WEIGHT * compliance
        + FLUENCY_WEIGHT * (1.0 - repetition(text))
        + CLEAN_END_WEIGHT * ends_cleanly
    )


CACHED_PROMPT_CHARS = 32_768  # reward.read's default window is 16 kB: every windowed prompt is cached


@functools.lru_cache(maxsize=256)
def _read_cached(prompt: str) -> Reading:
    return read_prompt(prompt)


def reading_of(prompt: str) -> Reading:
    """The prompt's instructions, read once per prompt: a best-of-N request asks twice (to score the
    candidates, then whether anything was verifiable), and retries ask again. Only prompts up to
    CACHED_PROMPT_CHARS are kept, so the cache's memory stays bounded."""
    return _read_cached(prompt) if len(prompt) <= CACHED_PROMPT_CHARS else read_prompt(prompt)


def constraints_of(prompt: str) -> tuple[Constraint, ...]:
    return reading_of(prompt).constraints


def assess(prompt: str, candidates: Sequence[str]) -> tuple[list[float], Readings]:
    """Every candidate's score, and the readings behind them (which instruction each one met)."""
    reading = reading_of(prompt)
    met = [[_satisfied(c, text) for c in reading.constraints] if text.strip() else [False] * len(reading.constraints)
           for text in candidates]
    scores = [score_checked(reading.constraints, m, text) for m, text in zip(met, candidates)]
    return scores, Readings(instructions=[InstructionRead(kind=c.id, args=c.kwargs) for c in reading.constraints],
                            unverifiable=list(reading.unverifiable), met=list(met))


def instruction_following(prompt: str, candidates: Sequence[str]) -> list[float]:
    return assess(prompt, candidates)[0]


def build() -> FunctionScorer:
    warm_up()  # compile the detector's patterns and load the checkers now, not on a request's event loop
    checks.warm_up()
    return FunctionScorer("default", instruction_following, verifiable=lambda prompt: bool(constraints_of(prompt)),
                          detailed=assess)
