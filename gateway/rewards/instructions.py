"""Verifiable instructions: find the constraints a prompt states, and check a reply against them.

Each `Instruction` pairs a pattern that recognises the constraint in the prompt (IFEval-style
phrasing: "in at most 50 words", "exactly 3 bullet points", "end your response with 'Done.'")
with a check of the reply. The default scorer uses them, and so does the demo's prompt generator,
so the prompts it writes are exactly the ones the scorer can verify.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

# "a" is not a number: "use a bullet" or "in a sentence" states a format, not a count; "a single" is one.
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a single": 1,
}
_NUM = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten|a single)"
_QUOTED = r"[\"'“‘]([^\"'”’]+)[\"'”’]"


def parse_number(token: str) -> int:
    """A count as the prompt states it: "3", "three", "a single"."""
    return int(token) if token.isdigit() else NUMBER_WORDS[token.lower()]


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


_POSTSCRIPT = re.compile(r"(?:^|\s)P\.\s?S\.", flags=re.IGNORECASE)


def body(text: str) -> str:
    """The reply without its postscript: a "P.S. ..." is an addition, not one of the body's sentences."""
    match = _POSTSCRIPT.search(text)
    return text[:match.start()] if match else text


def sentences(text: str) -> list[str]:
    """Sentences of the reply's body (its postscript, if any, is not counted)."""
    return [s for s in re.split(r"(?<=[.!?])\s+", body(text).strip()) if words(s)]


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def bullets(text: str) -> list[str]:
    return re.findall(r"^\s*(?:[-*•]|\d+[.)])\s+\S", text, flags=re.MULTILINE)


def _strip_fences(text: str) -> str:
    match = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    return (match.group(1) if match else text).strip()


def _is_json(text: str) -> bool:
    try:
        json.loads(_strip_fences(text))
    except ValueError:
        return False
    return True


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE) is not None


@dataclass(frozen=True)
class Instruction:
    """One kind of checkable constraint."""

    id: str
    description: str
    pattern: re.Pattern[str]
    check: Callable[[str, re.Match[str]], bool]


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, flags=re.IGNORECASE)


