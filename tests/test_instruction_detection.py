"""The default scorer reads instructions in phrasings it was not written from.

Two corpora written independently of the detector, each by someone who never saw it:
`instruction_prompts.jsonl` (316 prompts) was used to tune it (first its odd half, then all of
it); `instruction_prompts_fresh.jsonl` (170 prompts) was written afterwards and measured once,
untuned: its figures are the ones to quote. The floors are those figures rounded down, so a change
that reads prompts worse fails here.
"""

from pathlib import Path

from bench.instruction_detection import CORPUS, evaluate, load

FRESH = Path(CORPUS).with_name("instruction_prompts_fresh.jsonl")


def test_detection_on_the_corpus_it_was_tuned_on():
    tally = evaluate(load(CORPUS))
    assert tally.precision() >= 0.99 and tally.recall() >= 0.99, (tally.precision(), tally.recall())
    assert tally.args() >= 0.98


def test_detection_on_a_fresh_corpus_it_was_never_tuned_on():
    tally = evaluate(load(FRESH))
    assert tally.precision() >= 0.97 and tally.recall() >= 0.82, (tally.precision(), tally.recall())


def test_prompts_without_an_instruction_are_read_as_such():
    rows = [row for row in load(CORPUS) + load(FRESH) if not row["instructions"]]
    tally = evaluate(rows)
    assert len(rows) >= 110 and sum(tally.fp.values()) <= 5
