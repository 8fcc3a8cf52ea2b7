"""Reads over the request log (`requests`, `candidates`, `feedback`), as typed rows.

Every module that learns something from the log asks here: the rollout policy (per-arm
outcomes), the distill dataset (scored chat candidates), the reward-model trainer (feedback with
its request), the demo report and the adaptive-N benchmark (best-of-N candidates, replies served
by a checkpoint), and the feedback route (a request's candidate count). Rows carry the columns as
stored (nulls stay None); callers decide what a missing value means to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlite_utils

from gateway.store.schema import SHADOW_SUFFIX, TRAINING_ARMS, Arm, RequestStatus


@dataclass(frozen=True)
class ScoredCandidate:
    """One scored candidate of a logged best-of-N request, with the request fields distillation needs."""

    request_id: str
    messages: list[dict[str, Any]]
    prompt: str | None
    completion_tokens: int | None  # of the whole request: all candidates together
    idx: int  # generation order: idx 0 is an unbiased N=1 sample of the model that served it
    text: str | None
    score: float
    won: bool
    finish_reason: str | None  # "stop": it ended on its own; "length": cut at max_tokens
    tokens: int | None  # of this candidate
    tools: list[dict[str, Any]] | None = None  # the tools the request offered
    message: dict[str, Any] | None = None  # the assistant message, where it holds more than text (tool calls)


@dataclass(frozen=True)
class ArmOutcomes:
    """What the requests of some arms since a moment came to: the rollout policy's evidence."""

    requests: int  # every logged request, errors included
    errors: int
    tokens_per_request: float  # mean completion tokens (0.0 without requests)
    rewards: list[float]  # the winner's score of every `ok` reply that has one


@dataclass(frozen=True)
class ShadowPair:
    """One prompt answered by both rollout arms: the incumbent's served best-of-N winner and the
    candidate's shadow reply to the same request."""

    request_id: str  # the incumbent request
    created_at: float
    prompt: str  # the scored prompt: pairs of one prompt are one unit of the test, not independent
    incumbent: float  # the best candidate's score, from more than one candidate actually generated
    candidate: float  # the shadow reply's score, at the candidate's N actually generated

    @property
    def difference(self) -> float:
        return self.candidate - self.incumbent


@dataclass(frozen=True)
class Verdict:
    """One `feedback` row with the request it judges."""

    request_id: str
    kind: str  # FeedbackKind
    candidate_index: int | None
    rejected_index: int | None
    rating: float | None
    messages: list[dict[str, Any]]  # the request's chat messages; [] when the request is not logged
    texts: list[str]  # the request's candidates in generation order


@dataclass(frozen=True)
class BestOfNCandidate:
    """A candidate of an `ok` best-of-N (best_of > 1) request served by the incumbent (arm base)."""

    request_id: str
    messages: Any  # the request's messages (chat) or prompt string (completion), parsed
    best_of: int
    completion_tokens: int | None  # of the whole request
    idx: int
    score: float | None
    tokens: int | None  # of this candidate
    won: bool


@dataclass(frozen=True)
class ServedReply:
    """The scored winner of an `ok` request: what the client (or the shadow log) got."""

    messages: Any
    completion_tokens: int | None
    score: float
    text: str | None
    arm: Arm
    created_at: float


def _candidate_rows(db: sqlite_utils.Database, columns: str, conditions: dict[str, Any], *,
                    scored: bool = False, held: bool = False) -> list[tuple]:
    """`columns` of requests `r` joined with their candidates `c` where every condition holds (each has
    one `?`, or a tuple value one `?` per item; one whose value is None is left out), only scored
    candidates if `scored`, only those that held their request's contract if `held`; oldest request
    first, its candidates in generation order."""
    kept = {condition: value for condition, value in conditions.items() if value is not None}
    where = [*kept, *(["c.score IS NOT NULL"] if scored else []), *(["c.violation IS NULL"] if held else [])]
    params = [item for value in kept.values() for item in (value if isinstance(value, tuple) else (value,))]
    sql = (f"SELECT {columns} FROM requests r JOIN candidates c ON c.request_id = r.id "
           f"WHERE {' AND '.join(where)} ORDER BY r.created_at, r.id, c.idx")
    return db.execute(sql, params).fetchall()


def candidate_count_and_winner(db: sqlite_utils.Database, request_id: str) -> tuple[int, int | None] | None:
    """(candidate count, winner index) of a written request; None if it is not in the log."""
    row = db.execute("SELECT (SELECT COUNT(*) FROM candidates WHERE request_id = r.id), r.winner_index "
                     "FROM requests r WHERE r.id = ?", [request_id]).fetchone()
    return (row[0], row[1]) if row else None


def request_caller(db: sqlite_utils.Database, request_id: str) -> str | None:
    """The caller hash a written request was made with; None if it is not in the log (or predates it)."""
    row = db.execute("SELECT caller FROM requests WHERE id = ?", [request_id]).fetchone()
    return row[0] if row else None