INSTRUCTIONS: list[Instruction] = [
    Instruction(
        "max_words", "at most / no more than / fewer than N words",
        _rx(rf"(at most|no more than|fewer than|less than|under|up to|maximum of)\s+{_NUM}\s+words"),
        lambda t, m: len(words(t)) < parse_number(m[2]) if m[1].lower() in ("fewer than", "less than", "under")
        else len(words(t)) <= parse_number(m[2]),
    ),
    Instruction(
        "min_words", "at least N words",
        _rx(rf"at least\s+{_NUM}\s+words"),
        lambda t, m: len(words(t)) >= parse_number(m[1]),
    ),
    Instruction(
        "max_sentences", "at most N sentences",
        _rx(rf"(?:at most|no more than|up to)\s+{_NUM}\s+sentences?"),
        lambda t, m: 0 < len(sentences(t)) <= parse_number(m[1]),
    ),
    Instruction(
        "exact_sentences", "exactly N sentences / in N sentences",
        _rx(rf"(?:exactly|in|using|with)\s+{_NUM}\s+sentences?"),
        lambda t, m: len(sentences(t)) == parse_number(m[1]),
    ),
    Instruction(
        "bullets", "exactly N bullet points",
        _rx(rf"{_NUM}\s+bullet(?:\s+points|s)?\b"),
        lambda t, m: len(bullets(t)) == parse_number(m[1]),
    ),
    Instruction(
        "paragraphs", "exactly N paragraphs (blank-line separated)",
        _rx(rf"{_NUM}\s+paragraphs?"),
        lambda t, m: len(paragraphs(t)) == parse_number(m[1]),
    ),
    Instruction(
        "include_word", "include / mention / use the word 'X'",
        _rx(rf"(?<!not )(?<!n't )(?<!never )\b(?:include|mention|use|contain)s?\s+the\s+(?:word|keyword|term)\s+{_QUOTED}"),
        lambda t, m: _has_word(t, m[1]),
    ),
    Instruction(
        "forbid_word", "do not use / avoid / without the word 'X'",
        _rx(rf"(?:do not|don't|never|without|avoid)\s+(?:use |using |mention |mentioning |say |saying )?the\s+word\s+{_QUOTED}"),
        lambda t, m: not _has_word(t, m[1]),
    ),
    Instruction(
        "lowercase", "all lowercase letters",
        _rx(r"all lowercase|in lowercase|only lowercase|lowercase letters only|no capital letters"),
        lambda t, m: any(c.isalpha() for c in t) and t == t.lower(),
    ),
    Instruction(
        "uppercase", "all capital letters",
        _rx(r"all (?:capital letters|uppercase|caps)|in (?:all )?capital letters|in uppercase"),
        lambda t, m: any(c.isalpha() for c in t) and t == t.upper(),
    ),
    Instruction(
        "json", "the whole reply is valid JSON (code fences allowed)",
        _rx(r"\b(?:valid|in|as)\s+json\b|\bjson (?:object|format)\b"),
        lambda t, m: _is_json(t),
    ),
    Instruction(
        "end_phrase", "end the reply with the exact phrase 'X'",
        _rx(rf"end (?:your (?:response|answer|reply) )?with (?:the (?:exact )?(?:phrase|words?|sentence) )?{_QUOTED}"),
        lambda t, m: t.rstrip().endswith(m[1].strip()),
    ),
    Instruction(
        "start_phrase", "start the reply with 'X'",
        _rx(rf"(?:start|begin) (?:your (?:response|answer|reply) )?with (?:the (?:exact )?(?:phrase|words?) )?{_QUOTED}"),
        lambda t, m: t.lstrip().lower().startswith(m[1].strip().lower()),
    ),
    Instruction(
        "no_commas", "no commas anywhere",
        _rx(r"(?:without|do not use|don't use|no|avoid)\s+(?:any\s+)?commas"),
        lambda t, m: "," not in t,
    ),
    Instruction(
        "title", "a title wrapped in double angular brackets <<like this>>",
        _rx(r"title\b[^.]*<<"),
        lambda t, m: re.search(r"<<[^<>\n]+>>", t) is not None,
    ),
    Instruction(
        "postscript", "a postscript starting with P.S. (any case: \"p.s.\" satisfies it in an all-lowercase reply)",
        _rx(r"postscript|\bP\.S\."),
        lambda t, m: _POSTSCRIPT.search(t) is not None,
    ),
]


@dataclass(frozen=True)
class Constraint:
    """An instruction found in a specific prompt, ready to check replies against."""

    instruction: Instruction
    match: re.Match[str]

    def satisfied_by(self, text: str) -> bool:
        return bool(self.instruction.check(text, self.match))


def detect(prompt: str) -> list[Constraint]:
    """Every constraint stated in the prompt (each instruction at its first mention)."""
    found = []
    for instruction in INSTRUCTIONS:
        match = instruction.pattern.search(prompt)
        if match:
            found.append(Constraint(instruction, match))
    # "in at most 2 sentences" and "in 2 sentences" can both appear in a long prompt; the bound wins.
    ids = {c.instruction.id for c in found}
    if "max_sentences" in ids and "exact_sentences" in ids:
        found = [c for c in found if c.instruction.id != "exact_sentences"]
    return found


def repetition(text: str) -> float:
    """Share of repeated word trigrams, 0 (none) to ~1 (a loop): how degenerate the text is.
    Measured from three words on (a short loop such as "the the the the" counts); under three words
    there is no trigram and it is 0, so the scorer's `substance` factor is what keeps those from winning."""
    tokens = [w.lower() for w in words(text)]
    if len(tokens) < 3:
        return 0.0
    trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
    return 1.0 - len(set(trigrams)) / len(trigrams)
