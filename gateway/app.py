"""The FastAPI app factory and thin routes: parse the body, call one serving object, return.

`create_app` builds the parts (store, backends, engine, rollouts, serving objects) and keeps the
serving objects on `app.state`, where the routes and the auth dependencies find them, as vLLM's
OpenAI server does. Backends load and the store writer starts in the lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.auth import Auth, KeyCheckMiddleware, require_admin
from gateway.backends import Backend, build_backend
from gateway.bestofn import Engine
from gateway.config import ServerConfig, Settings
from gateway.errors import APIError, from_validation
from gateway.limits import BodyLimitMiddleware, check_depth, read_body
from gateway.metrics import Metrics, ResponseCountMiddleware
from gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
    ResponsesRequest,
    RolloutStart,
)
from gateway.rewards import build_scorer
from gateway.rollout import RolloutManager
from gateway.serving import ServingCompletions, ServingEmbeddings, ServingFeedback, ServingInfo, ServingResponses
from gateway.store import Store

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound=BaseModel)


SETTINGS_ENV = "TAO_SETTINGS_JSON"  # the settings of `tao serve --workers`, for each worker's app


def app_from_environment() -> FastAPI:
    """A worker's app (`tao serve --workers N`): the settings the parent resolved, from the environment."""
    return create_app(Settings.model_validate_json(os.environ[SETTINGS_ENV]))


def create_app(settings: Settings) -> FastAPI:
    """A gateway for these settings; as many per process as a caller likes (tests build several)."""
    metrics = Metrics()
    store = Store.from_config(settings.store, on_written=metrics.store_rows_written.inc,
                              on_write_error=metrics.store_write_errors.inc)
    backends: dict[str, Backend] = {m.name: build_backend(m, metrics.upstream_retries.labels(m.name).inc,
                                                          metrics.local_batch_requests.labels(m.name).observe)
                                    for m in settings.models}
    engine = Engine(backends, build_scorer(settings.reward, metrics.count_skipped), settings.reward, store, metrics)
    rollouts = RolloutManager(settings, backends, store, metrics)
    auth = Auth(settings.auth, store.caller_salt)

    app = FastAPI(title="TAO Gateway", version=__version__, lifespan=partial(
        lifespan, settings=settings, store=store, backends=backends, engine=engine, rollouts=rollouts))
    app.state.auth = auth
    app.state.server = settings.server
    app.state.completions = ServingCompletions(settings, engine, rollouts, auth)
    app.state.feedback = ServingFeedback(store, auth)
    app.state.embeddings = ServingEmbeddings(settings, backends, metrics)
    app.state.responses = ServingResponses(app.state.completions, store)
    app.state.info = ServingInfo(settings, store, metrics, backends)
    app.state.rollouts = rollouts
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(settings.server.max_body_mb * 1024 * 1024))
    app.add_middleware(KeyCheckMiddleware, auth=auth)  # before the body is read
    app.add_middleware(ResponseCountMiddleware, metrics=metrics)  # added last: outermost
    return app


@asynccontextmanager
async def lifespan(app: FastAPI, *, settings: Settings, store: Store, backends: dict[str, Backend],
                   engine: Engine, rollouts: RolloutManager) -> AsyncIterator[None]:
    """Start the store writer, the backends and the rollouts; on shutdown let background scoring
    finish before the store flushes, so no record is lost."""
    store.start()
    if not settings.auth.api_keys:
        log.warning("auth: no API keys configured; the gateway is OPEN to anyone who can reach it")
    elif not settings.auth.admin_key:
        log.warning("auth: API keys set and no admin key: /admin routes and X-TAO-Arm are closed")
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


# ---- responses and errors ----------------------------------------------------------------------
def json_response(content: BaseModel | dict[str, Any], status: int = 200) -> Response:
    if isinstance(content, BaseModel):
        content = content.model_dump()
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def reply(result: BaseModel | AsyncIterator[bytes]) -> Response:
    """A serving object's result as HTTP: a JSON body, or a server-sent event stream."""
    if isinstance(result, BaseModel):
        return json_response(result)
    return StreamingResponse(result, media_type="text/event-stream")


