"""The Responses API (`POST /v1/responses`) as a view over chat completions.

A Responses request is turned into a chat request and served by the same engine (best-of-N, the
contract checks, the log), and the chosen chat answer is turned back into a Response. Both turns are
LiteLLM's own (`LiteLLMCompletionResponsesConfig`, what its proxy uses to bridge providers without a
Responses endpoint), so the item shapes follow one maintained mapping; this module adds only what a
gateway needs beside it:

- `previous_response_id` from this gateway's own memory of recent answers, else from the log, and only
  for the caller who made it (LiteLLM's proxy reads its spend logs for that; we have the request log);
- the usage details and ids the OpenAI SDK's types require, and the `tao` object;
- streaming as the Responses event sequence, replayed once the answer is chosen (as best-of-N chat
  streams are), built by LiteLLM's `build_synthetic_response_events`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import litellm
import orjson
from litellm.responses.litellm_completion_transformation import transformation as bridge_module
from litellm.responses.litellm_completion_transformation.transformation import (
    LiteLLMCompletionResponsesConfig as Bridge,
)
from litellm.responses.streaming_iterator import build_synthetic_response_events

from gateway.bestofn import Outcome
from gateway.protocol import ResponsesRequest
from gateway.request import ServeRequest
from gateway.store import Conversation, assistant_turn

litellm.suppress_debug_info = True  # it prints a provider list for model names it does not know

# Chat fields a converted request may carry to the engine; LiteLLM adds `model`, `stream` and its own
# `custom_llm_provider`, which the chat body gets from elsewhere or not at all.
CHAT_FIELDS = ("tools", "tool_choice", "response_format", "max_tokens", "temperature", "top_p", "parallel_tool_calls",
               "user", "seed", "stop", "reasoning_effort")
REMEMBERED = 512  # recent answers kept in memory for previous_response_id (older ones are read from the log)
STREAM_CHUNK_CHARS = 16  # text per replayed output_text.delta event


class RecentConversations:
    """The last `REMEMBERED` answers of this gateway, so a `previous_response_id` sent right after its
    response (before the log has it: at N=1 the record is written after scoring) is still found."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._items: OrderedDict[str, Conversation] = OrderedDict()

    def remember(self, response_id: str, conversation: Conversation) -> None:
        self._items[response_id] = conversation
        self._items.move_to_end(response_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, response_id: str) -> Conversation | None:
        return self._items.get(response_id)


def chat_fields(body: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat request a Responses request amounts to (messages and the chat fields), after `history`
    (a previous response's conversation, whose instructions do not carry over, as OpenAI has it)."""
    options = body.model_dump(exclude_none=True, exclude={"model", "input", "stream", "best_of", "previous_response_id"})
    converted = Bridge.transform_responses_api_request_to_chat_completion_request(
        model=body.model, input=body.input, responses_api_request=options, custom_llm_provider=None, stream=False)
    messages = [_without_stream_index(m) for m in converted["messages"]]
    if history:
        instructions = [m for m in messages[:1] if body.instructions and m.get("role") == "system"]
        earlier = [m for m in history if not (body.instructions and m.get("role") in ("system", "developer"))]
        messages = [*instructions, *earlier, *messages[len(instructions):]]
    fields = {key: converted[key] for key in CHAT_FIELDS if converted.get(key) is not None}
    return {"messages": messages, **fields}


def _without_stream_index(message: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM gives an input's tool calls a streaming `index`; a chat request's messages have none."""
    if not message.get("tool_calls"):
        return message
    calls = [{k: v for k, v in call.items() if k != "index"} for call in message["tool_calls"]]
    return {**message, "tool_calls": calls}


def _converted(body: ResponsesRequest, req: ServeRequest, outcome: Outcome) -> Any:
    """LiteLLM's Response (its pydantic model) for the chosen answer, under this request's id."""
    chat = {"id": req.request_id, "object": "chat.completion", "created": int(req.created), "model": req.model.name,
            "choices": [{"index": 0, "message": answer_message(outcome), "finish_reason": outcome.choices[0].finish_reason}],
            "usage": outcome.usage.model_dump()}
    options = body.model_dump(exclude_none=True, exclude={"model", "input", "stream", "best_of"})
    converted = Bridge.transform_chat_completion_response_to_responses_api_response(
        request_input=body.input, responses_api_request=options, chat_completion_response=chat)
    # LiteLLM remembers every converted tool call process-wide (an internal cache), and puts it back in
    # front of a later function_call_output with the same call id: from any caller, and twice where the
    # conversation is ours already (previous_response_id). A gateway serves many callers; it must not.
    # (A LiteLLM without that cache has nothing to forget; the previous_response_id test would show a change.)
    remembered = getattr(bridge_module, "TOOL_CALLS_CACHE", None)
    for call in chat["choices"][0]["message"].get("tool_calls") or []:
        if remembered is not None:
            remembered.delete_cache(call.get("id") or "")
    return converted


def _as_json(converted: Any, body: ResponsesRequest, outcome: Outcome) -> dict[str, Any]:
    """The Response as the client gets it: the usage details the SDK's types require, and `tao`."""
    response = converted.model_dump(exclude_none=True, by_alias=True)
    usage = response.get("usage") or {}
    response["usage"] = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0),
                         "total_tokens": usage.get("total_tokens", 0),
                         "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                         "output_tokens_details": {"reasoning_tokens": 0}}
    response.update(previous_response_id=body.previous_response_id, user=body.user, tao=outcome.tao.model_dump())
    return {k: v for k, v in response.items() if v is not None}


def response_object(body: ResponsesRequest, req: ServeRequest, outcome: Outcome) -> dict[str, Any]:
    """The Response for the chosen answer (its id is the request's, as the log knows it)."""
    return _as_json(_converted(body, req, outcome), body, outcome)


def answer_message(outcome: Outcome) -> dict[str, Any]:
    """The assistant turn a later response continues from."""
    winner = outcome.choices[0]
    return assistant_turn(winner.message or {"role": "assistant", "content": winner.text})


async def events(body: ResponsesRequest, req: ServeRequest, outcome: Outcome) -> AsyncIterator[bytes]:
    """The chosen answer as the Responses stream: created, in_progress, each output item added, its
    text or arguments in deltas, done, and completed (carrying `tao`)."""
    converted = _converted(body, req, outcome)
    response = _as_json(converted, body, outcome)
    for event in build_synthetic_response_events(transformed=converted, logging_obj=None, chunk_size=STREAM_CHUNK_CHARS):
        data = event.model_dump(exclude_none=True, by_alias=True)
        if data["type"].startswith("response.output_text."):
            data.setdefault("logprobs", [])
        if "response" in data:  # every lifecycle event carries the same Response; the first two, still empty
            early = data["type"] in ("response.created", "response.in_progress")
            data["response"] = {**response, "status": "in_progress", "output": []} if early else response
        yield f"event: {data['type']}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"
