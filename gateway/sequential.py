"""The rollout's test: group-sequential non-inferiority of paired rewards, clustered by prompt.

The question: is the candidate's mean reward at least the incumbent's minus `margin`? Evidence
arrives as paired differences d (candidate − incumbent on the same prompt) and is looked at more
than once, so the test is planned as a group-sequential design (Jennison & Turnbull, *Group
Sequential Methods*, 2000):

- **Planned looks.** Look k of K is taken once k·`units_per_look` independent units are in; there
  is no look beyond K.
- **Alpha spending, O'Brien–Fleming type** (Lan & DeMets 1983): by information fraction t the
  test has spent α(t) = 2 − 2Φ(Φ⁻¹(1 − α/2)/√t) of its one-sided error. Early looks spend almost
  nothing, so the last look's boundary is close to the fixed-sample one and the power at parity is
  close to a single test's with the same number of units. The boundaries come from the exact joint
  law of the look statistics (recursive numerical integration), not from simulation.
- **Small samples.** The statistic is Student's t, not z: a z bound from 6 pairs lets a candidate at
  exactly −margin through about 7 % of the time instead of 5 %. Each z boundary is first read at
  its nominal level on the t scale with its look's degrees of freedom (J&T §11.4); that alone still
  lets 5.2 % through at 6 prompts a look, because sequential t statistics are not jointly normal.
  So every look that spends a measurable share of alpha has its t boundary set so that the chance of
  first crossing there is exactly that share, under Gaussian differences at −margin (the t statistic
  is pivotal there: the answer does not depend on the spread). That law is simulated once per plan
  with a fixed seed (200,000 paths), so the boundaries are the same on every run.
- **Clusters.** A prompt asked many times gives pairs that are not independent; the unit is the
  prompt. Each prompt's pairs are averaged, and the test runs on those means (one per prompt).

At look k, with T = (mean + margin) / se over the units so far and the boundary c_k:
T ≥ c_k shows non-inferiority (promote at this first crossing); T ≤ −c_k shows the candidate worse
than the margin (harm: roll back); at the last look without either, the test ends undecided and the
incumbent stays (a rollback too: the candidate was not shown good enough). The harm side uses the
same boundaries, non-binding: it never makes the promotion side less conservative.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from statistics import fmean, stdev
from typing import Literal

import numpy as np
from scipy import optimize, stats

_PATHS = 200_000  # simulated null paths that calibrate the t boundaries
_MIN_CROSSINGS = 200  # a look whose share of alpha is fewer paths than this keeps its nominal t boundary
_GRID_POINTS = 1201  # per look, on the continuation region of the look statistic
_GRID_FLOOR = -9.0  # the grid's lower end: the mass below it is below 1e-18


def obrien_fleming_spent(alpha: float, fraction: float) -> float:
    """One-sided error spent by information fraction `fraction` (Lan–DeMets O'Brien–Fleming type)."""
    if fraction <= 0:
        return 0.0
    return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(min(fraction, 1.0))))


@lru_cache(maxsize=64)
def efficacy_bounds(alpha: float, looks: int) -> tuple[float, ...]:
    """z boundaries c_1..c_K of K equally spaced looks: under no difference, the chance that the
    look statistic first reaches c_k at look k is exactly the error spent between looks k−1 and k."""
    fractions = [k / looks for k in range(1, looks + 1)]
    spent = [obrien_fleming_spent(alpha, t) for t in fractions]
    bound = float(stats.norm.isf(spent[0]))
    grid = np.linspace(_GRID_FLOOR, bound, _GRID_POINTS)
    density = stats.norm.pdf(grid)  # of Z_1 on the region where the test continues
    bounds = [bound]
    for k in range(1, looks):
        before, now = fractions[k - 1], fractions[k]
        step = math.sqrt(now - before)
        weights = np.full(grid.size, grid[1] - grid[0])
        weights[[0, -1]] /= 2  # trapezoid rule
        mass = weights * density

        def crossing(c: float) -> float:  # P(continue until look k, then Z_k >= c)
            return float(mass @ stats.norm.sf((c * math.sqrt(now) - grid * math.sqrt(before)) / step))

        target = spent[k] - spent[k - 1]
        bound = float(optimize.brentq(lambda c: crossing(c) - target, -5.0, 40.0, xtol=1e-10))
        new_grid = np.linspace(_GRID_FLOOR, bound, _GRID_POINTS)
        kernel = stats.norm.pdf((new_grid[:, None] * math.sqrt(now) - grid[None, :] * math.sqrt(before)) / step)
        density = kernel @ mass * math.sqrt(now) / step
        grid = new_grid
        bounds.append(bound)
    return tuple(bounds)


