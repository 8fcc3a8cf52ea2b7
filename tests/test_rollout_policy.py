"""The rollout policy's pure parts: the per-arm statistic, the group-sequential test at planned looks
(its boundaries, its clusters, its small-sample bounds) and its error across looks (simulated over
the decision code itself)."""

import math
import random

import pytest

from bench.rollout_sim import run_canary
from gateway.config import RolloutConfig
from gateway.rollout import ArmStats, arm_stats, decide
from gateway.sequential import SequentialPlan, clustered_difference, efficacy_bounds, obrien_fleming_spent
from gateway.store import ArmOutcomes, ShadowPair

CONFIG = RolloutConfig(pairs_per_look=20, max_looks=4, alpha=0.05, margin=0.05, min_requests_rollback=10,
                       max_error_rate_increase=0.05)


def arm(requests: int = 40, errors: int = 0) -> ArmStats:
    return ArmStats(requests=requests, errors=errors, scored=requests - errors, mean=0.5, variance=0.01,
                    tokens_per_request=10.0)


def pairs(differences: list[float], incumbent: float = 0.8, prompts: list[str] | None = None) -> list[ShadowPair]:
    """One pair per difference, each on its own prompt unless `prompts` names them."""
    prompts = prompts or [f"prompt {i}" for i in range(len(differences))]
    return [ShadowPair(request_id=f"r{i}", created_at=float(i), prompt=prompt, incumbent=incumbent,
                       candidate=incumbent + d) for i, (d, prompt) in enumerate(zip(differences, prompts))]


def test_arm_stats_are_mean_and_sample_variance_of_the_rewards():
    stats = arm_stats(ArmOutcomes(requests=5, errors=1, tokens_per_request=12.5, rewards=[0.2, 0.4, 0.6]))
    assert (stats.requests, stats.errors, stats.scored, stats.tokens_per_request) == (5, 1, 3, 12.5)
    assert stats.mean == pytest.approx(0.4) and stats.variance == pytest.approx(0.04)
    assert stats.error_rate == pytest.approx(0.2)
    empty = arm_stats(ArmOutcomes(requests=0, errors=0, tokens_per_request=0.0, rewards=[]))
    assert (empty.mean, empty.variance, empty.error_rate) == (0.0, 0.0, 0.0)


def test_the_boundaries_are_obrien_flemings_as_published():
    """Lan-DeMets O'Brien-Fleming spending, one-sided 0.025, five equal looks: gsDesign's sfLDOF
    boundaries (Jennison & Turnbull's Table 7.6 design) to three decimals; one look is the plain z."""
    assert efficacy_bounds(0.025, 5) == pytest.approx((4.877, 3.357, 2.680, 2.290, 2.031), abs=1e-3)
    assert efficacy_bounds(0.05, 1) == pytest.approx((1.6449,), abs=1e-4)
    assert obrien_fleming_spent(0.05, 1.0) == pytest.approx(0.05)
    assert obrien_fleming_spent(0.05, 1 / 6) < 1e-4  # the first of six looks spends almost nothing


def test_small_samples_use_t_bounds():
    """At one look of 6 prompts the boundary is Student's t with 5 degrees of freedom, not z."""
    plan = SequentialPlan(units_per_look=6, max_looks=1, alpha=0.05, margin=0.05)
    assert plan.boundary(1) == pytest.approx(2.015, abs=0.01)  # t(5); the calibration is simulated
    assert SequentialPlan(units_per_look=5000, max_looks=1, alpha=0.05, margin=0.05).boundary(1) == pytest.approx(1.645, abs=0.01)


def test_the_pairs_of_one_prompt_are_one_unit():
    difference = clustered_difference([("a", 1.0), ("a", 0.0), ("b", 0.0), ("c", 0.2)])
    assert (difference.units, difference.pairs) == (3, 4)
    assert difference.mean == pytest.approx((0.5 + 0.0 + 0.2) / 3)
    assert difference.sd == pytest.approx(math.sqrt(((0.5 - 0.7 / 3) ** 2 + (0.7 / 3) ** 2 + (0.2 - 0.7 / 3) ** 2) / 2))


