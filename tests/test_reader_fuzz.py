"""The instruction reader on adversarial text: seeded random mixes of the words its patterns look
for, quotes, numbers, list markers and long runs of one character. It never raises, and its time
per kilobyte stays bounded as the text grows (a quadratic pattern took 370 ms per kB at 8 kB and
grew from there; linear reading takes 3 to 11 ms per kB here at 32 kB, whatever the mix)."""

from __future__ import annotations

import random
import time

import pytest

from gateway.rewards import default
from gateway.rewards.instructions import detect, warm_up

MS_PER_KB_BOUND = 60.0  # 5x the worst mix measured at 32 kB (11 ms per kB); before issue 25 one reached 110

FRAGMENTS = [
    "word", "words", "the word", "placeholder", "placeholders", "letter", "times", "twice", "bullet", "bullet points",
    "paragraph", "paragraphs", "section", "SECTION X", "Part 1", "highlight", "*highlighted*", "json", "JSON",
    "caps", "ALL CAPS", "lowercase", "comma", "commas", "P.S.", "p.s.", "end with", "repeat the request", "verbatim",
    "in English", "in French", "at least", "at most", "fewer than", "exactly", "about", "no", "not", "never", "do not",
    "you", "your answer", "should", "must", "include", "mention", "keyword", "<<title>>", "***", "******",
    "'a'", '"quoted phrase"', "“curly”", "‘single’", "`tick`", "«guillemets»", "'", '"', "“", "`",
    "1", "12", "1,000", "forty-two", "one hundred", "a dozen", "3.", "- ", "* ", "• ", "1) ", "[name]", "[",
    "?", "!", ";", ":", ".", ",", "\n", "\n\n", "  ",
]


def adversarial_text(seed: int, size: int) -> str:
    """About `size` characters: random fragments with random joins, and now and then a long run of
    one character (a letter, a digit, a quote, a dot, a space). Odd seeds never end a sentence or a
    line: one clause as long as the text, where an unbounded gap in a pattern costs most."""
    rng = random.Random(seed)
    run_on = seed % 2 == 1
    fragments = [f for f in FRAGMENTS if not run_on or not any(ch in f for ch in ".?!;\n")]
    joins = [" ", " ", ", ", ""] if run_on else ["", " ", " ", " ", "\n", ". ", ", "]
    parts, length = [], 0
    while length < size:
        if rng.random() < 0.02:
            part = rng.choice("a9'\"* -" if run_on else "a9'\".* -\n") * rng.randint(50, 2000)
        else:
            part = rng.choice(fragments) + rng.choice(joins)
        parts.append(part)
        length += len(part)
    return "".join(parts)[:size]


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    warm_up()


@pytest.mark.parametrize("seed", range(24))
def test_the_reader_is_linear_and_never_fails_on_adversarial_text(seed: int):
    text = adversarial_text(seed, 32_000)
    started = time.perf_counter()
    detect(text)
    ms_per_kb = (time.perf_counter() - started) * 1000 / 32
    assert ms_per_kb < MS_PER_KB_BOUND, f"seed {seed}: {ms_per_kb:.0f} ms per kB"


@pytest.mark.parametrize("kind", ["one character", "digits", "quotes", "dots", "list markers", "lines"])
def test_long_runs_are_read_in_linear_time(kind: str):
    run = {"one character": "a" * 16_000, "digits": "7" * 16_000, "quotes": "'\"" * 8_000, "dots": "." * 16_000,
           "list markers": "- 1. * " * 2_300, "lines": "x\n" * 8_000}[kind]
    started = time.perf_counter()
    detect("Use at most 40 words and the word 'x' twice. " + run)
    assert (time.perf_counter() - started) * 1000 / 16 < MS_PER_KB_BOUND


@pytest.mark.parametrize("seed", range(6))
def test_scoring_adversarial_candidates_never_fails(seed: int):
    prompt = adversarial_text(seed, 4_000) + "\nAnswer in at most 50 words, in English, and end with 'Done.'"
    candidates = [adversarial_text(seed + 100 + i, 36_000) for i in range(4)]
    started = time.perf_counter()
    scores = default.instruction_following(prompt, candidates)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert (time.perf_counter() - started) * 1000 / (4 + 4 * 36) < MS_PER_KB_BOUND
