"""The serving objects behind the routes, one per endpoint family (as vLLM's `OpenAIServingChat`).

Each takes the parsed request and the raw one (for headers) and returns a wire model, a plain
dict, or a stream of SSE bytes; `app.py` turns those into HTTP responses. The completions object
is the request path: bind the request to a model and a rollout arm, then run best-of-N (or pass
an N=1 stream through).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import asdict, replace
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from fastapi import Request

from gateway import sse
from gateway.auth import Auth, bearer
from gateway.backends import Backend
from gateway.backends.replicas import ReplicatedBackend
from gateway.bestofn import Engine, Failure, Outcome
from gateway.config import ModelConfig, Settings
from gateway.contract import Contract
from gateway.errors import APIError, UpstreamError, from_upstream
from gateway.metrics import Metrics
from gateway.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    FeedbackRequest,
    ModelCard,
    ModelList,
    ResponsesRequest,
)
from gateway.request import BEST_OF_HEADER, Endpoint, ServeRequest, resolve_best_of
from gateway.responses import RecentConversations, answer_message, chat_fields, response_object
from gateway.responses import events as responses_events
from gateway.rollout import RolloutManager
from gateway.store import Arm, Conversation, FeedbackKind, Store, distill_run_counts

log = logging.getLogger(__name__)
ARM_HEADER = "x-tao-arm"
T = TypeVar("T")

Reply = ChatCompletionResponse | CompletionResponse | AsyncIterator[bytes]  # a JSON body, or SSE bytes


class ServingCompletions:
    """POST /v1/chat/completions and /v1/completions."""

    def __init__(self, settings: Settings, engine: Engine, rollouts: RolloutManager, auth: Auth) -> None:
        self.settings = settings
        self.engine = engine
        self.rollouts = rollouts
        self.auth = auth

    async def create_chat_completion(self, request: ChatCompletionRequest, raw_request: Request) -> Reply:
        self.admit()
        return await self._serve(self.bind(request, "chat", raw_request), raw_request)

    async def create_completion(self, request: CompletionRequest, raw_request: Request) -> Reply:
        self.admit()
        return await self._serve(self.bind(request, "completion", raw_request), raw_request)

    def admit(self) -> None:
        """Refuse new work while the log cannot keep up: every accepted request must be logged."""
        if not self.engine.store.accepting():
            self.engine.metrics.refused.labels("store_backlog").inc()
            raise APIError(503, "the gateway's request log is backlogged; retry shortly", type="server_error",
                           code="store_backlogged", headers={"Retry-After": "1"})

    async def _serve(self, req: ServeRequest, raw_request: Request) -> Reply:
        if req.body.stream and req.best_of == 1:
            return await self._stream_single(req)
        outcome = await until_disconnected(self.engine.complete(req), raw_request)
        return sse.replay(req, outcome) if req.body.stream else response(req, outcome)

    def bind(self, body: ChatCompletionRequest | CompletionRequest, endpoint: Endpoint,
              raw_request: Request) -> ServeRequest:
        """The model, the rollout arm (and a shadow, if sampled) and N of this request."""
        model = served_model(self.settings, body.model)
        request_id = f"tao-{uuid.uuid4().hex}"
        caller = self.auth.caller(raw_request)
        # A user stays on one arm: the split hashes the `user` field, else the API key.
        route = self.rollouts.route(model, body.user or bearer(raw_request) or request_id,
                                    self._pinned_arm(raw_request))
        shadow = self.rollouts.shadow(model.name) if route.arm == Arm.BASE else None
        try:
            best_of = resolve_best_of(model, body.best_of, raw_request.headers.get(BEST_OF_HEADER), body.n,
                                      default=route.default_best_of)
            contract = Contract.of(body.passthrough())
            refuse_unsupported(model, body)
        except APIError as exc:
            rejected = self.engine.bind(request_id, endpoint, body, model, route, body.best_of or 0, caller)
            self.engine.record(rejected, failure=Failure(exc.status, exc.message))
            raise
        return self.engine.bind(request_id, endpoint, body, model, route, best_of, caller, shadow, contract)

    def _pinned_arm(self, raw_request: Request) -> str | None:
        """The arm an operator pins with `X-TAO-Arm` (admin key only), else None."""
        pinned = raw_request.headers.get(ARM_HEADER)
        if pinned is None:
            return None
        admin = self.auth.is_admin(raw_request)
        if not admin or pinned not in (Arm.BASE, Arm.CANDIDATE):
            raise APIError(400 if admin else 403, "X-TAO-Arm takes base or candidate, with the admin key",
                           type="invalid_request_error" if admin else "permission_error",
                           param="X-TAO-Arm", code="invalid_arm")
        return pinned

    async def _stream_single(self, req: ServeRequest) -> AsyncIterator[bytes]:
        reply, deltas = self.engine.stream_single(req)
        try:  # pull the first piece before answering, so upstream failures keep their status code
            first = await anext(deltas, None)
        except UpstreamError as exc:
            raise from_upstream(exc) from exc
        return sse.stream_through(req, reply, first, deltas)


def served_model(settings: Settings, name: str) -> ModelConfig:
    """The configured model a request names, or the 404 every endpoint answers for an unknown one."""
    model = settings.model_by_name(name)
    if model is None:
        raise APIError(404, f"model {name!r} does not exist; see GET /v1/models",
                       type="not_found_error", param="model", code="model_not_found")
    return model


# What the local backend cannot do, refused up front rather than silently ignored. (`response_format` is
# not here: the local backend does not constrain decoding, but best-of-N still checks every candidate.)
LOCAL_UNSUPPORTED = {
    "logprobs": "the local backend does not return logprobs; serve the model with vLLM for them",
    "top_logprobs": "the local backend does not return logprobs; serve the model with vLLM for them",
    "tools": "the local backend has no tool-call parser; serve the model with vLLM (--enable-auto-tool-choice) "
             "or a provider for tools",
}


def refuse_unsupported(model: ModelConfig, body: ChatCompletionRequest | CompletionRequest) -> None:
    """A 400 naming a field the model's backend would otherwise drop without a word."""
    if model.backend != "local":
        return
    extra = body.passthrough()
    for param, why in LOCAL_UNSUPPORTED.items():
        value = extra.get(param)
        if value is not None and value is not False and value != []:
            raise APIError(400, f"{param}: {why}", param=param, code="unsupported_parameter")