def test_no_reward_decision_between_looks_and_repeats_do_not_make_a_look():
    decision = decide(pairs([0.3] * 19), 0, arm(), arm(), CONFIG)
    assert decision.action == "hold" and decision.look is None and "19 of the 20" in decision.reason
    # Look 1 was taken at 20 prompts: the next needs 40, however good the candidate looks.
    assert decide(pairs([0.3] * 39), 1, arm(), arm(), CONFIG).action == "hold"
    # 40 pairs from 10 prompts asked four times each are 10 units: no look yet.
    repeated = pairs([0.3] * 40, prompts=[f"p{i % 10}" for i in range(40)])
    assert decide(repeated, 0, arm(), arm(), CONFIG).action == "hold"


def test_a_clearly_equal_candidate_is_promoted_at_the_first_crossing():
    rng = random.Random(0)
    decision = decide(pairs([rng.gauss(0.0, 0.02) for _ in range(25)]), 0, arm(), arm(), CONFIG)
    assert decision.action == "promote" and decision.look == 1
    assert decision.numbers["units"] == 20 and decision.numbers["lower"] >= -CONFIG.margin


def test_an_uncertain_candidate_climbs_a_step_and_is_rolled_back_if_the_last_look_shows_nothing():
    noisy = [(-1) ** i * 0.5 for i in range(80)]  # mean 0, sd 0.5: neither side is shown
    first = decide(pairs(noisy), 0, arm(), arm(), CONFIG)
    assert first.action == "climb" and first.look == 1 and "harm not shown" in first.reason
    last = decide(pairs(noisy), 3, arm(), arm(), CONFIG)
    assert last.action == "rollback" and last.look == 4 and "last planned look" in last.reason
    assert decide(pairs(noisy), 4, arm(), arm(), CONFIG).action == "hold"  # no look beyond the plan


def test_a_confidently_worse_candidate_is_rolled_back_at_a_look():
    decision = decide(pairs([-0.4 + 0.01 * (i % 3) for i in range(20)]), 0, arm(), arm(), CONFIG)
    assert decision.action == "rollback" and "confidently worse" in decision.reason
    assert decision.numbers["upper"] < -CONFIG.margin


def test_a_candidate_that_fails_more_often_is_rolled_back_without_any_pairs():
    decision = decide([], 0, arm(requests=10, errors=2), arm(), CONFIG)
    assert decision.action == "rollback" and "error rate" in decision.reason
    # Within the allowed increase, or with too few candidate requests, it holds.
    assert decide([], 0, arm(requests=100, errors=4), arm(), CONFIG).action == "hold"
    assert decide([], 0, arm(requests=9, errors=9), arm(), CONFIG).action == "hold"


@pytest.mark.parametrize("config", [CONFIG, RolloutConfig(pairs_per_look=12, max_looks=3),
                                    RolloutConfig(pairs_per_look=6, max_looks=3)], ids=["4x20", "3x12", "3x6"])
def test_a_candidate_exactly_at_the_margin_is_promoted_at_most_alpha_of_the_time(config):
    """Neither conclusion is true at true difference = -margin; a promotion there is the error the
    plan bounds by alpha across all its looks, also with 6 prompts a look (where z bounds gave 7 %)."""
    rng = random.Random(1)
    runs = 3000
    promoted = [run_canary(rng, config, -config.margin, 0.35)[0] for _ in range(runs)].count("promote") / runs
    tolerance = 3 * (config.alpha * (1 - config.alpha) / runs) ** 0.5  # Monte Carlo error
    assert promoted <= config.alpha + tolerance
    # A clearly better candidate gets through with these numbers almost always.
    better = [run_canary(rng, CONFIG, 0.15, 0.1)[0] for _ in range(200)].count("promote") / 200
    assert better > 0.95
