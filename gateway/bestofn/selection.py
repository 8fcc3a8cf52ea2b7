"""Which candidates a best-of-N request returns."""

from __future__ import annotations

from gateway.rewards.consensus import MAX_CHARS as MAX_CONSENSUS_CHARS
from gateway.rewards.consensus import consensus


def select_best_candidates(scores: list[float | None], n: int, texts: list[str] | None = None,
                           tie_margin: float = 0.0, held: list[bool] | None = None) -> list[int]:
    """Indexes of the n candidates to return, best first: by reward (ties keep generation order),
    or in generation order when the candidates are unscored. With `held`, the candidates that held
    the request's contract (`gateway.contract`) all come before those that broke it.

    With `texts` and a `tie_margin`, the candidates within `tie_margin` of the best reward (the
    ones the reward cannot tell apart, e.g. on a prompt with nothing to verify) are ordered by
    consensus instead: the one most similar to all the others first (`rewards.consensus`). The
    rewards themselves are not changed, so they stay comparable with N=1 replies.
    """
    broke = [not h for h in held] if held is not None else [False] * len(scores)
    order = range(len(scores))
    if None in scores:
        return sorted(order, key=lambda i: (broke[i], i))[:n]
    ranked = sorted(order, key=lambda i: (broke[i], -scores[i], i))
    if texts is None or tie_margin <= 0 or len(ranked) < 2:
        return ranked[:n]
    best = scores[ranked[0]]
    near = [i for i in ranked if scores[i] >= best - tie_margin and broke[i] == broke[ranked[0]]]
    if len(near) < 2 or sum(map(len, texts)) > MAX_CONSENSUS_CHARS:
        return ranked[:n]
    agreement = consensus(texts)
    near.sort(key=lambda i: (-agreement[i], i))
    return (near + [i for i in ranked if i not in near])[:n]
