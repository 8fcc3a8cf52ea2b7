"""One request's candidates and what producing them cost; what a request's handling hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.backends import Candidate, Generation, StreamDelta
from gateway.contract import Contract
from gateway.protocol import Readings, TaoInfo, Usage
from gateway.request import Endpoint


@dataclass
class CandidatePool:
    """One request's candidates in generation order, their rewards, and what producing them cost."""

    candidates: list[Candidate]
    prompt_tokens: int
    upstream_calls: int
    upstream_ms: float
    failures: list[str] = field(default_factory=list)  # candidates lost to partial upstream failures
    scores: list[float | None] = field(default_factory=list)  # all floats, or all None (unscored)
    scoring_ms: float = 0.0
    degraded_reason: str | None = None  # why the scores are missing, when the scorer failed
    violations: list[str | None] = field(default_factory=list)  # per candidate: how it broke the request's contract
    readings: Readings | None = None  # what the scorer read of the prompt, and each candidate's checks

    @classmethod
    def of(cls, generation: Generation, upstream_ms: float) -> CandidatePool:
        return cls(candidates=generation.candidates, prompt_tokens=generation.prompt_tokens,
                   upstream_calls=generation.upstream_calls, upstream_ms=upstream_ms,
                   failures=generation.failures, scores=[None] * len(generation.candidates),
                   violations=[None] * len(generation.candidates))

    def extend(self, more: CandidatePool) -> None:
        """Add a later batch of the same prompt (the prompt was counted with the first)."""
        self.candidates += more.candidates
        self.scores += more.scores
        self.violations += more.violations
        self.upstream_calls += more.upstream_calls
        self.upstream_ms += more.upstream_ms
        self.failures += more.failures

    def add_readings(self, indexes: list[int], readings: Readings) -> None:
        """The readings of a scored batch (candidates `indexes`): the prompt's once, each candidate's checks."""
        if self.readings is None:
            self.readings = readings.model_copy(update={"met": [None] * len(self.candidates)})
        self.readings.met += [None] * (len(self.candidates) - len(self.readings.met))
        for i, met in zip(indexes, readings.met, strict=True):
            self.readings.met[i] = met

    def check(self, contract: Contract | None) -> None:
        """Check every candidate against the request's contract (`gateway.contract`)."""
        if contract is not None:
            self.violations = [contract.violation(c.text, c.message) for c in self.candidates]

    @property
    def held(self) -> list[bool]:
        """Per candidate: did it hold the request's contract (True where there is none)?"""
        return [v is None for v in self.violations]

    @property
    def contract_failure(self) -> str | None:
        """Why the reply is degraded when no candidate held the contract; None when one did."""
        if not self.candidates or any(self.held):
            return None
        return f"no candidate held the request's contract; candidate 0: {self.violations[0]}"

    @property
    def degraded_because(self) -> str | None:
        """Why the reply is degraded (no scores, no candidate that held the contract), or None."""
        return "; ".join(filter(None, [self.degraded_reason, self.contract_failure])) or None

    @property
    def scored(self) -> bool:
        return bool(self.scores) and None not in self.scores

    def usage(self) -> Usage:
        completion_tokens = sum(c.completion_tokens for c in self.candidates)
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=self.prompt_tokens + completion_tokens)


@dataclass
class Outcome:
    """What the HTTP layer shapes into a reply: the returned candidates best first, and the facts."""

    choices: list[Candidate]
    usage: Usage
    tao: TaoInfo


class Failure(NamedTuple):
    """Why a request got no (complete) reply: the HTTP status and the logged message."""

    status: int
    message: str


@dataclass
class StreamedReply:
    """An N=1 reply while it streams: the `tao` object the client gets, and what has arrived."""

    tao: TaoInfo
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # by the stream's index, arguments joined

    def add(self, delta: StreamDelta) -> None:
        self.parts.append(delta.text)
        for piece in (delta.message_delta or {}).get("tool_calls") or []:
            self._add_tool_call(piece)
        self.finish_reason = delta.finish_reason or self.finish_reason
        if delta.prompt_tokens is not None:
            self.prompt_tokens = delta.prompt_tokens
        if delta.completion_tokens is not None:
            self.completion_tokens = delta.completion_tokens

    def _add_tool_call(self, piece: dict[str, Any]) -> None:
        """Fold one streamed tool-call piece in: the first names the call, the rest extend its arguments."""
        call = self.tool_calls.setdefault(int(piece.get("index") or 0), {"function": {"arguments": ""}})
        for key in ("id", "type"):
            if piece.get(key):
                call[key] = piece[key]
        function = piece.get("function") or {}
        if function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] += function.get("arguments") or ""

    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     total_tokens=self.prompt_tokens + self.completion_tokens)

    def message(self, text: str) -> dict[str, Any]:
        """The assistant message the stream added up to (its tool calls included)."""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return message

    def pool(self, endpoint: Endpoint, upstream_ms: float) -> CandidatePool:
        text = "".join(self.parts)
        candidate = Candidate(text=text, finish_reason=self.finish_reason, completion_tokens=self.completion_tokens,
                              message=self.message(text) if endpoint == "chat" else None)
        return CandidatePool(candidates=[candidate], prompt_tokens=self.prompt_tokens, upstream_calls=1,
                             upstream_ms=upstream_ms, scores=[None], violations=[None])
