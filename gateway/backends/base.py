"""What every backend takes and returns. A backend generates; it never scores or logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass
class GenerationRequest:
    """One prompt, N samples. `params` holds sampling fields and upstream passthrough fields."""

    kind: Literal["chat", "completion"]
    n: int
    params: dict[str, Any]
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    adapter: str | None = None  # a LoRA adapter loaded with `load_adapter`, instead of the base weights


@dataclass
class Candidate:
    text: str
    finish_reason: str | None
    completion_tokens: int
    message: dict[str, Any] | None = None  # chat: the full assistant message (tool_calls included)
    logprobs: Any = None  # the choice's `logprobs` as the upstream sent it (asked for with logprobs)


@dataclass
class Generation:
    candidates: list[Candidate]
    prompt_tokens: int
    upstream_calls: int
    failures: list[str] = field(default_factory=list)  # candidates lost to partial failures


@dataclass
class StreamDelta:
    """A piece of a streamed N=1 reply; the last one carries finish_reason and token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    message_delta: dict[str, Any] | None = None  # raw chat delta (tool calls) when the upstream sent one
    logprobs: Any = None  # this piece's `logprobs`, as the upstream sent them


class Backend(Protocol):
    """A way to generate candidates for one configured model."""

    model_version: str

    async def start(self) -> None:
        """Load weights or open connections; called once before serving."""

    async def close(self) -> None:
        """Release what `start` acquired."""

    async def generate(self, request: GenerationRequest) -> Generation:
        """All `request.n` candidates (fewer only on partial failure); raises UpstreamError."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """One candidate, token by token."""

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI /embeddings answer for `body`; raises UpstreamError (404 where the backend has none)."""

    async def load_adapter(self, name: str, path: str) -> None:
        """Make a LoRA adapter servable as `GenerationRequest.adapter = name`; raises on failure."""

    async def unload_adapter(self, name: str) -> None:
        """Free a loaded adapter (after a rollback); one that is not loaded is not an error."""
