"""The record of a request, once per request whatever happened: its metrics and its log row."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.backends import Candidate
from gateway.bestofn.pool import CandidatePool, Failure
from gateway.metrics import Metrics
from gateway.protocol import TaoInfo
from gateway.request import ServeRequest
from gateway.store import RequestLog, RequestStatus, Store


class Recorder:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics

    def record(self, req: ServeRequest, *, pool: CandidatePool | None = None, tao: TaoInfo | None = None,
               failure: Failure | None = None) -> None:
        """Count and log one request: answered (a pool and its tao), or not (a failure, with what
        was generated before it, if anything)."""
        model = req.model.name
        latency_s = time.perf_counter() - req.started
        http_status = failure.status if failure else 200
        self.metrics.requests.labels(model, str(http_status)).inc()
        self.metrics.request_latency.labels(model).observe(latency_s)
        if pool is not None and tao is not None:
            self._observe(model, pool, tao.winner)
        if req.model.log_requests:
            self.store.log(self._request_log(req, pool, tao, failure, http_status, latency_s))

    def provisional(self, req: ServeRequest, pool: CandidatePool, tao: TaoInfo,
                    failure: Failure | None = None) -> None:
        """Journal a reply as it was sent, before it is scored and recorded in the background (N=1): a
        process killed in between still leaves the request in the log, unscored. Counts nothing."""
        if req.model.log_requests:
            http_status = failure.status if failure else 200
            self.store.journal_only(self._request_log(req, pool, tao, failure, http_status,
                                                      time.perf_counter() - req.started))

    def _request_log(self, req: ServeRequest, pool: CandidatePool | None, tao: TaoInfo | None,
                     failure: Failure | None, http_status: int, latency_s: float) -> RequestLog:
        status = (RequestStatus.ERROR if failure else RequestStatus.DEGRADED if tao and tao.degraded
                  else RequestStatus.OK)
        error = failure.message if failure else tao.degraded_reason if tao else None
        row = self._request_row(req, status, http_status, latency_s)
        candidates: list[dict[str, Any]] = []
        if pool is not None and tao is not None:
            if pool.failures:
                error = "; ".join(filter(None, [error, f"{len(pool.failures)} candidates failed upstream: "
                                                f"{pool.failures[0]}"]))
            usage = pool.usage()
            row.update(n_generated=len(pool.candidates), winner_index=tao.winner, upstream_ms=pool.upstream_ms,
                       scoring_ms=pool.scoring_ms, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens, upstream_calls=pool.upstream_calls)
            returned = {idx: rank for rank, idx in enumerate(tao.ranking)}
            readings = pool.readings
            if readings is not None:
                row["readings"] = orjson.dumps(readings.model_dump(include={"instructions", "unverifiable"})).decode()
            candidates = [
                {"request_id": req.request_id, "idx": i, "text": c.text,
                 "message": _message_beyond_text(c),
                 "finish_reason": c.finish_reason, "tokens": c.completion_tokens, "score": tao.scores[i],
                 "won": int(i == tao.winner and not failure), "returned_rank": returned.get(i),
                 "violation": pool.violations[i],
                 "met": orjson.dumps(readings.met[i]).decode() if readings and readings.met[i] is not None else None}
                for i, c in enumerate(pool.candidates)
            ]
        row["error"] = error
        return RequestLog(request=row, candidates=candidates)

    def _observe(self, model: str, pool: CandidatePool, winner: int | None) -> None:
        self.metrics.upstream_latency.labels(model).observe(pool.upstream_ms / 1000)
        self.metrics.candidates.labels(model).inc(len(pool.candidates))
        self.metrics.upstream_calls.labels(model).inc(pool.upstream_calls)
        if len(pool.candidates) > 1:
            self.metrics.scoring_latency.labels(model).observe(pool.scoring_ms / 1000)
        if pool.scored and winner is not None:
            self.metrics.first_reward.labels(model).observe(pool.scores[0])
            self.metrics.winner_reward.labels(model).observe(pool.scores[winner])

    @staticmethod
    def _request_row(req: ServeRequest, status: RequestStatus, http_status: int, latency_s: float) -> dict[str, Any]:
        upstream = req.upstream
        return {
            "id": req.request_id, "created_at": req.created, "model": req.model.name, "arm": req.arm,
            "model_version": req.model_version, "endpoint": "responses" if req.via_responses else req.endpoint,
            "messages": orjson.dumps(upstream.messages if upstream.kind == "chat" else upstream.prompt).decode(),
            "prompt": req.prompt, "params": orjson.dumps(upstream.params).decode(), "best_of": req.best_of,
            "n": req.n, "n_generated": None, "winner_index": None, "latency_ms": latency_s * 1000,
            "upstream_ms": None, "scoring_ms": None, "prompt_tokens": None, "completion_tokens": None,
            "upstream_calls": None, "stream": int(req.body.stream), "user": req.body.user, "caller": req.caller, "status": status,
            "http_status": http_status, "error": None,
        }


def _message_beyond_text(candidate: Candidate) -> str | None:
    """The chat message as JSON when it says more than its text (tool calls, refusals), else None:
    the text is stored once, in `candidates.text`."""
    message = candidate.message
    if not message or (message.keys() <= {"role", "content"} and message.get("content") == candidate.text):
        return None
    return orjson.dumps(message).decode()
