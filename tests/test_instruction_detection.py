"""The default scorer reads instructions in phrasings it was not written from: precision and recall on
a corpus written independently of the detector (tests/data/instruction_prompts.jsonl, 316 prompts).
Half of it (odd lines) was used to tune the detector; the other half was looked at once, to report.
The floors below are those figures rounded down, so a change that reads prompts worse fails here."""

from bench.instruction_detection import CORPUS, evaluate, load, split


def test_detection_on_the_whole_corpus():
    tally = evaluate(load(CORPUS))
    assert tally.precision() >= 0.96 and tally.recall() >= 0.95, (tally.precision(), tally.recall())
    assert tally.args() >= 0.97


def test_detection_on_the_half_it_was_not_tuned_on():
    tally = evaluate(split(load(CORPUS), "held-out"))
    assert tally.precision() >= 0.94 and tally.recall() >= 0.91, (tally.precision(), tally.recall())


def test_prompts_without_an_instruction_are_read_as_such():
    rows = [row for row in load(CORPUS) if not row["instructions"]]
    tally = evaluate(rows)
    assert len(rows) >= 60 and sum(tally.fp.values()) <= 3
