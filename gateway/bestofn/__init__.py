"""The engine: how many candidates, from which backend, scored how, who wins, and what is logged.

Best-of-N reads as three steps (`Engine.complete`): `infer_candidates` (generate, score; under
adaptive N a second batch only where the first disagrees) → `select_best_candidates` (the top n
by reward) → `record` (metrics and the log). At best_of = 1 nothing waits for the scorer: the
reply goes out and the single candidate is scored afterwards, in the background, before its
record is logged (so N=1 adds no scoring latency and the logs still hold its reward). A scorer
that fails or times out degrades the reply to the first candidates in generation order, flagged
`tao.degraded`; the record is logged either way.

One concern per module: `pool` (one request's candidates and what they cost), `selection` (which
candidates win), `scoring` (the scorer within its budget), `recording` (metrics and the log row),
`engine` (the steps, shadow answers and streaming).
"""

from gateway.bestofn.engine import Engine
from gateway.bestofn.pool import CandidatePool, Failure, Outcome, StreamedReply
from gateway.bestofn.selection import select_best_candidates

__all__ = ["CandidatePool", "Engine", "Failure", "Outcome", "StreamedReply", "select_best_candidates"]