async def parse_body(request: Request, model_cls: type[Body]) -> Body:
    """The body as `model_cls`: 408 when it arrives too slowly, 400 when it is not a JSON object (or
    nests too deep), 422 naming the first bad field."""
    limits: ServerConfig = request.app.state.server
    try:
        data = orjson.loads(await read_body(request.body, limits.body_timeout_s))
    except orjson.JSONDecodeError as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    check_depth(data, limits.max_json_depth)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def api_error(request: Request, exc: APIError) -> Response:
    response = json_response(exc.body(), exc.status)
    response.headers.update(exc.headers or {})
    return response


async def request_validation_error(request: Request, exc: RequestValidationError) -> Response:
    return await api_error(request, from_validation(exc))


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return await api_error(request, APIError(exc.status_code, str(exc.detail), type=kind))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return await api_error(request, APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))


# ---- routes --------------------------------------------------------------------------------------
router = APIRouter()


def completions(request: Request) -> ServingCompletions:
    return request.app.state.completions


def feedback(request: Request) -> ServingFeedback:
    return request.app.state.feedback


def info(request: Request) -> ServingInfo:
    return request.app.state.info


def rollouts(request: Request) -> RolloutManager:
    return request.app.state.rollouts


@router.post("/v1/chat/completions")
async def create_chat_completion(raw_request: Request) -> Response:
    request = await parse_body(raw_request, ChatCompletionRequest)
    return reply(await completions(raw_request).create_chat_completion(request, raw_request))


@router.post("/v1/completions")
async def create_completion(raw_request: Request) -> Response:
    request = await parse_body(raw_request, CompletionRequest)
    return reply(await completions(raw_request).create_completion(request, raw_request))


@router.post("/v1/responses")
async def create_response(raw_request: Request) -> Response:
    request = await parse_body(raw_request, ResponsesRequest)
    result = await raw_request.app.state.responses.create_response(request, raw_request)
    return json_response(result) if isinstance(result, dict) else StreamingResponse(result, media_type="text/event-stream")


@router.post("/v1/embeddings")
async def create_embedding(raw_request: Request) -> Response:
    request = await parse_body(raw_request, EmbeddingRequest)
    return json_response(await raw_request.app.state.embeddings.create_embedding(request))


@router.post("/v1/feedback")
async def create_feedback(raw_request: Request) -> Response:
    request = await parse_body(raw_request, FeedbackRequest)
    return json_response(await feedback(raw_request).create_feedback(request, raw_request))


@router.get("/v1/models")
async def list_models(raw_request: Request) -> Response:
    return json_response(info(raw_request).list_models())


@router.get("/healthz")
async def healthz(raw_request: Request) -> Response:
    return json_response(*info(raw_request).health())


@router.get("/metrics")
async def prometheus_metrics(raw_request: Request) -> Response:
    text = await asyncio.to_thread(info(raw_request).render_metrics)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/admin/rollout", dependencies=[Depends(require_admin)])
async def rollout_status(raw_request: Request) -> Response:
    manager = rollouts(raw_request)
    return json_response({"rollouts": await asyncio.to_thread(manager.status), "gateway": manager.holder,
                          "decides": manager.deciding})


@router.post("/admin/rollout/{model}/start", dependencies=[Depends(require_admin)])
async def rollout_start(model: str, body: RolloutStart, raw_request: Request) -> Response:
    return json_response(await rollouts(raw_request).start(model, body.checkpoint, body.canary, body.best_of,
                                                              body.force))


@router.post("/admin/rollout/{model}/promote", dependencies=[Depends(require_admin)])
async def rollout_promote(model: str, raw_request: Request) -> Response:
    return json_response(await asyncio.to_thread(rollouts(raw_request).promote, model))


@router.post("/admin/rollout/{model}/rollback", dependencies=[Depends(require_admin)])
async def rollout_rollback(model: str, raw_request: Request) -> Response:
    return json_response(await asyncio.to_thread(rollouts(raw_request).rollback, model))


@router.post("/admin/rollout/{model}/check", dependencies=[Depends(require_admin)])
async def rollout_check(model: str, raw_request: Request) -> Response:
    decision = await asyncio.to_thread(rollouts(raw_request).check, model)
    return json_response({"action": decision.action, "reason": decision.reason, "numbers": decision.numbers})
