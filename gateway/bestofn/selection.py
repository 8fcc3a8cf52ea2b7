"""Which candidates a best-of-N request returns."""

from __future__ import annotations

from gateway.rewards.consensus import MAX_CHARS as MAX_CONSENSUS_CHARS
from gateway.rewards.consensus import consensus


def select_best_candidates(scores: list[float | None], n: int, texts: list[str] | None = None,
                           tie_margin: float = 0.0) -> list[int]:
    """Indexes of the n candidates to return, best first: by reward (ties keep generation order),
    or the first n in generation order when the candidates are unscored.

    With `texts` and a `tie_margin`, the candidates within `tie_margin` of the best reward (the
    ones the reward cannot tell apart, e.g. on a prompt with nothing to verify) are ordered by
    consensus instead: the one most similar to all the others first (`rewards.consensus`). The
    rewards themselves are not changed, so they stay comparable with N=1 replies.
    """
    order = range(len(scores))
    if None in scores:
        return list(order)[:n]
    ranked = sorted(order, key=lambda i: (-scores[i], i))
    if texts is None or tie_margin <= 0 or len(ranked) < 2:
        return ranked[:n]
    best = scores[ranked[0]]
    near = [i for i in ranked if scores[i] >= best - tie_margin]
    if len(near) < 2 or sum(map(len, texts)) > MAX_CONSENSUS_CHARS:
        return ranked[:n]
    agreement = consensus(texts)
    near.sort(key=lambda i: (-agreement[i], i))
    return (near + [i for i in ranked if i not in near])[:n]
