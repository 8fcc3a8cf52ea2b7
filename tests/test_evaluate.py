"""The eval report and the gate over per-prompt results (no model: the sampling is tested in test_distill)."""

from pathlib import Path

import pytest

from distill.evaluate import EvalReport, PromptResult, gate, summarize
from distill.sampling import Answer
from gateway.sequential import SequentialPlan
from gateway.stats import z_for

Z = z_for(0.05)


def answers(*scores: float, ended: bool = True) -> list[Answer]:
    return [Answer(text="x", score=s, tokens=10, ended=ended) for s in scores]


def result(logged_n1: float, logged_best: float, base: list[float], new: list[float]) -> PromptResult:
    return PromptResult(prompt="p", logged_n1=logged_n1, logged_best_of_n=logged_best, base=answers(*base),
                        new=answers(*new))


def report(base_n1_logged: float, best_of_n_logged: float, base_n1: float, new_n1: float) -> EvalReport:
    results = [result(base_n1_logged, best_of_n_logged, [base_n1, base_n1], [new_n1, new_n1])] * 4
    return summarize(results, samples=2, z=Z, logged_tokens=[80])


def test_gain_recovered_is_the_n1_gain_over_the_logged_best_of_n_uplift():
    assert report(0.5, 0.7, 0.5, 0.6).gain_recovered == pytest.approx(0.5)
    assert report(0.5, 0.7, 0.48, 0.68).gain_recovered == pytest.approx(1.0)  # measured against the eval's base
    assert report(0.5, 0.7, 0.5, 0.45).gain_recovered == pytest.approx(-0.25)  # a checkpoint that got worse


def test_gain_recovered_is_undefined_without_a_best_of_n_uplift():
    assert report(0.5, 0.5, 0.5, 0.6).gain_recovered is None
    assert report(0.6, 0.5, 0.5, 0.6).gain_recovered is None


def test_the_bounds_are_paired_per_prompt():
    # Base and new differ a lot between prompts but by the same 0.1 on each: the paired bound is tight.
    results = [result(0.2 + k / 10, 0.9, [0.2 + k / 10] * 2, [0.3 + k / 10] * 2) for k in range(5)]
    summary = summarize(results, samples=2, z=Z, logged_tokens=[])
    assert summary.versus_base.mean == pytest.approx(0.1) and summary.versus_base.sd == pytest.approx(0.0, abs=1e-12)
    assert summary.versus_base.lower == pytest.approx(0.1)
    data = summary.as_dict()
    assert data["versus_base"]["pairs"] == 5 and data["gain_recovered_interval"] is not None


def test_the_gate_needs_a_lower_bound_above_the_margin_and_no_sure_rollback():
    noisy = [result(0.5, 0.6, [0.5, 0.5], [0.5 + d, 0.5 + d]) for d in (0.3, -0.2, 0.25, -0.15)]
    verdict = gate(summarize(noisy, 2, Z, []), gate_margin=0.0, rollout_margin=0.05)
    assert not verdict.publish and "not shown above 0" in verdict.reason
    clear = [result(0.5, 0.9, [0.5, 0.5], [0.6 + d, 0.6 + d]) for d in (0.01, -0.01, 0.02, 0.0)]
    verdict = gate(summarize(clear, 2, Z, []), gate_margin=0.0, rollout_margin=0.05)
    assert not verdict.publish and "roll it back" in verdict.reason  # better than base, far below best-of-N
    good = [result(0.5, 0.6, [0.5, 0.5], [0.62 + d, 0.62 + d]) for d in (0.01, -0.01, 0.02, 0.0)]
    assert gate(summarize(good, 2, Z, []), gate_margin=0.0, rollout_margin=0.05).publish


def test_truncated_answers_are_counted():
    results = [PromptResult("p", 0.5, 0.7, base=answers(0.5, 0.5, ended=False), new=answers(0.6, 0.6))]
    summary = summarize(results, 2, Z, [])
    assert summary.base_truncated == 1.0 and summary.new_truncated == 0.0


def test_best_of_k_is_the_expected_best_of_k_samples_drawn_without_replacement():
    from itertools import combinations
    from statistics import mean

    from distill.evaluate import best_of_ks, best_of_law

    scores = [0.1, 0.9, 0.4, 0.4, 0.7]
    for k in range(1, 6):  # against every subset, counted out
        assert best_of_law(scores, k)[0] == pytest.approx(mean(max(c) for c in combinations(scores, k)))
    assert best_of_ks(4) == [1, 2, 4] and best_of_ks(6) == [1, 2, 4] and best_of_ks(1) == [1]


def test_the_cheapest_arm_is_the_smallest_k_the_plan_can_show_within_the_margin():
    """N=1 answers score 0 or 1 half the time (mean 0.5); logged best-of-N is 0.8: N=1 is 0.3 short,
    best-of-2 (0.833, +0.033) holds it, so k = 2 when the plan has the units to show it; with few units
    no k has 80 % power and k = 4 (+0.2) has the most; the gate then asks the rollout's question at k."""
    prompts = [result(0.5, 0.8, [0.5] * 4, [0.0, 1.0, 0.0, 1.0]) for _ in range(6)]
    summary = summarize(prompts, samples=4, z=Z, logged_tokens=[80])
    assert summary.best_of_k == pytest.approx({1: 0.5, 2: 5 / 6, 4: 1.0})
    assert summary.best_of_k_pair_sd[1] == pytest.approx(0.5)  # one N=1 draw: 0 or 1
    assert summary.best_of_k_pair_sd[2] == pytest.approx((5 / 6 - 25 / 36) ** 0.5)
    big, small = (SequentialPlan(units_per_look=u, max_looks=3, alpha=0.05, margin=0.05) for u in (200, 5))
    assert summary.chosen_best_of(big) == 2 and summary.chosen_best_of(small) == 4
    assert summary.chosen_best_of(SequentialPlan(200, 3, 0.05, margin=0.4)) == 1  # N=1 within a wide margin
    assert summary.as_dict()["best_of_k"]["2"]["tokens_per_answer"] == 20  # two answers of 10 tokens
    assert not gate(summary, gate_margin=-1.0, rollout_margin=0.05, best_of=1).publish  # N=1: a sure rollback
    assert gate(summary, gate_margin=-1.0, rollout_margin=0.05, best_of=2).publish
    far = [result(0.5, 1.0, [0.5] * 4, [0.0, 0.0, 0.0, 0.5]) for _ in range(3)]
    assert summarize(far, 4, Z, []).chosen_best_of(big) == 1  # no k comes near: the cheapest (the gate rejects it)


def test_sampling_on_the_serving_engine_needs_a_server_to_load_the_adapter_on():
    from distill.sampling import PolicySampler
    from gateway.config import ModelConfig

    provider = ModelConfig(name="m", model="openai/gpt-4o-mini")  # LiteLLM by name: no server of ours
    with pytest.raises(ValueError, match="no api_base"):
        PolicySampler(Path("base"), provider, scorer=None, adapters={}, on_serving=True)
