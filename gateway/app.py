"""The FastAPI app factory and routes: parse, authorise, call the engine, shape the reply."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.backends import Backend, StreamDelta, build_backend
from gateway.bestofn import BEST_OF_HEADER, Engine, Outcome, ServeRequest, resolve_best_of
from gateway.config import Settings
from gateway.errors import APIError, UpstreamError, from_upstream
from gateway.metrics import Metrics
from gateway.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    FeedbackRequest,
    ModelList,
    RolloutStart,
    TaoInfo,
)
from gateway.rewards import build_scorer
from gateway.rollout import BASE_ARM, RolloutManager
from gateway.store import Store

ARM_HEADER = "x-tao-arm"

log = logging.getLogger(__name__)


def _json(content: Any, status: int = 200) -> Response:
    if isinstance(content, BaseModel):
        content = content.model_dump()
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _validation_error(exc: ValidationError | RequestValidationError) -> APIError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return APIError(422, f"{param}: {first.get('msg')}" if param else str(first.get("msg")),
                    param=param, code="invalid_value")


async def _parse(request: Request, model_cls: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def create_app(settings: Settings) -> FastAPI:
    """A gateway for these settings. Backends load and the store writer starts at app startup."""
    metrics = Metrics()
    store = Store(
        settings.store.path,
        batch_size=settings.store.batch_size,
        flush_interval_s=settings.store.flush_interval_s,
        max_retries=settings.store.max_retries,
        on_written=metrics.store_rows_written.inc,
        on_write_error=metrics.store_write_errors.inc,
    )
    backends: dict[str, Backend] = {m.name: build_backend(m) for m in settings.models}
    engine = Engine(backends, build_scorer(settings.reward), settings.reward, store, metrics)
    rollouts = RolloutManager(settings, backends, store, metrics)
    started_at = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.start()
        if not settings.auth.api_keys:
            log.warning("auth: no API keys configured; the gateway is OPEN to anyone who can reach it")
        if not settings.auth.admin_key:
            log.warning("auth: no admin key configured; /admin routes are as open as the API")
        await asyncio.gather(*(b.start() for b in backends.values()))
        await rollouts.resume()
        rollouts.start_policy()
        for m in settings.models:
            log.info("serving %s (%s backend, %s) best_of=%d max_best_of=%d", m.name, m.backend, m.model,
                     m.best_of, m.max_best_of)
        try:
            yield
        finally:
            await rollouts.stop_policy()
            await engine.drain()
            await asyncio.gather(*(b.close() for b in backends.values()), return_exceptions=True)
            store.close()
            log.info("store flushed to %s", store.path)

    app = FastAPI(title="TAO Gateway", version=__version__, lifespan=lifespan)
    app.state.settings, app.state.engine, app.state.store, app.state.metrics = settings, engine, store, metrics
    app.state.rollouts = rollouts

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return _json(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        error = _validation_error(exc)
        return _json(error.body(), error.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _json(APIError(exc.status_code, str(exc.detail), type=kind).body(), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _json(APIError(500, f"internal error: {type(exc).__name__}", type="server_error").body(), 500)

    async def require_api_key(request: Request) -> None:  # async: a sync dependency costs a thread hop
        keys = settings.auth.api_keys
        if not keys:
            return
        token = bearer(request)
        if not any(secrets.compare_digest(token, k) for k in keys) and not (
                settings.auth.admin_key and secrets.compare_digest(token, settings.auth.admin_key)):
            raise APIError(401, "invalid or missing API key (Authorization: Bearer <key>)",
                           type="authentication_error", code="invalid_api_key")

    def bearer(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" else ""

    def is_admin(request: Request) -> bool:
        admin_key = settings.auth.admin_key
        return admin_key is None or secrets.compare_digest(bearer(request), admin_key)

    async def require_admin(request: Request) -> None:
        if not is_admin(request):
            raise APIError(401, "admin routes need the admin key (Authorization: Bearer <admin key>)",
                           type="authentication_error", code="invalid_admin_key")

    def bind(request: Request, body: ChatCompletionRequest | CompletionRequest, endpoint: str) -> ServeRequest:
        model = settings.model_by_name(body.model)
        if model is None:
            raise APIError(404, f"model {body.model!r} does not exist; see GET /v1/models",
                           type="not_found_error", param="model", code="model_not_found")
        request_id = f"tao-{uuid.uuid4().hex}"
        pinned = request.headers.get(ARM_HEADER)
        if pinned is not None:
            admin = is_admin(request)
            if not admin or pinned not in ("base", "candidate"):
                raise APIError(400 if admin else 403, "X-TAO-Arm takes base or candidate, with the admin key",
                               type="invalid_request_error" if admin else "permission_error",
                               param="X-TAO-Arm", code="invalid_arm")
        # A user stays on one arm: the split hashes the `user` field, else the API key.
        route = rollouts.route(model, body.user or bearer(request) or request_id, pinned)
        req = ServeRequest(request_id=request_id, endpoint=endpoint, body=body, model=model, best_of=0,
                           arm=route.arm, adapter=route.adapter, model_version=route.model_version)
        if route.arm == BASE_ARM:
            req.shadow = rollouts.shadow(model.name)
        try:
            req.best_of = resolve_best_of(model, body.best_of, request.headers.get(BEST_OF_HEADER), body.n,
                                          default=route.default_best_of)
        except APIError as exc:
            req.best_of = body.best_of or 0
            engine.record_failure(req, exc.status, exc.message)
            raise
        return req

    async def serve(request: Request, endpoint: str) -> Response:
        model_cls = ChatCompletionRequest if endpoint == "chat" else CompletionRequest
        req = bind(request, await _parse(request, model_cls), endpoint)
        if req.body.stream and req.best_of == 1:
            return await stream_through(req)
        outcome = await engine.complete(req)
        if req.body.stream:
            return StreamingResponse(replay(req, outcome), media_type="text/event-stream")
        return _json(shape(req, outcome))

    def shape(req: ServeRequest, outcome: Outcome) -> ChatCompletionResponse | CompletionResponse:
        common = {"id": req.request_id, "created": int(req.created), "model": req.model.name,
                  "usage": outcome.usage, "tao": outcome.tao}
        if req.endpoint == "chat":
            choices = [ChatChoice(index=i, message=c.message or {"role": "assistant", "content": c.text},
                                  finish_reason=c.finish_reason) for i, c in enumerate(outcome.choices)]
            return ChatCompletionResponse(choices=choices, **common)
        choices = [CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason)
                   for i, c in enumerate(outcome.choices)]
        return CompletionResponse(choices=choices, **common)

    def chunk(req: ServeRequest, index: int, text: str | None, finish: str | None,
              delta: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        base = {"id": req.request_id, "created": int(req.created), "model": req.model.name}
        if req.endpoint == "chat":
            choice_delta = dict(delta or {})
            if text:
                choice_delta["content"] = text
            choice = {"index": index, "delta": choice_delta, "finish_reason": finish, "logprobs": None}
            return {**base, "object": "chat.completion.chunk", "choices": [choice], **extra}
        choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        return {**base, "object": "text_completion", "choices": [choice], **extra}

    def wants_usage(req: ServeRequest) -> bool:
        return bool((req.body.stream_options or {}).get("include_usage"))

    async def replay(req: ServeRequest, outcome: Outcome) -> AsyncIterator[bytes]:
        """best_of > 1: the winners are known; send each as a stream."""
        last = len(outcome.choices) - 1
        for i, c in enumerate(outcome.choices):
            role = {"role": "assistant"} if req.endpoint == "chat" else None
            yield _sse(chunk(req, i, None, None, delta=role) if role else chunk(req, i, "", None))
            extra_delta = {k: v for k, v in (c.message or {}).items() if k == "tool_calls" and v}
            yield _sse(chunk(req, i, c.text, None, delta=extra_delta or None))
            tao = {"tao": outcome.tao.model_dump()} if i == last else {}
            yield _sse(chunk(req, i, None, c.finish_reason, **tao))
        if wants_usage(req):
            yield _sse({"id": req.request_id, "object": "chat.completion.chunk" if req.endpoint == "chat"
                        else "text_completion", "created": int(req.created), "model": req.model.name,
                        "choices": [], "usage": outcome.usage.model_dump()})
        yield b"data: [DONE]\n\n"

    async def stream_through(req: ServeRequest) -> Response:
        """best_of = 1: tokens go straight from the upstream to the client."""
        tao = TaoInfo(request_id=req.request_id, best_of=1, n=1, scores=[None], winner=0, ranking=[0],
                      model_version=engine.version(req), arm=req.arm)
        deltas = engine.stream_single(req, tao)
        try:  # pull the first piece before answering, so upstream failures keep their status code
            first: StreamDelta | None = await deltas.__anext__()
        except StopAsyncIteration:
            first = None
        except UpstreamError as exc:
            raise from_upstream(exc) from exc

        async def events() -> AsyncIterator[bytes]:
            prompt_tokens = completion_tokens = 0
            finish = None
            if req.endpoint == "chat":
                yield _sse(chunk(req, 0, None, None, delta={"role": "assistant"}))
            try:
                pending = [first] if first else []
                async for delta in _chain(pending, deltas):
                    finish = delta.finish_reason or finish
                    prompt_tokens = delta.prompt_tokens or prompt_tokens
                    completion_tokens = delta.completion_tokens or completion_tokens
                    if delta.text or delta.message_delta:
                        yield _sse(chunk(req, 0, delta.text, None, delta=delta.message_delta))
            except UpstreamError as exc:
                yield _sse(from_upstream(exc).body())
                return
            finally:
                await deltas.aclose()
            yield _sse(chunk(req, 0, None, finish or "stop", tao=tao.model_dump()))
            if wants_usage(req):
                yield _sse({"id": req.request_id, "object": "chat.completion.chunk", "created": int(req.created),
                            "model": req.model.name, "choices": [],
                            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                      "total_tokens": prompt_tokens + completion_tokens}})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions", dependencies=[Depends(require_api_key)])
    async def chat_completions(request: Request) -> Response:
        return await serve(request, "chat")

    @app.post("/v1/completions", dependencies=[Depends(require_api_key)])
    async def completions(request: Request) -> Response:
        return await serve(request, "completion")

    @app.post("/v1/feedback", dependencies=[Depends(require_api_key)])
    async def feedback(request: Request) -> Response:
        body = await _parse(request, FeedbackRequest)
        logged = await asyncio.to_thread(store.candidates_of, body.request_id)
        if logged is None:
            raise APIError(404, f"no logged request {body.request_id!r}", type="not_found_error",
                           param="request_id", code="request_not_found")
        count, winner = logged
        for param in ("preferred", "chosen", "rejected"):
            index = getattr(body, param)
            if index is not None and index >= count:
                raise APIError(400, f"{param} {index} is out of range: request {body.request_id} has {count} "
                               "candidates", param=param, code="invalid_candidate_index")
        token = bearer(request)
        user = body.user or (f"key:{hashlib.sha256(token.encode()).hexdigest()[:12]}" if token else "anonymous")
        row = {"request_id": body.request_id, "user": user, "created_at": time.time(), "kind": body.kind,
               "candidate_index": body.preferred if body.kind == "preference" else
               winner if body.kind == "rating" else body.chosen,
               "rejected_index": body.rejected, "rating": body.rating, "comment": body.comment}
        await asyncio.to_thread(store.record_feedback, row)
        return _json({"object": "feedback", **row})

    @app.get("/v1/models", dependencies=[Depends(require_api_key)])
    async def list_models() -> Response:
        cards = [ModelCard(id=m.name, created=started_at, best_of=m.best_of, max_best_of=m.max_best_of)
                 for m in settings.models]
        return _json(ModelList(data=cards))

    @app.get("/admin/rollout", dependencies=[Depends(require_admin)])
    async def rollout_status() -> Response:
        return _json({"rollouts": await asyncio.to_thread(rollouts.status)})

    @app.post("/admin/rollout/{model}/start", dependencies=[Depends(require_admin)])
    async def rollout_start(model: str, body: RolloutStart) -> Response:
        return _json(await rollouts.start(model, body.checkpoint, body.canary, body.best_of))

    @app.post("/admin/rollout/{model}/promote", dependencies=[Depends(require_admin)])
    async def rollout_promote(model: str) -> Response:
        return _json(await asyncio.to_thread(rollouts.promote, model))

    @app.post("/admin/rollout/{model}/rollback", dependencies=[Depends(require_admin)])
    async def rollout_rollback(model: str) -> Response:
        return _json(await asyncio.to_thread(rollouts.rollback, model))

    @app.post("/admin/rollout/{model}/check", dependencies=[Depends(require_admin)])
    async def rollout_check(model: str) -> Response:
        decision = await asyncio.to_thread(rollouts.check, model)
        return _json({"action": decision.action, "reason": decision.reason, "numbers": decision.numbers})

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok", "models": [m.name for m in settings.models],
                      "store_queue_depth": store.queue_depth()})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        metrics.store_queue_depth.set(store.queue_depth())
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def _chain(first: list[StreamDelta], rest: AsyncIterator[StreamDelta]) -> AsyncIterator[StreamDelta]:
    for item in first:
        yield item
    async for item in rest:
        yield item
