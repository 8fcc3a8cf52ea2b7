"""The one statistic behind the eval gate and the rollout policy: a paired, one-sided bound.

Both ask the same question of paired reward differences d_i (new minus reference, one per prompt):
is the mean difference above a margin, and how sure are we? Both use `paired_bound`.

The rollout policy looks at its evidence more than once, so a fixed z would be tested again and
again and its error would grow with every look (a simulation with no true difference rolled back
9.5 % of the time at a nominal 5 %). `LookSchedule` fixes that the plain way: a decision is taken
only at planned looks (every `min_pairs` new pairs, at most `max_looks` times), and each one-sided
error α is split evenly over them (Bonferroni), so across all looks the chance of a wrong rollback
or a wrong promotion stays at most α whatever the dependence between looks. At the last look the
test is truncated: a candidate that has not shown it is within the margin is rolled back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist, fmean, stdev


@dataclass(frozen=True)
class PairedBound:
    """Mean of paired differences with a one-sided bound on each side at quantile `z`."""

    pairs: int
    mean: float
    sd: float
    z: float

    @property
    def half_width(self) -> float:
        return self.z * self.sd / math.sqrt(self.pairs) if self.pairs else math.inf

    @property
    def lower(self) -> float:
        return self.mean - self.half_width

    @property
    def upper(self) -> float:
        return self.mean + self.half_width

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "lower": self.lower, "upper": self.upper, "half_width": self.half_width}


def z_for(alpha: float) -> float:
    """The one-sided normal quantile for error `alpha` (0.05 → 1.645)."""
    return NormalDist().inv_cdf(1.0 - alpha)


def paired_bound(differences: Sequence[float], z: float) -> PairedBound:
    """Normal bound on the mean of `differences` (sample sd; no pairs gives an infinite width)."""
    n = len(differences)
    if n == 0:
        return PairedBound(0, 0.0, 0.0, z)
    return PairedBound(n, fmean(differences), stdev(differences) if n > 1 else 0.0, z)


@dataclass(frozen=True)
class LookSchedule:
    """Planned looks at `min_pairs`, 2·`min_pairs`, … `max_looks`·`min_pairs` pairs, α split over them."""

    min_pairs: int
    max_looks: int
    alpha: float

    @property
    def z(self) -> float:
        return z_for(self.alpha / self.max_looks)

    def pairs_for(self, look: int) -> int:
        """Pairs look number `look` (1-based) is taken over: the first look·min_pairs."""
        return look * self.min_pairs

    def is_last(self, look: int) -> bool:
        return look >= self.max_looks
