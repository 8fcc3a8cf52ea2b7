"""Prometheus metrics, one registry per app so tests can build as many apps as they like."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Non-negative bounds: prometheus-client drops `_sum` from histograms with negative buckets.
REWARD_BUCKETS = tuple(i / 10 for i in range(0, 11)) + (2.0, 5.0, 10.0, 25.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tao_requests", "Completion requests by model and HTTP status.",
                                ["model", "status"], registry=r)
        self.request_latency = Histogram("tao_request_latency_seconds", "End-to-end request latency.",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram("tao_upstream_latency_seconds", "Time to generate all candidates.",
                                          ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.scoring_latency = Histogram("tao_scoring_latency_seconds", "Time to score all candidates.",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.candidates = Counter("tao_candidates_generated", "Candidates generated.", ["model"], registry=r)
        self.upstream_calls = Counter("tao_upstream_calls", "Calls made to the upstream.", ["model"], registry=r)
        self.upstream_retries = Counter("tao_upstream_retries", "Upstream calls made again after a retryable "
                                        "failure (the upstream sees calls + retries requests).", ["model"], registry=r)
        self.local_batch_requests = Histogram("tao_local_batch_requests", "Requests that shared one generate call "
                                              "of the local backend (queued while the model worked).", ["model"],
                                              buckets=(1, 2, 3, 4, 6, 8, 16, 32, 64), registry=r)
        self.upstream_failures = Counter("tao_upstream_failures", "Upstream calls or candidates that failed.",
                                         ["model"], registry=r)
        self.winner_reward = Histogram("tao_winner_reward", "Reward of the returned (top-scored) candidate.",
                                       ["model"], buckets=REWARD_BUCKETS, registry=r)
        self.first_reward = Histogram("tao_first_candidate_reward",
                                      "Reward of the first candidate: what N=1 would have served.",
                                      ["model"], buckets=REWARD_BUCKETS, registry=r)
        self.scoring_skipped_chars = Counter("tao_scoring_skipped_chars", "Characters of prompts and candidates "
                                             "the scorer did not read (beyond reward.read's window), by part.",
                                             ["part"], registry=r)
        self.scoring_cut_texts = Counter("tao_scoring_cut_texts", "Prompts and candidates read only in part "
                                         "(longer than reward.read's window), by part.", ["part"], registry=r)
        self.degraded = Counter("tao_degraded_replies", "Replies served degraded, by reason: scorer (no scores) "
                                "or contract (no candidate held the request's tools, tool_choice or response_format).",
                                ["model", "reason"], registry=r)
        self.embedding_requests = Counter("tao_embedding_requests", "Embedding requests passed through, by model and "
                                          "HTTP status.", ["model", "status"], registry=r)
        self.unverifiable = Counter("tao_unverifiable_constraints", "Constraint sentences the scorer saw in a prompt "
                                    "and cannot verify whole (left out of the score, never read as a nearby kind).",
                                    ["model"], registry=r)
        self.contract_violations = Counter("tao_contract_violations", "Candidates that broke their request's "
                                           "contract (tool schemas, tool_choice, response_format).", ["model"],
                                           registry=r)
        self.rollout_share = Gauge("tao_rollout_candidate_share_percent", "Traffic share of the candidate arm.",
                                   ["model"], registry=r)
        self.rollout_events = Counter("tao_rollout_events", "Rollout starts, steps, promotions, rollbacks, "
                                      "failures.", ["model", "event"], registry=r)
        self.store_queue_depth = Gauge("tao_store_queue_depth", "Log records waiting for the writer.", registry=r)
        self.store_rows_written = Counter("tao_store_records_written", "Request records written.", registry=r)
        self.refused = Counter("tao_requests_refused", "Requests refused before any work, by reason.",
                               ["reason"], registry=r)
        self.http_responses = Counter("tao_http_responses", "Every HTTP response by route and status, "
                                      "including those refused before a route ran (401, 413, 404).",
                                      ["route", "status"], registry=r)
        self.distill_runs = Gauge("tao_distill_runs", "Distill runs recorded in the log, by outcome (published, "
                                  "too_little_data, rejected, locked: answers; failed: errors).", ["outcome"], registry=r)
        self.store_write_errors = Counter("tao_store_write_errors", "Failed store write attempts.", registry=r)

    def count_skipped(self, part: str, chars: int) -> None:
        """A scorer read only the window of one text (gateway/rewards/reading.py)."""
        self.scoring_cut_texts.labels(part).inc()
        self.scoring_skipped_chars.labels(part).inc(chars)

    def render(self) -> bytes:
        return generate_latest(self.registry)


KNOWN_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/feedback", "/v1/models", "/healthz",
                          "/metrics", "/docs", "/openapi.json"})


def route_label(path: str) -> str:
    """A bounded label for a path: the route itself, /admin for any admin route, else `other`."""
    if path in KNOWN_ROUTES:
        return path
    return "/admin" if path.startswith("/admin/") or path == "/admin" else "other"


class ResponseCountMiddleware:
    """Counts every response by route and status, outermost, so refusals by other middleware count too."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.http_responses.labels(route_label(scope["path"]), str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