async def until_disconnected(work: Coroutine[Any, Any, T], raw_request: Request) -> T:
    """The result of `work`, unless the client disconnects first: then `work` is cancelled (its
    upstream calls with it; the engine logs the request as 499) instead of running to the end
    for nobody."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(raw_request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler itself was cancelled (shutdown): take the work down too
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise APIError(499, "client disconnected before the reply was ready", code="client_disconnected")
    return task.result()


async def _disconnect(raw_request: Request) -> None:
    """Returns when the client goes away (the body has been read: the next message is the disconnect)."""
    while (await raw_request.receive())["type"] != "http.disconnect":
        pass


def response(req: ServeRequest, outcome: Outcome) -> ChatCompletionResponse | CompletionResponse:
    """The non-streamed reply: the returned candidates best first, usage, and `tao`."""
    common = {"id": req.request_id, "created": int(req.created), "model": req.model.name,
              "usage": outcome.usage, "tao": outcome.tao}
    if req.endpoint == "chat":
        choices = [ChatChoice(index=i, message=c.message or {"role": "assistant", "content": c.text},
                              finish_reason=c.finish_reason, logprobs=c.logprobs) for i, c in enumerate(outcome.choices)]
        return ChatCompletionResponse(choices=choices, **common)
    return CompletionResponse(choices=[CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason,
                                                        logprobs=c.logprobs)
                                       for i, c in enumerate(outcome.choices)], **common)


class ServingResponses:
    """POST /v1/responses: the request as a chat request, served by the completions object (best-of-N,
    contract checks, the log: `tao` and distill see it like any chat request), answered as a Response
    (`gateway/responses.py`)."""

    def __init__(self, completions: ServingCompletions, store: Store) -> None:
        self.completions = completions
        self.store = store
        self.recent = RecentConversations()

    async def create_response(self, body: ResponsesRequest, raw_request: Request) -> dict[str, Any] | AsyncIterator[bytes]:
        self.completions.admit()
        for i, tool in enumerate(body.tools or []):  # hosted tools (web search, files, computer) run nowhere here
            if tool.get("type") != "function":
                raise APIError(400, f"tools[{i}]: only function tools are served, not {tool.get('type')!r}",
                               param=f"tools[{i}].type", code="unsupported_tool")
        caller = self.completions.auth.caller(raw_request)
        history = await self._history(body.previous_response_id, caller)
        try:
            fields = chat_fields(body, history)
        except Exception as exc:  # noqa: BLE001 - LiteLLM's reading of items it cannot map
            raise APIError(400, f"input could not be read as Responses items: {type(exc).__name__}: {exc}",
                           param="input", code="invalid_input") from None
        chat = ChatCompletionRequest.model_validate({**fields, "model": body.model, "best_of": body.best_of,
                                                     **({"user": body.user} if body.user else {})})
        req = replace(self.completions.bind(chat, "chat", raw_request), via_responses=True)
        outcome = await until_disconnected(self.completions.engine.complete(req), raw_request)
        self.recent.remember(req.request_id, Conversation(caller, req.upstream.messages or [], answer_message(outcome)))
        return responses_events(body, req, outcome) if body.stream else response_object(body, req, outcome)

    async def _history(self, previous_response_id: str | None, caller: str) -> list[dict[str, Any]]:
        """The conversation a previous response of this caller ended with; a 400 for any other id."""
        if previous_response_id is None:
            return []
        found = self.recent.get(previous_response_id) or await asyncio.to_thread(
            self.store.conversation_of, previous_response_id)
        if found is None or found.caller != caller:  # another caller's id reads as unknown: ids are not disclosed
            raise APIError(400, f"previous_response_id {previous_response_id!r} is not a response of this caller "
                           "that this gateway has logged", param="previous_response_id",
                           code="previous_response_not_found")
        return found.continued()


class ServingEmbeddings:
    """POST /v1/embeddings: passed through to the model's upstream, counted and logged in one line
    (not in the request log: there is nothing to choose between, nothing to distill)."""

    def __init__(self, settings: Settings, backends: dict[str, Backend], metrics: Metrics) -> None:
        self.settings = settings
        self.backends = backends
        self.metrics = metrics

    async def create_embedding(self, request: EmbeddingRequest) -> dict[str, Any]:
        model = served_model(self.settings, request.model)
        started = time.perf_counter()
        status = 200
        try:
            answer = await self.backends[model.name].embed(request.model_dump(exclude_none=True))
        except UpstreamError as exc:
            error = from_upstream(exc)
            if exc.upstream_status == 404:
                error = APIError(404, f"the upstream of model {model.name} has no embeddings endpoint (it answered 404)",
                                 type="not_found_error", param="model", code="embeddings_not_supported")
            status = error.status
            raise error from exc
        finally:
            self.metrics.embedding_requests.labels(model.name, str(status)).inc()
            count = len(request.input) if isinstance(request.input, list) and not isinstance(request.input[0], int) else 1
            log.info("embeddings %s: %d input%s, HTTP %d, %.0f ms", model.name, count, "" if count == 1 else "s",
                     status, (time.perf_counter() - started) * 1000)
        return {**answer, "model": model.name}


class ServingFeedback:
    """POST /v1/feedback: a person's verdict on a logged reply, one row per (request, user).

    With API keys configured, only the key that made the request (or the admin key) may give
    feedback on it, so one key can neither overwrite nor forge another's verdicts; `user` then
    only names the person behind that key. An open gateway has no identities to check.
    """

    def __init__(self, store: Store, auth: Auth) -> None:
        self.store = store
        self.auth = auth

    async def create_feedback(self, request: FeedbackRequest, raw_request: Request) -> dict[str, Any]:
        logged = await asyncio.to_thread(self.store.candidates_of, request.request_id)
        if logged is None:
            raise APIError(404, f"no logged request {request.request_id!r}", type="not_found_error",
                           param="request_id", code="request_not_found")
        caller = self.auth.caller(raw_request)
        if self.auth.config.api_keys and not self.auth.is_admin(raw_request):
            made_by = await asyncio.to_thread(self.store.caller_of, request.request_id)
            if made_by != caller:
                raise APIError(403, f"request {request.request_id} was made with another API key; only that key "
                               "(or the admin key) may give feedback on it", type="permission_error",
                               param="request_id", code="not_your_request")
        count, winner = logged
        for param in ("preferred", "chosen", "rejected"):
            index = getattr(request, param)
            if index is not None and index >= count:
                raise APIError(400, f"{param} {index} is out of range: request {request.request_id} has "
                               f"{count} candidates", param=param, code="invalid_candidate_index")
        candidate_index = {FeedbackKind.PREFERENCE: request.preferred, FeedbackKind.RATING: winner,
                           FeedbackKind.PAIRWISE: request.chosen}
        row = {"request_id": request.request_id, "user": request.user or caller,
               "created_at": time.time(), "kind": request.kind, "candidate_index": candidate_index[request.kind],
               "rejected_index": request.rejected, "rating": request.rating, "comment": request.comment}
        await asyncio.to_thread(self.store.record_feedback, row)
        return {"object": "feedback", **row}


class ServingInfo:
    """The read-only endpoints: GET /v1/models, /healthz and /metrics."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, backends: dict[str, Backend]) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.backends = backends
        self.started_at = int(time.time())

    def list_models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=m.name, created=self.started_at, best_of=m.best_of,
                                         max_best_of=m.max_best_of) for m in self.settings.models])

    def health(self) -> tuple[dict[str, Any], int]:
        """The health body and its status: 503 (with the reason) while the log cannot take records;
        "degraded" (still 200: the gateway serves, and answers 502 for a model none of whose servers
        answer) while a model's server is out, named in `replicas_down`."""
        store = self.store.health()
        replicas = {name: [asdict(r) for r in backend.health()] for name, backend in self.backends.items()
                    if isinstance(backend, ReplicatedBackend)}
        down = [f"{name} api_base[{r['api_base_index']}]" for name, listed in replicas.items() for r in listed
                if not r["up"]]
        body = {"status": "unavailable" if not store.ok else "degraded" if down else "ok",
                "models": [m.name for m in self.settings.models],
                "store_queue_depth": store.queue_depth, "store_max_queue": store.max_queue,
                "store_last_error": store.last_error, "replicas": replicas, "replicas_down": down}
        if not store.ok:
            body["reason"] = store.reason
        return body, 200 if store.ok else 503

    def render_metrics(self) -> bytes:
        """The metrics text; the distill outcomes are read from the log (a small GROUP BY) per scrape."""
        self.metrics.store_queue_depth.set(self.store.queue_depth())
        with self.store.connection() as db:
            for outcome, count in distill_run_counts(db).items():
                self.metrics.distill_runs.labels(outcome).set(count)
        return self.metrics.render()
