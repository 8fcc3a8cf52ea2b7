"""Picking without a verifier: minimum Bayes risk over the candidates.

When a prompt states nothing checkable, the candidates themselves are the evidence: the one most
similar to the others is the consensus answer (MBR decoding with a cheap similarity), and sampled
answers that agree are more often right than ones that stray. Similarity is the F1 of the two
candidates' word multisets (ROUGE-1), so it costs microseconds and needs no model. Measured against
a random pick on questions with one right answer in `bench/selectors.py`.
"""

from __future__ import annotations

from collections import Counter

from gateway.rewards.text import words

MAX_CHARS = 32_000  # candidates longer than this together are not compared (the engine runs this on its loop)


def _f1(a: Counter, b: Counter, size_a: int, size_b: int) -> float:
    if not size_a or not size_b:
        return 0.0
    overlap = sum((a & b).values())
    return 2 * overlap / (size_a + size_b)


def consensus(candidates: list[str]) -> list[float]:
    """Each candidate's mean similarity to the others, in [0, 1]; 1.0 for a lone candidate."""
    if len(candidates) < 2:
        return [1.0] * len(candidates)
    bags = [Counter(w.lower() for w in words(text)) for text in candidates]
    sizes = [sum(bag.values()) for bag in bags]
    n = len(candidates)
    similarity = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            similarity[i][j] = similarity[j][i] = _f1(bags[i], bags[j], sizes[i], sizes[j])
    return [sum(row) / (n - 1) for row in similarity]
