"""The engine's pure steps: how N is resolved, and which candidates are returned."""

import pytest

from gateway.bestofn import select_best_candidates
from gateway.config import ModelConfig
from gateway.errors import APIError
from gateway.request import resolve_best_of

MODEL = ModelConfig(name="m", model="openai/m", best_of=4, max_best_of=8)


@pytest.mark.parametrize(("body", "header", "n", "default", "expected"), [
    (None, None, 1, None, 4),  # the model's default
    (None, None, 6, None, 6),  # raised to n
    (None, None, 1, 1, 1),  # the rollout arm's default
    (None, "5", 1, None, 5),  # the header
    (2, "5", 1, None, 2),  # the body wins over the header
    (8, None, 8, None, 8),  # the maximum itself
])
def test_best_of_comes_from_body_then_header_then_default(body, header, n, default, expected):
    assert resolve_best_of(MODEL, body, header, n, default=default) == expected


@pytest.mark.parametrize(("body", "header", "n", "code"), [
    (9, None, 1, "best_of_too_large"),
    (None, "9", 1, "best_of_too_large"),
    (None, None, 9, "best_of_too_large"),
    (2, None, 3, "invalid_best_of"),
    (None, "0", 1, "invalid_best_of"),
    (None, "many", 1, "invalid_best_of"),
])
def test_an_impossible_best_of_is_a_400_naming_it(body, header, n, code):
    with pytest.raises(APIError) as info:
        resolve_best_of(MODEL, body, header, n)
    assert info.value.status == 400 and info.value.param == "best_of" and info.value.code == code


def test_the_top_n_are_returned_best_first_ties_in_generation_order():
    assert select_best_candidates([0.1, 0.9, 0.5, 0.9], 1) == [1]
    assert select_best_candidates([0.1, 0.9, 0.5, 0.9], 3) == [1, 3, 2]
    assert select_best_candidates([0.2], 2) == [0]  # fewer candidates than n (partial failure)


def test_unscored_candidates_are_returned_in_generation_order():
    assert select_best_candidates([None, None, None], 2) == [0, 1]


TIED = ["It is Paris, the capital city of France.", "Rome is lovely in the spring and summer.",
        "The capital city of France is Paris.", "Paris is the capital city of France."]


@pytest.mark.parametrize(("prompt", "consensus_decides"), [
    ("What is the capital of France?", True),  # nothing to verify: near-ties go to the consensus answer
    ("What is the capital of France? Do not use any commas.", False),  # the reward decides, ties keep order
])
def test_consensus_breaks_near_ties_only_where_nothing_is_verifiable(gateway, fake, prompt, consensus_decides):
    from gateway.rewards.default import instruction_following

    upstream, _ = fake
    upstream.config.texts = TIED
    scores = instruction_following(prompt, TIED)
    by_reward = select_best_candidates(scores, 1)[0]
    by_consensus = select_best_candidates(scores, 1, TIED, 0.05)[0]
    assert by_reward != by_consensus  # the case tells the two rules apart
    with gateway(best_of=4) as gw:
        reply = gw.client.chat.completions.create(model="mock", messages=[{"role": "user", "content": prompt}])
    tao = reply.model_extra["tao"]
    assert tao["winner"] == (by_consensus if consensus_decides else by_reward)
    assert tao["scores"] == scores  # the rewards themselves are unchanged
