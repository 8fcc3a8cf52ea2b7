"""What a scorer reads of a request: a bounded window of the prompt and of each candidate.

A client may send a prompt of up to `server.max_body_mb`, and an upstream may return a reply of a
megabyte. Scoring reads neither whole, so the time and memory a scorer spends per request are
bounded whatever the input (before this, one 8 MB prompt kept the default scorer busy for minutes):

- the prompt: its first `prompt_head_chars` and its last `prompt_tail_chars` characters. The
  prompt as scorers see it is the system message, then the user turns, in order: the window keeps
  the system message and the last turn, where instructions are stated, and skips the middle of a
  long pasted document (or of a long conversation), where they rarely are;
- each candidate: its first `candidate_head_chars` and its last `candidate_tail_chars`. Counts
  (words, sentences, keywords) are then counted over the window: a reply cut here is already far
  past any length an instruction asks for, and the end (a P.S., a closing phrase) is still read.

Head and tail are joined by a blank line, so no clause is read across the cut. What is skipped is
counted (`tao_scoring_skipped_chars_total`, by part); the window is `reward.read` in the config.
It applies to every scorer built from the config (`build_scorer`), the gateway's and the distill
job's alike; the judge and the reward models then fit what they read to their own context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config import ReadWindow
from gateway.protocol import Readings
from gateway.rewards.base import Scorer, score_with_readings

Part = Literal["prompt", "candidate"]
OnSkipped = Callable[[Part, int], None]
JOINER = "\n\n"


@dataclass(frozen=True)
class Excerpt:
    """The text a scorer reads, and how many characters of the original it leaves out."""

    text: str
    skipped_chars: int


def excerpt(text: str, head_chars: int, tail_chars: int) -> Excerpt:
    """The first `head_chars` and the last `tail_chars` characters, joined by a blank line; the
    text itself when it is no longer than both together."""
    if len(text) <= head_chars + tail_chars:
        return Excerpt(text, 0)
    tail = text[len(text) - tail_chars:] if tail_chars else ""
    return Excerpt(text[:head_chars] + JOINER + tail, len(text) - head_chars - tail_chars)


class WindowedScorer:
    """A scorer that reads only `window` of each prompt and candidate (see the module docstring)."""

    def __init__(self, scorer: Scorer, window: ReadWindow, on_skipped: OnSkipped | None = None) -> None:
        self.scorer = scorer
        self.window = window
        self.name = scorer.name
        self._on_skipped = on_skipped

    def _prompt(self, prompt: str, count: bool = True) -> str:
        cut = excerpt(prompt, self.window.prompt_head_chars, self.window.prompt_tail_chars)
        if cut.skipped_chars and self._on_skipped and count:
            self._on_skipped("prompt", cut.skipped_chars)
        return cut.text

    def _candidates(self, candidates: Sequence[str]) -> list[str]:
        texts = []
        for text in candidates:
            cut = excerpt(text, self.window.candidate_head_chars, self.window.candidate_tail_chars)
            if cut.skipped_chars and self._on_skipped:
                self._on_skipped("candidate", cut.skipped_chars)
            texts.append(cut.text)
        return texts

    async def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        return await self.scorer.score(self._prompt(prompt), self._candidates(candidates))

    async def score_with_readings(self, prompt: str, candidates: Sequence[str]) -> tuple[list[float],
                                                                                         Readings | None]:
        """The wrapped scorer's rewards and readings, on the same window."""
        return await score_with_readings(self.scorer, self._prompt(prompt), self._candidates(candidates))

    async def states_something_verifiable(self, prompt: str) -> bool:
        """The wrapped scorer's answer on the same window."""
        return await self.scorer.states_something_verifiable(self._prompt(prompt, count=False))  # counted when scored
