"""Tests for bench/outside_checker.py and the outside-constraint corpus tests/data/outside/prompts.jsonl.

Pure Python and fast: no model, no gateway.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from bench.outside_checker import KINDS, check, lines, paragraphs, sentences, words

CORPUS = Path(__file__).parent / "data" / "outside" / "prompts.jsonl"
GROUPS = {"ifeval_only", "outside", "mixed", "none", "hard"}

P3 = "First paragraph here.\n\nSecond one is here.\n\nThird and last."
TABLE = "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n| 4 | 5 | 6 |"

# kind -> (args, a response that passes, a response that fails)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "word_count": ({"min": 3, "max": 5}, "One two three four.", "One two."),
    "sentence_count": ({"min": 2, "max": 2}, "It rained. We stayed in.", "It rained. We stayed in. Then it stopped."),
    "paragraph_count": ({"min": 3, "max": 3}, P3, "Only one paragraph.\nStill the same one."),
    "char_count": ({"max": 10}, "  short  ", "this is far too long"),
    "line_count": ({"min": 2, "max": 2}, "roses are red\n\nviolets are blue", "one line only"),
    "max_sentence_words": ({"n": 4}, "I like tea. It is warm.", "I like tea very much indeed."),
    "max_word_length": ({"n": 5}, "The cat sat on a mat.", "The elephant sat."),
    "bullet_max_words": ({"n": 3}, "- buy milk\n- walk dog", "- buy milk\n- walk the big dog today"),
    "paragraph_words": ({"min": 2, "max": 3}, "One two.\n\nThree four five.", "One two.\n\nThree four five six."),
    "sentences_per_paragraph": ({"min": 2, "max": 2}, "A b. C d.\n\nE f. G h.", "A b. C d.\n\nE f."),
    "question_count": ({"min": 2, "max": 2}, "Why? How?", "Why? How? When?"),
    "exclamation_count": ({"max": 1}, "Great news! We won.", "Great! News! We won!"),
    "hashtag_count": ({"min": 2, "max": 2}, "## Heading\nSunset time #travel #greece", "Sunset time #travel"),
    "emoji_count": ({"min": 2, "max": 2}, "Happy birthday \U0001F382\U0001F389", "Happy birthday \U0001F382"),
    "digit_count": ({"max": 0}, "In nineteen sixty-nine.", "In 1969."),
    "bullet_count": ({"min": 2}, "* one\n- two\n+ three", "* one\nplain line"),
    "numbered_item_count": ({"min": 3, "max": 3}, "1. a\n2. b\n3) c", "1. a\n2. b"),
    "heading_count": ({"min": 2, "max": 2, "level": 2}, "# T\n## A\ntext\n## B", "# T\n## A\n### B"),
    "stanza_count": ({"min": 2, "max": 2, "lines_per_stanza": 3}, "a\nb\nc\n\nd\ne\nf", "a\nb\nc\n\nd\ne"),
    "keyword_count": ({"keyword": "tick", "min": 2, "max": 2}, "Tick, tock, tick. Ticking.", "tick tick tick"),
    "url_count": ({"min": 1, "max": 1}, "See https://example.com/a.", "See example.com."),
    "starts_with": ({"phrase": "Dear Ms. Okafor,"}, "**Dear Ms. Okafor,** thanks.", "Hello Ms. Okafor, thanks."),
    "last_word": ({"word": "home"}, "And so we went home.", "Home is where we went."),
    "paragraph_starts_with": (
        {"prefix": "Dear Earth", "paragraph": None},
        "Dear Earth, hello.\n\nDear Earth, again.",
        "Dear Earth, hello.\n\nHi Earth, again.",
    ),
    "paragraph_first_word_in": (
        {"words": ["Plan", "Build"]},
        "Plan it well.\n\nBuild it fast.",
        "Plan it well.\n\nShip it fast.",
    ),
    "paragraph_ends_with": ({"paragraph": 2, "suffix": "?"}, "Intro.\n\nReady?\n\nGo.", "Intro?\n\nReady.\n\nGo?"),
    "ends_with_question": ({}, "Will you come?\n", "Will you come? Let me know."),
    "nth_sentence_contains": ({"n": -1, "keyword": "placebo"}, "Trials run. Some get a placebo.", "A placebo is used. Trials run."),
    "keyword_in_paragraph": (
        {"keyword": "forever", "paragraph": -1, "count": 2},
        "We met.\n\nForever yours, forever mine.",
        "Forever ago we met.\n\nForever yours, forever mine.",
    ),
    "sentence_length_order": ({"order": "increasing"}, "Go. Go now. Go now please.", "Go now. Go. Go now please."),
    "paragraph_length_order": ({"order": "decreasing"}, "a b c\n\na b\n\na", "a b\n\na b c\n\na"),
    "list_size_order": (
        {"order": "increasing"},
        "Pack:\n- tent\n\nBuy:\n- food\n- water",
        "Pack:\n- tent\n- stove\n\nBuy:\n- food",
    ),
    "markdown_table": ({"columns": 3, "rows": 2}, "Here:\n\n" + TABLE, "| a | b |\n|---|---|\n| 1 | 2 |"),
    "code_block": ({"language": "python"}, "Code:\n```py\nprint(1)\n```", "Code:\n```js\nconsole.log(1)\n```"),
    "yaml_format": (
        {"keys": ["name", "steps"]},
        "```yaml\nname: test\non: [push]\nsteps:\n  - run: |\n      pytest -q\n      echo done\n```",
        "name = test\nsteps = 3",
    ),
    "csv_format": (
        {"header": ["state", "area"], "rows": 2},
        'state,area\nAlaska,"665,384"\nTexas,268596',
        "state,area\nAlaska,665,384\nTexas,268596",
    ),
    "json_keys": ({"keys": ["id", "name"]}, '```json\n[{"id": 1, "name": "a"}]\n```', '{"id": 1}'),
    "iso_dates": ({}, "Launch on 2025-03-14, review 2025-04-01.", "Launch on 2025-03-14, review April 1."),
    "title_case_headings": ({}, "## Getting Started with the Bin\ntext", "## Getting started with the bin\ntext"),
    "acrostic": ({"word": "MAYA", "unit": "line"}, "<<Maya>>\nMorning\nAlways\nYou\nArrive", "Morning\nAlways\nArrive\nYou"),
    "numbered_list": ({}, "1. Phantom\n2. Clones\n3. Sith", "- Phantom\n- Clones"),
    "no_markdown": ({}, "Hi all,\nBudget approved. Launch in June.", "**Hi all**\n- Budget approved"),
    "no_letter": ({"letter": "e"}, "A warm sunny day at a park.", "A sunny Evening."),
    "same_initial_letter": ({"letter": "s"}, "Sly snakes slither silently.", "Sly snakes move silently."),
    "forbidden_chars": ({"chars": ";\u2014"}, "It was approved, at length.", "It was approved; at length."),
    "constrained_options": ({"options": ["yes", "no"]}, " **Yes.** ", "Yes, botanically."),
}


def test_every_kind_has_a_case() -> None:
    assert set(CASES) == set(KINDS)
    assert all(isinstance(desc, str) and desc for desc in KINDS.values())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_kind_passes_and_fails(kind: str) -> None:
    args, good, bad = CASES[kind]
    assert check(kind, args, good) is True
    assert check(kind, args, bad) is False


def test_unknown_and_ifeval_kinds_are_none() -> None:
    assert check("keywords:existence", {"keywords": ["x"]}, "x") is None
    assert check("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "x") is None
    assert check("not_a_kind", {}, "x") is None


def test_unit_definitions() -> None:
    assert words("Don't split e-bikes, 3.5 'quoted'") == ["Don't", "split", "e", "bikes", "3", "5", "quoted"]
    assert paragraphs("a\n\n\nb\n***\nc\n  \n") == ["a", "b", "c"]
    assert sentences('He said "Stop." Then he left! Why?\n\nNew para') == [
        'He said "Stop.', "Then he left!", "Why?", "New para"]
    assert lines("a\n\n  b  \n") == ["a", "b"]


def test_range_bounds_are_inclusive_and_optional() -> None:
    assert check("word_count", {"min": 2, "max": 2}, "two words")
    assert check("word_count", {"min": 2}, "two words and more")
    assert not check("word_count", {"max": 1}, "two words")
    assert check("emoji_count", {"min": 1, "max": 1}, "flag \U0001F1EB\U0001F1F7")  # a flag counts once


def test_format_edge_cases() -> None:
    assert not check("yaml_format", {}, "Here is your config:\n\ntitle: x")
    assert check("markdown_table", {"columns": 2}, "| a | b |\n|:--|--:|\n| 1 | 2 |")
    assert not check("iso_dates", {}, "No dates here.")
    assert not check("csv_format", {}, "just one column\nno commas")


def _corpus() -> list[dict[str, Any]]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_corpus_shape() -> None:
    rows = _corpus()
    assert len(rows) >= 210
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for r in rows:
        assert set(r) == {"id", "prompt", "constraints", "group"}, r["id"]
        assert r["group"] in GROUPS, r["id"]
        for c in r["constraints"]:
            assert set(c) == {"sentence", "kind", "args", "ifeval"}, r["id"]
            assert c["sentence"] and c["sentence"] in r["prompt"], (r["id"], c["sentence"])
            assert isinstance(c["args"], dict), r["id"]
            if c["ifeval"]:
                assert ":" in c["kind"] and check(c["kind"], c["args"], "x") is None, r["id"]
            else:
                assert c["kind"] in KINDS, (r["id"], c["kind"])
                # every outside constraint is judgeable: the checker runs and gives a bool
                assert check(c["kind"], c["args"], r["prompt"]) in (True, False), (r["id"], c["kind"])


def test_corpus_groups_and_counts() -> None:
    rows = _corpus()
    groups = collections.Counter(r["group"] for r in rows)
    assert groups["ifeval_only"] >= 40
    assert groups["none"] >= 30
    assert groups["hard"] >= 10
    assert sum(any(not c["ifeval"] for c in r["constraints"]) for r in rows) >= 105
    for r in rows:
        flags = [c["ifeval"] for c in r["constraints"]]
        if r["group"] == "none":
            assert not flags, r["id"]
        elif r["group"] == "ifeval_only":
            assert flags and all(flags), r["id"]
        elif r["group"] == "outside":
            assert flags and not any(flags), r["id"]
        elif r["group"] == "mixed":
            assert any(flags) and not all(flags), r["id"]
    hard_sizes = [len(r["constraints"]) for r in rows if r["group"] == "hard"]
    assert max(hard_sizes) >= 90