def assistant_turn(message: dict[str, Any]) -> dict[str, Any]:
    """An answer as a later request sends it back: its role, content and tool calls, nothing an upstream
    added beside them (an empty `tool_calls` list, `reasoning_content`, `refusal: null`)."""
    turn: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        turn["tool_calls"] = message["tool_calls"]
    return turn


@dataclass(frozen=True)
class Conversation:
    """What a later response continues from (`previous_response_id`): the chat messages a request sent,
    and the answer it returned."""

    caller: str
    messages: list[dict[str, Any]]
    answer: dict[str, Any]

    def continued(self) -> list[dict[str, Any]]:
        return [*self.messages, self.answer]

    @classmethod
    def of(cls, caller: str | None, messages: str, text: str | None, message: str | None) -> Conversation | None:
        """From a logged request's columns; None when it returned no answer (or had no messages)."""
        if text is None and message is None:
            return None
        turns = orjson.loads(messages)
        if not isinstance(turns, list):
            return None
        answer = orjson.loads(message) if message else {"role": "assistant", "content": text}
        return cls(caller=caller or "", messages=turns, answer=assistant_turn(answer))


def request_conversation(db: sqlite_utils.Database, request_id: str) -> Conversation | None:
    """A written chat request's messages and the answer it returned; None if unknown or unanswered."""
    row = db.execute("SELECT r.caller, r.messages, c.text, c.message FROM requests r JOIN candidates c "
                     "ON c.request_id = r.id AND c.returned_rank = 0 WHERE r.id = ?", [request_id]).fetchone()
    return Conversation.of(*row) if row else None


def scored_chat_candidates(db: sqlite_utils.Database, model: str, *, since: float | None = None,
                           until: float | None = None) -> list[ScoredCandidate]:
    """Scored candidates of `model`'s best-of-N chat requests created in [since, until), oldest first.

    The one definition of what distillation learns from and measures against: `ok` chat (and Responses) requests
    of the training arms (the incumbent `base`, and `explore`: a promoted checkpoint's best-of-N)
    that generated more than one candidate. Left out: failed and degraded requests (no answer, or
    no scores), N=1 replies (no best-of-N happened; an N=1 reply logs won=1 and would pass for a
    winner), a rollout checkpoint's own served replies (arms candidate, shadow, promoted), and candidates
    that broke their request's contract (a tool call or structured output that does not validate).
    """
    rows = _candidate_rows(db, "r.id, r.messages, r.prompt, r.completion_tokens, c.idx, c.text, c.score, c.won, "
                               "c.finish_reason, c.tokens, r.params, c.message", {
        "r.model = ?": model, "r.status = ?": RequestStatus.OK, "r.endpoint IN (?, ?)": ("chat", "responses"),
        f"r.arm IN ({', '.join('?' * len(TRAINING_ARMS))})": tuple(TRAINING_ARMS), "r.n_generated > ?": 1,
        "r.created_at >= ?": since, "r.created_at < ?": until}, scored=True, held=True)
    return [ScoredCandidate(request_id=rid, messages=orjson.loads(messages), prompt=prompt, completion_tokens=tokens,
                            idx=idx, text=text, score=float(score), won=bool(won), finish_reason=finish,
                            tokens=candidate_tokens, tools=orjson.loads(params or "{}").get("tools") or None,
                            message=orjson.loads(message) if message else None)
            for rid, messages, prompt, tokens, idx, text, score, won, finish, candidate_tokens, params, message in rows]


def arm_outcomes(db: sqlite_utils.Database, model: str, arms: Iterable[Arm], since: float) -> ArmOutcomes:
    """Request and error counts, mean tokens and winner rewards of `model` on `arms` since `since`."""
    arms = list(arms)
    marks = ",".join("?" for _ in arms)
    params = [model, *arms, since]
    total, errors, tokens = db.execute(
        f"SELECT COUNT(*), SUM(r.status = ?), AVG(r.completion_tokens) FROM requests r "
        f"WHERE r.model = ? AND r.arm IN ({marks}) AND r.created_at >= ?", [RequestStatus.ERROR, *params]).fetchone()
    rewards = [row[0] for row in db.execute(
        f"SELECT c.score FROM requests r JOIN candidates c ON c.request_id = r.id AND c.won = 1 "
        f"WHERE r.model = ? AND r.arm IN ({marks}) AND r.created_at >= ? AND r.status = ? "
        f"AND c.score IS NOT NULL", [*params, RequestStatus.OK]).fetchall()]
    return ArmOutcomes(requests=total or 0, errors=errors or 0, tokens_per_request=float(tokens or 0.0),
                       rewards=rewards)


