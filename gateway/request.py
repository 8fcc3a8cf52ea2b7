"""A request bound to its model, rollout arm and N: what every step of the engine reads.

The upstream request (sampling fields resolved against the model's defaults) and the prompt text
the scorers read are worked out once per request, here, and reused by every upstream call, every
scoring and the log (whose `params` column is exactly what was sent upstream).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Literal

from gateway.backends import GenerationRequest
from gateway.config import ModelConfig
from gateway.contract import Contract
from gateway.errors import APIError
from gateway.protocol import ChatCompletionRequest, CompletionRequest
from gateway.rollout import Route
from gateway.store import SHADOW_SUFFIX

BEST_OF_HEADER = "x-tao-best-of"

Endpoint = Literal["chat", "completion"]


@dataclass
class ServeRequest:
    """A parsed, authorised request bound to its model and rollout arm, before any generation.

    What every upstream call sends (`upstream`) and what the scorers read (`prompt`) are worked
    out once, when it is bound (`Engine.bind`), and reused by each call, each scoring and the log.
    """

    request_id: str
    endpoint: Endpoint
    body: ChatCompletionRequest | CompletionRequest
    model: ModelConfig
    best_of: int
    route: Route
    model_version: str  # the checkpoint on a rollout arm, else the backend's label
    upstream: GenerationRequest  # sampling and passthrough fields resolved; `n` is set per call
    prompt: str
    caller: str  # salted hash of the caller's key (gateway/auth.py), logged to tie feedback to it
    shadow: Route | None = None  # also answer this request on the candidate arm, in the background
    contract: Contract | None = None  # what every answer must hold: tools' schemas, tool_choice, response_format
    via_responses: bool = False  # asked through /v1/responses (served as chat; logged as endpoint "responses")
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return self.body.n

    @property
    def arm(self) -> str:
        return self.route.arm

    def call(self, n: int) -> GenerationRequest:
        """The upstream request for `n` candidates of this prompt."""
        return replace(self.upstream, n=n)

    def on_shadow_arm(self) -> ServeRequest:
        """The same prompt for the rollout candidate to answer in the background (never streamed)."""
        assert self.shadow is not None, "no shadow route sampled for this request"
        route = self.shadow
        return replace(self, request_id=self.request_id + SHADOW_SUFFIX, body=self.body.model_copy(update={"stream": False}),
                       best_of=max(route.default_best_of, self.n), route=route,
                       model_version=route.model_version or self.model_version,
                       upstream=replace(self.upstream, adapter=route.adapter), shadow=None,
                       created=time.time(), started=time.perf_counter())


def upstream_request(body: ChatCompletionRequest | CompletionRequest, model: ModelConfig,
                     adapter: str | None) -> GenerationRequest:
    """What goes upstream: the client's passthrough fields, sampling fields resolved against the
    model's defaults, and the messages or prompt (n=1; `ServeRequest.call` sets it)."""
    max_tokens = body.max_tokens
    if isinstance(body, ChatCompletionRequest):
        max_tokens = max_tokens or body.max_completion_tokens
    params = {
        **body.passthrough(),
        "temperature": model.temperature if body.temperature is None else body.temperature,
        "top_p": model.top_p if body.top_p is None else body.top_p,
        "max_tokens": max_tokens or model.max_tokens,
    }
    if body.stop is not None:
        params["stop"] = body.stop_list()
    if body.seed is not None:
        params["seed"] = body.seed
    if body.user is not None:
        params["user"] = body.user
    if isinstance(body, ChatCompletionRequest):
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        return GenerationRequest(kind="chat", n=1, params=params, messages=messages, adapter=adapter)
    return GenerationRequest(kind="completion", n=1, params=params, prompt=body.prompt_text(), adapter=adapter)


def resolve_best_of(model: ModelConfig, body_best_of: int | None, header: str | None, n: int,
                    default: int | None = None) -> int:
    """N from the body, else the `X-TAO-Best-Of` header, else the default (the model's, or its
    rollout arm's); bounded by the model's max_best_of and at least n."""
    if body_best_of is not None:
        best_of, source = body_best_of, "best_of"
    elif header is not None:
        try:
            best_of, source = int(header), "X-TAO-Best-Of"
        except ValueError:
            raise APIError(400, f"header X-TAO-Best-Of must be an integer, got {header!r}",
                           param="best_of", code="invalid_best_of") from None
        if best_of < 1:
            raise APIError(400, "X-TAO-Best-Of must be at least 1", param="best_of", code="invalid_best_of")
    else:
        best_of, source = max(model.best_of if default is None else default, n), None
    if best_of > model.max_best_of:
        raise APIError(400, f"best_of {best_of} exceeds the maximum of {model.max_best_of} for model "
                       f"{model.name}", param="best_of", code="best_of_too_large")
    if best_of < n:
        raise APIError(400, f"{source} ({best_of}) must be greater than or equal to n ({n})",
                       param="best_of", code="invalid_best_of")
    return best_of
