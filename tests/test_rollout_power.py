"""bench.rollout_power's arithmetic: the policy replayed over measured pairs, and the pairs a
candidate would need for the policy's lower bound to clear the margin."""

import math
import random

from bench.rollout_power import pairs_needed, replay
from gateway.stats import LookSchedule

SCHEDULE = LookSchedule(min_pairs=10, max_looks=3, alpha=0.05)


def noisy(mean: float, count: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [mean + rng.gauss(0.0, 0.3) for _ in range(count)]


def test_replay_stops_at_the_first_look_that_decides():
    assert replay(noisy(0.5, 40), SCHEDULE, margin=0.05)[-1] == "advance at look 1/3"
    assert replay(noisy(-0.6, 40), SCHEDULE, margin=0.05)[-1] == "rollback at look 1/3"


def test_replay_rolls_back_at_the_last_look_what_was_not_shown_within_the_margin():
    row = replay(noisy(-0.05, 30, seed=3), SCHEDULE, margin=0.05)
    assert row[2] == "30" and row[-1] == "rollback at look 3/3"


def test_replay_with_fewer_pairs_than_a_look_takes_none():
    assert replay(noisy(0.5, 9), SCHEDULE, margin=0.05)[-1] == "no look: too few pairs"


def test_pairs_needed_is_where_the_lower_bound_first_clears_the_margin():
    mean, sd, z, margin = -0.014, 0.35, SCHEDULE.z, 0.05
    needed = pairs_needed(mean, sd, z, margin)
    assert mean - z * sd / math.sqrt(needed) >= -margin > mean - z * sd / math.sqrt(needed - 1)
    assert pairs_needed(-0.06, sd, z, margin) == math.inf