def shadow_pairs(db: sqlite_utils.Database, model: str, *, since: float, candidate_n: int,
                 incumbent_n: int = 2) -> list[ShadowPair]:
    """`model`'s scored (incumbent, shadow) pairs since `since`, oldest first.

    Only pairs that test what the rollout claims: the incumbent request generated more than one
    candidate when its arm serves at best-of-N (`incumbent_n` > 1; best-of-N really ran: a client
    may ask the incumbent arm for N=1), and the shadow reply generated exactly `candidate_n` (the N
    the candidate arm serves at). A promoted checkpoint serving at N=1 is an incumbent whose every
    reply pairs. Each side's reward is its
    best candidate's: the best-of-N reward, also when a consensus tie-break served another one.
    """
    sql = """
        SELECT b.id, b.created_at, b.prompt,
               (SELECT MAX(score) FROM candidates WHERE request_id = b.id),
               (SELECT MAX(score) FROM candidates WHERE request_id = s.id) AS shadow_score
        FROM requests b
        JOIN requests s ON s.id = b.id || ?
        WHERE b.model = ? AND b.arm = ? AND b.status = ? AND b.n_generated >= ? AND b.created_at >= ?
          AND s.arm = ? AND s.status = ? AND s.n_generated = ?
          AND (SELECT MAX(score) FROM candidates WHERE request_id = b.id) IS NOT NULL AND shadow_score IS NOT NULL
        ORDER BY b.created_at, b.id
    """
    params = [SHADOW_SUFFIX, model, Arm.BASE, RequestStatus.OK, min(incumbent_n, 2), since, Arm.SHADOW,
              RequestStatus.OK, candidate_n]
    return [ShadowPair(request_id=rid, created_at=created, prompt=prompt or "", incumbent=incumbent,
                       candidate=candidate) for rid, created, prompt, incumbent, candidate in db.execute(sql, params)]


def feedback_verdicts(db: sqlite_utils.Database) -> list[Verdict]:
    """Every `feedback` row, in the order it was written, with its request's messages and candidates."""
    requests: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
    verdicts = []
    for request_id, kind, chosen, rejected, rating in db.execute(
            "SELECT request_id, kind, candidate_index, rejected_index, rating FROM feedback ORDER BY rowid"):
        if request_id not in requests:
            row = db.execute("SELECT messages FROM requests WHERE id = ?", [request_id]).fetchone()
            texts = [r[0] for r in db.execute("SELECT text FROM candidates WHERE request_id = ? ORDER BY idx",
                                              [request_id])]
            requests[request_id] = (orjson.loads(row[0]) if row else [], texts)
        messages, texts = requests[request_id]
        verdicts.append(Verdict(request_id=request_id, kind=kind, candidate_index=chosen, rejected_index=rejected,
                                rating=rating, messages=messages, texts=texts))
    return verdicts


def best_of_n_candidates(db: sqlite_utils.Database, *, model: str | None = None,
                         until: float | None = None) -> list[BestOfNCandidate]:
    """Candidates of `ok` best-of-N requests on the base arm (of `model`, created before `until`, when
    given), scored or not, oldest request first and each request's candidates in generation order."""
    rows = _candidate_rows(db, "r.id, r.messages, r.best_of, r.completion_tokens, c.idx, c.score, c.tokens, c.won", {
        "r.arm = ?": Arm.BASE, "r.status = ?": RequestStatus.OK, "r.best_of > ?": 1, "r.model = ?": model,
        "r.created_at < ?": until})
    parsed: dict[str, Any] = {}  # each request's messages, decoded once for all its candidates
    candidates = []
    for rid, messages, best_of, completion_tokens, idx, score, tokens, won in rows:
        if rid not in parsed:
            parsed[rid] = orjson.loads(messages) if messages is not None else None
        candidates.append(BestOfNCandidate(request_id=rid, messages=parsed[rid], best_of=best_of,
                                     completion_tokens=completion_tokens, idx=idx, score=score, tokens=tokens,
                                     won=bool(won)))
    return candidates


def served_replies(db: sqlite_utils.Database, model: str, arms: Iterable[Arm]) -> list[ServedReply]:
    """The scored winners of `model`'s `ok` requests on `arms`, oldest first."""
    arms = list(arms)
    marks = ",".join("?" for _ in arms)
    sql = f"""
        SELECT r.messages, r.completion_tokens, c.score, c.text, r.arm, r.created_at
        FROM requests r JOIN candidates c ON c.request_id = r.id AND c.won = 1
        WHERE r.model = ? AND r.arm IN ({marks}) AND r.status = ? AND c.score IS NOT NULL
        ORDER BY r.created_at, r.id
    """
    return [ServedReply(messages=orjson.loads(messages) if messages is not None else None,
                        completion_tokens=tokens, score=score, text=text, arm=Arm(arm), created_at=created)
            for messages, tokens, score, text, arm, created in db.execute(sql, [model, *arms, RequestStatus.OK])]
