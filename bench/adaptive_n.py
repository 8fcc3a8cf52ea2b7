"""Adaptive N against fixed N, on the same prompts and the same samples.

    python -m bench.adaptive_n --db tao-demo/tao.db [--first 2 4] [--spread 0.05 0.1 0.2]

Replays the engine's adaptive rule (`gateway.config.AdaptiveConfig.uncertain`) over logged
best-of-N requests: candidates are i.i.d. samples, so "the first k candidates, then the rest only
if their scores disagree" is exactly what the live engine would have generated for that prompt
with those samples (for pointwise scorers, which score each candidate on its own). Prints, per
setting: candidates and tokens per request, tokens saved, mean served reward, and the share of
the fixed-N uplift over N=1 that is kept.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from statistics import mean

from gateway.config import AdaptiveConfig
from gateway.store import best_of_n_candidates, connection


def load(db_path: Path) -> list[list[tuple[float, int]]]:
    """Per complete, fully scored best-of-N request: (score, tokens) of each candidate in generation order."""
    requests: dict[str, list[tuple[float, int]]] = defaultdict(list)
    asked: dict[str, int] = {}
    with connection(db_path) as db:
        candidates = best_of_n_candidates(db)
    for c in candidates:
        requests[c.request_id].append((c.score, c.tokens or 0))
        asked[c.request_id] = c.best_of
    return [cands for rid, cands in requests.items()
            if len(cands) == asked[rid] and all(s is not None for s, _ in cands)]


def replay(requests: list[list[tuple[float, int]]], rule: AdaptiveConfig | None, k: int | None = None):
    """(mean candidates, mean tokens, mean served reward) under a rule (None: fixed k or all)."""
    used_counts, tokens, rewards = [], [], []
    for cands in requests:
        if rule is None:
            used = cands[:k] if k else cands
        else:
            used = cands[:rule.first]
            if rule.uncertain([s for s, _ in used]):
                used = cands
        used_counts.append(len(used))
        tokens.append(sum(t for _, t in used))
        rewards.append(max(s for s, _ in used))
    return mean(used_counts), mean(tokens), mean(rewards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a tao.db with best-of-N traffic (e.g. from tao demo)")
    parser.add_argument("--first", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--spread", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--good-enough", type=float, nargs="*", default=[0.9, 0.95],
                        help="also: spread 0 with these good_enough cut-offs (stop once an answer is good enough)")
    args = parser.parse_args()
    requests = load(Path(args.db))
    if not requests:
        raise SystemExit(f"no complete scored best-of-N requests in {args.db}")
    n = max(len(c) for c in requests)
    requests = [c for c in requests if len(c) == n]
    _, n1_tokens, n1_reward = replay(requests, None, k=1)
    _, full_tokens, full_reward = replay(requests, None)
    uplift = full_reward - n1_reward
    print(f"{len(requests)} logged best-of-{n} requests from {args.db}")
    print(f"{'policy':<34} {'cands/req':>9} {'tokens/req':>10} {'tokens saved':>12} {'reward':>8} {'uplift kept':>11}")

    def row(name: str, cands: float, tokens: float, reward: float) -> None:
        kept = (reward - n1_reward) / uplift if uplift > 1e-9 else float("nan")
        print(f"{name:<34} {cands:>9.2f} {tokens:>10.1f} {1 - tokens / full_tokens:>11.0%} {reward:>8.4f} {kept:>10.0%}")

    row(f"fixed N={n}", *replay(requests, None))
    row("fixed N=1", *replay(requests, None, k=1))
    for first in args.first:
        row(f"fixed N={first}", *replay(requests, None, k=first))
        for spread in args.spread:
            rule = AdaptiveConfig(first=first, spread=spread)
            row(f"adaptive first={first} spread>{spread:g}", *replay(requests, rule))
        for good in args.good_enough:
            rule = AdaptiveConfig(first=first, spread=0.0, good_enough=good)
            row(f"adaptive first={first} until>={good:g}", *replay(requests, rule))


if __name__ == "__main__":
    main()
