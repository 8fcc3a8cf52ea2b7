"""The eval report's headline number: the share of the best-of-N uplift the checkpoint gives at N=1."""

import pytest

from distill.evaluate import EvalReport


def report(base_n1_logged: float, best_of_n_logged: float, base_n1: float, new_n1: float) -> EvalReport:
    return EvalReport(prompts=4, samples_per_prompt=2, base_n1_logged=base_n1_logged,
                      base_best_of_n_logged=best_of_n_logged, base_n1=base_n1, new_n1=new_n1,
                      base_tokens_per_answer_logged=80.0, new_tokens_per_answer=20.0)


def test_gain_recovered_is_the_n1_gain_over_the_logged_best_of_n_uplift():
    assert report(0.5, 0.7, 0.5, 0.6).gain_recovered == pytest.approx(0.5)
    assert report(0.5, 0.7, 0.48, 0.68).gain_recovered == pytest.approx(1.0)  # measured against the eval's base
    assert report(0.5, 0.7, 0.5, 0.45).gain_recovered == pytest.approx(-0.25)  # a checkpoint that got worse


def test_gain_recovered_is_undefined_without_a_best_of_n_uplift():
    assert report(0.5, 0.5, 0.5, 0.6).gain_recovered is None
    assert report(0.6, 0.5, 0.5, 0.6).gain_recovered is None


def test_the_report_dict_carries_gain_recovered():
    data = report(0.5, 0.7, 0.5, 0.6).as_dict()
    assert data["gain_recovered"] == pytest.approx(0.5) and data["new_n1"] == 0.6 and data["prompts"] == 4
