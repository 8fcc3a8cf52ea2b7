"""OpenAI wire-format models plus the TAO extensions. Nothing else lives here.

Requests accept unknown fields (`extra="allow"`): they pass through to upstreams that understand
them (tools, response_format, logprobs, ...) and are ignored by backends that do not, as OpenAI
ignores what it does not use.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 128


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Plain text of the message; multi-part content keeps its text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class SamplingFields(BaseModel):
    """Fields shared by both completion endpoints; anything unknown is kept in `model_extra`."""

    model_config = ConfigDict(extra="allow")

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    tao_readings: bool = Field(False, description="Add `tao.readings` to the reply: the instructions the scorer "
                               "read in the prompt and which each candidate met (they are logged either way).")

    def passthrough(self) -> dict[str, Any]:
        """Fields we do not interpret ourselves, to hand to the upstream unchanged."""
        return dict(self.model_extra or {})

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def prompt_text(self) -> str:
        return scored_prompt(self.messages)


def scored_prompt(messages: list[ChatMessage]) -> str:
    """What scorers read of a conversation: the system instructions and every user turn, in order
    (a constraint stated in an earlier turn still applies to the reply)."""
    return "\n\n".join(m.text() for m in messages if m.role in ("system", "developer", "user"))


class CompletionRequest(SamplingFields):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ResponsesRequest(BaseModel):
    """Body of POST /v1/responses. Served as a chat request (`gateway/responses.py`); fields this model
    does not name are accepted and left out, as OpenAI does with what it does not use."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    reasoning: dict[str, Any] | None = None
    stream: bool = False
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    user: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class InstructionRead(BaseModel):
    """One instruction the scorer read in the prompt: an IFEval instruction id and its arguments."""

    kind: str
    args: dict[str, Any] = Field(default_factory=dict)


class Readings(BaseModel):
    """What the default scorer read of a prompt and checked of each candidate: enough to debug a wrong
    reading from one request."""

    instructions: list[InstructionRead] = Field(description="The instructions it verifies, in the order read.")
    unverifiable: list[str] = Field(description="Constraint sentences it saw and cannot verify whole: left out of "
                                    "the score, never read as a nearby kind.")
    met: list[list[bool] | None] = Field(description="Per candidate, in generation order: for each instruction, "
                                         "whether the candidate meets it (null: not scored).")


class TaoInfo(BaseModel):
    """The `tao` object every reply carries."""

    request_id: str
    best_of: int
    n: int
    scores: list[float | None] = Field(description="Reward per candidate, in generation order.")
    winner: int | None = Field(description="Index of the top-scored candidate (the first choice).")
    ranking: list[int] = Field(description="Indexes of the returned choices, best first.")
    model_version: str
    arm: str
    degraded: bool = False
    degraded_reason: str | None = None
    violations: list[str | None] | None = Field(
        None, description="Per candidate, how it broke the request's contract (tools' schemas, tool_choice, "
        "response_format); null where it held. Present only when the request has such a contract.")
    readings: Readings | None = Field(None, description="What the scorer read and checked; present when the request "
                                      "sets tao_readings and the scorer reads instructions (the default one).")


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    tao: TaoInfo


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    tao: TaoInfo


class EmbeddingRequest(BaseModel):
    """Body of POST /v1/embeddings; passed through to the model's upstream (other fields too)."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[str] | list[int] | list[list[int]] = Field(description="Text or token ids to embed.")
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be empty")
        return value


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tao-gateway"
    best_of: int
    max_best_of: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class RolloutStart(BaseModel):
    """Body of POST /admin/rollout/{model}/start."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="A registered checkpoint id (see the checkpoints table).")
    canary: float | None = Field(None, gt=0, le=100, description="Initial candidate share in percent.")
    best_of: int | None = Field(None, ge=1, description="N the candidate arm serves at (default: rollout.candidate_best_of; with auto, the k distill "
                                "chose for the checkpoint).")
    force: bool = Field(False, description="Start a checkpoint the eval gate rejected, or a retired one.")


class FeedbackRequest(BaseModel):
    """Body of POST /v1/feedback: a person's verdict on a logged reply. Give exactly one of
    `preferred` (the best candidate's index), `rating` (of the served answer, 0 = bad .. 1 = good),
    or `chosen` with `rejected` (a pairwise verdict between two candidates)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    user: str | None = Field(None, description="Whose verdict; default: the caller's API key (hashed).")
    preferred: int | None = Field(None, ge=0)
    rating: float | None = Field(None, ge=0, le=1)
    chosen: int | None = Field(None, ge=0)
    rejected: int | None = Field(None, ge=0)
    comment: str | None = None

    @model_validator(mode="after")
    def _one_verdict(self) -> FeedbackRequest:
        given = [self.preferred is not None, self.rating is not None,
                 self.chosen is not None or self.rejected is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of: preferred, rating, or chosen with rejected")
        if given[2] and (self.chosen is None or self.rejected is None or self.chosen == self.rejected):
            raise ValueError("a pairwise verdict needs two different indexes: chosen and rejected")
        return self

    @property
    def kind(self) -> str:
        return "preference" if self.preferred is not None else "rating" if self.rating is not None else "pairwise"


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
