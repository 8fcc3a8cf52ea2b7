"""The rollout policy's pure parts: the per-arm statistic and the decision rule."""

import pytest

from gateway.config import RolloutConfig
from gateway.rollout import ArmStats, arm_stats, decide
from gateway.store import ArmOutcomes

CONFIG = RolloutConfig(min_requests=30, min_requests_rollback=10, margin=0.05, z=1.645,
                       max_error_rate_increase=0.05)


def arm(mean: float, scored: int, *, variance: float = 0.01, requests: int | None = None, errors: int = 0) -> ArmStats:
    return ArmStats(requests=scored if requests is None else requests, errors=errors, scored=scored, mean=mean,
                    variance=variance, tokens_per_request=10.0)


def policy(candidate: ArmStats, incumbent: ArmStats):
    return decide(candidate, incumbent, CONFIG.margin, CONFIG.z, CONFIG.min_requests, CONFIG.min_requests_rollback,
                  CONFIG.max_error_rate_increase)


def test_arm_stats_are_mean_and_sample_variance_of_the_rewards():
    stats = arm_stats(ArmOutcomes(requests=5, errors=1, tokens_per_request=12.5, rewards=[0.2, 0.4, 0.6]))
    assert (stats.requests, stats.errors, stats.scored, stats.tokens_per_request) == (5, 1, 3, 12.5)
    assert stats.mean == pytest.approx(0.4) and stats.variance == pytest.approx(0.04)
    assert stats.error_rate == pytest.approx(0.2)
    empty = arm_stats(ArmOutcomes(requests=0, errors=0, tokens_per_request=0.0, rewards=[]))
    assert (empty.mean, empty.variance, empty.error_rate) == (0.0, 0.0, 0.0)


def test_an_equal_candidate_with_enough_replies_advances():
    decision = policy(arm(0.80, 40, variance=0.001), arm(0.80, 40, variance=0.001))
    assert decision.action == "advance"
    assert decision.numbers["lower_bound"] >= -CONFIG.margin and decision.numbers["difference"] == 0.0


def test_too_few_candidate_replies_hold_even_when_they_look_good():
    assert policy(arm(0.95, 29, variance=0.001), arm(0.80, 40, variance=0.001)).action == "hold"


def test_a_noisy_candidate_holds_until_its_bounds_decide():
    decision = policy(arm(0.78, 40, variance=0.2), arm(0.80, 40, variance=0.2))
    assert decision.action == "hold"
    assert decision.numbers["lower_bound"] < -CONFIG.margin < decision.numbers["upper_bound"]


def test_a_confidently_worse_candidate_is_rolled_back():
    decision = policy(arm(0.20, 10), arm(0.80, 10))
    assert decision.action == "rollback" and "confidently below" in decision.reason
    assert decision.numbers["upper_bound"] < -CONFIG.margin


def test_a_rollback_on_reward_needs_evidence_on_both_arms():
    assert policy(arm(0.20, 10), arm(0.80, 9)).action == "hold"  # the incumbent has too few scored replies
    assert policy(arm(0.20, 9), arm(0.80, 40)).action == "hold"  # the candidate has too few


def test_a_candidate_that_fails_more_often_is_rolled_back_without_any_scores():
    decision = policy(arm(0.0, 0, requests=10, errors=2), arm(0.80, 40))
    assert decision.action == "rollback" and "error rate" in decision.reason
    # Within the allowed increase, or with too few candidate requests, it holds.
    assert policy(arm(0.0, 0, requests=100, errors=4), arm(0.80, 40)).action == "hold"
    assert policy(arm(0.0, 0, requests=9, errors=9), arm(0.80, 40)).action == "hold"
