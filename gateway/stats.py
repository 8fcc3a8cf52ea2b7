"""The eval gate's statistic: a paired, one-sided bound on the mean of reward differences d_i (new
minus reference, one per prompt): is the mean above a margin, and how sure are we? The rollout
policy asks the same question more than once, so it uses the group-sequential test of
`gateway.sequential` instead.
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