@lru_cache(maxsize=64)
def t_bounds(alpha: float, looks: int, units_per_look: int) -> tuple[float, ...]:
    """t boundaries of K looks at k·`units_per_look` units, calibrated to spend exactly what
    `efficacy_bounds` spends at each look under Gaussian differences at the null."""
    z_bounds = efficacy_bounds(alpha, looks)
    spent = [0.0] + [obrien_fleming_spent(alpha, k / looks) for k in range(1, looks + 1)]
    rng = np.random.default_rng(0)
    sums, deviations = np.zeros(_PATHS), np.zeros(_PATHS)  # per path: Σd and Σ(d − mean)² so far
    alive = np.ones(_PATHS, dtype=bool)
    bounds = []
    for k in range(1, looks + 1):
        # A look's new units, drawn as their sum and their own sum of squared deviations (independent
        # for Gaussian data): exact, and O(paths) whatever the units per look.
        block_sum = rng.normal(0.0, math.sqrt(units_per_look), _PATHS)
        block_deviations = rng.chisquare(units_per_look - 1, _PATHS) if units_per_look > 1 else np.zeros(_PATHS)
        before = (k - 1) * units_per_look
        n = before + units_per_look
        if before:
            gap = sums / before - block_sum / units_per_look
            deviations += block_deviations + before * units_per_look / n * np.square(gap)
        else:
            deviations = block_deviations
        sums += block_sum
        variance = np.maximum(deviations, 1e-300) / max(n - 1, 1)
        statistic = sums / n / np.sqrt(variance / n)
        nominal = float(stats.t.isf(stats.norm.sf(z_bounds[k - 1]), max(n - 1, 1)))
        crossings = round((spent[k] - spent[k - 1]) * _PATHS)
        if n > 1 and crossings >= _MIN_CROSSINGS:
            continuing = np.sort(statistic[alive])[::-1]
            bound = float((continuing[crossings - 1] + continuing[crossings]) / 2)
        else:
            bound = nominal
        bounds.append(bound)
        alive &= statistic < bound
    return tuple(bounds)


@dataclass(frozen=True)
class ClusteredDifference:
    """The mean paired difference over independent units (prompts), each unit its pairs' mean."""

    units: int
    pairs: int
    mean: float
    sd: float  # of the unit means

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.units) if self.units else math.inf


def clustered_difference(pairs: Iterable[tuple[Hashable, float]]) -> ClusteredDifference:
    """(unit, difference) pairs → the mean and spread of the per-unit means."""
    by_unit: dict[Hashable, list[float]] = {}
    for unit, difference in pairs:
        by_unit.setdefault(unit, []).append(difference)
    means = [fmean(values) for values in by_unit.values()]
    pairs_count = sum(map(len, by_unit.values()))
    return ClusteredDifference(units=len(means), pairs=pairs_count, mean=fmean(means) if means else 0.0,
                               sd=stdev(means) if len(means) > 1 else 0.0)


LookVerdict = Literal["promote", "rollback", "continue", "undecided"]


@dataclass(frozen=True)
class LookOutcome:
    """One look: the statistic, the boundary it was held to, and what it shows."""

    look: int
    max_looks: int
    difference: ClusteredDifference
    margin: float
    boundary: float  # on the t scale, for this look's planned units
    verdict: LookVerdict

    @property
    def statistic(self) -> float:
        """(mean + margin) / se: how far above −margin the mean is, in standard errors."""
        d = self.difference
        if d.se == 0:
            return math.inf if d.mean + self.margin > 0 else -math.inf if d.mean + self.margin < 0 else 0.0
        return (d.mean + self.margin) / d.se

    @property
    def lower(self) -> float:
        """The sequential lower confidence bound on the mean difference at this look."""
        return self.difference.mean - self.boundary * self.difference.se

    @property
    def upper(self) -> float:
        return self.difference.mean + self.boundary * self.difference.se

    def as_dict(self) -> dict[str, float | int | str]:
        d = self.difference
        return {"look": self.look, "max_looks": self.max_looks, "units": d.units, "pairs": d.pairs,
                "mean": d.mean, "sd": d.sd, "se": d.se, "margin": self.margin, "boundary": self.boundary,
                "statistic": self.statistic, "lower": self.lower, "upper": self.upper, "verdict": self.verdict}


@dataclass(frozen=True)
class SequentialPlan:
    """K looks, one every `units_per_look` independent units, one-sided error `alpha` in all."""

    units_per_look: int
    max_looks: int
    alpha: float
    margin: float

    def units_for(self, look: int) -> int:
        """Units look `look` (1-based) is taken at."""
        return look * self.units_per_look

    def boundary(self, look: int) -> float:
        """Look `look`'s boundary on the t scale (for its planned units)."""
        return t_bounds(self.alpha, self.max_looks, self.units_per_look)[look - 1]

    def look(self, look: int, difference: ClusteredDifference) -> LookOutcome:
        """What look `look` shows from `difference` (taken over that look's units)."""
        boundary = self.boundary(look)
        outcome = LookOutcome(look, self.max_looks, difference, self.margin, boundary, "continue")
        statistic = outcome.statistic
        verdict: LookVerdict = ("promote" if statistic >= boundary else "rollback" if statistic <= -boundary
                                else "undecided" if look >= self.max_looks else "continue")
        return replace(outcome, verdict=verdict)

    def power(self, mean: float, sd: float) -> float:
        """About how likely the plan promotes a candidate whose paired differences have this mean and sd:
        one test over all the plan's units at its last boundary (early looks add little power under
        O'Brien–Fleming spending). For choosing an arm the plan can decide, not for reporting."""
        units = self.units_for(self.max_looks)
        if sd <= 0:
            return 1.0 if mean > -self.margin else 0.0
        return float(stats.norm.cdf((mean + self.margin) * math.sqrt(units) / sd - self.boundary(self.max_looks)))
