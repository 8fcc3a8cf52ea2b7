"""Logged prompts → training rows and reference numbers (pure functions; no model, no database)."""

from distill.dataset import LoggedPrompt, ScoredText, dpo_rows, sft_rows
from gateway.config import DistillConfig

CONFIG = DistillConfig(dpo={"min_gap": 0.1, "max_pairs_per_prompt": 7}, sft={"margin": 0.05})


def prompt(*requests: list[tuple[str, float, str]]) -> LoggedPrompt:
    """A prompt logged by several requests, each a list of (text, score, finish_reason) in generation order."""
    p = LoggedPrompt(key="k", messages=[{"role": "user", "content": "q"}], prompt_text="q")
    for r, candidates in enumerate(requests):
        p.request_ids.append(f"r{r}")
        for i, (text, score, finish) in enumerate(candidates):
            p.candidates.append(ScoredText(text=text, score=score, won=False, finish_reason=finish,
                                           request_id=f"r{r}", index=i))
    return p


def test_reference_numbers_average_every_candidate_and_each_requests_winner():
    logged = prompt([("a", 0.2, "stop"), ("b", 0.9, "stop")], [("c", 0.6, "stop"), ("d", 0.4, "stop")])
    assert logged.n1_score == (0.2 + 0.9 + 0.6 + 0.4) / 4  # every candidate is an N=1 draw of the base
    assert logged.best_of_n_score == (0.9 + 0.6) / 2  # each request's own winner, not the pooled best
    assert [w.text for w in logged.winners()] == ["b", "c"]


def test_ties_go_to_the_earlier_candidate_as_the_gateway_selects():
    assert [w.text for w in prompt([("a", 0.5, "stop"), ("b", 0.5, "stop")]).winners()] == ["a"]


def test_a_truncated_candidate_is_never_a_target_but_may_be_rejected():
    logged = prompt([("cut off mid", 0.95, "length"), ("ended well.", 0.8, "stop"), ("bad.", 0.1, "stop")])
    assert [r["completion"][0]["content"] for r in sft_rows([logged], CONFIG)] == ["ended well."]
    pairs = dpo_rows([logged], CONFIG)
    assert {r["chosen"][0]["content"] for r in pairs} == {"ended well."}
    assert [r["rejected"][0]["content"] for r in pairs] == ["bad."]
    truncated_loser = prompt([("ended well.", 0.8, "stop"), ("cut off", 0.2, "length")])
    assert [r["rejected"][0]["content"] for r in dpo_rows([truncated_loser], CONFIG)] == ["cut off"]


def test_dpo_pairs_the_best_with_every_distinct_candidate_below_the_gap():
    logged = prompt([("best.", 0.9, "stop"), ("close.", 0.85, "stop"), ("worse.", 0.5, "stop"),
                     ("worst.", 0.1, "stop"), ("worst.", 0.1, "stop")])
    pairs = dpo_rows([logged], CONFIG)
    assert [r["rejected"][0]["content"] for r in pairs] == ["worst.", "worse."]  # lowest first, deduplicated
    assert len(dpo_rows([logged], CONFIG.model_copy(update={"dpo": CONFIG.dpo.model_copy(update={"max_pairs_per_prompt": 1})}))) == 1


def test_no_rows_when_nothing_ended_or_all_candidates_tie():
    assert dpo_rows([prompt([("x", 0.9, "length"), ("y", 0.1, "length")])], CONFIG) == []
    tied = prompt([("same.", 0.7, "stop"), ("also.", 0.7, "stop")])
    assert dpo_rows([tied], CONFIG) == [] and sft_rows([tied], CONFIG) == []
