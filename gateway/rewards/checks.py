"""Checking a reply against one instruction, with IFEval's own checkers where they fit.

The checkers are IFEval's, as the `if-verifiable` package ships them (Apache-2.0), called with
the instruction id and kwargs the prompt parser found. Two things are ours:
- relations: IFEval knows "less than" and "at least"; people also write "at most", "more than",
  "exactly", "about" and ranges, which are checked as one or two IFEval bounds ("exactly 3" is
  "at least 3" and "less than 4"; "about 100" is within 20 %; "between 100 and 150" is kwargs
  `relation: between`, the count and `upper`, "at least 100" and "less than 151");
- paragraphs separated by blank lines (`separator: blank line`), where the prompt does not ask for
  IFEval's *** dividers: IFEval's check splits on *** only; and the nth paragraph's first word
  where the prompt states no paragraph count (`num_paragraphs: None`);
- sentence counting: IFEval's needs NLTK's punkt data, which is a download; `text.sentences`
  splits on terminal punctuation and line breaks instead;
- languages IFEval's list leaves out (Dutch, Swedish, ...): the same langdetect check, called directly;
- kinds IFEval lacks (`tao:` ids): emoji and hashtag counts, the opening phrase, ending on a question.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from gateway.rewards.text import paragraphs, sentences

ABOUT = 0.2  # "about N" accepts N ± 20 %

# kwargs that carry a relation, and the count it applies to, per instruction id (the counted kinds)
RELATION_KWARGS = {
    "length_constraints:number_words": ("relation", "num_words"),
    "length_constraints:number_sentences": ("relation", "num_sentences"),
    "keywords:frequency": ("relation", "frequency"),
    "keywords:letter_frequency": ("let_relation", "let_frequency"),
    "change_case:capital_word_frequency": ("capital_relation", "capital_frequency"),
    "tao:emoji_count": ("relation", "count"),
    "tao:hashtag_count": ("relation", "count"),
}

# Emoji: pictographs, dingbats and symbols, flags (regional indicators), one code point each.
_EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF\U0001F1E6-\U0001F1FF\u2B50\u2B55\u2934\u2935\u3030\u303D]")
_HASHTAG = re.compile(r"(?<![\w&#])#[^\W\d_][\w]*")
_LEADING_MARKUP = " \t\n\"'“‘*#>_`"


def _own_checks() -> dict[str, Callable[[dict[str, Any], str], bool]]:
    """Kinds IFEval lacks, cheap to check exactly: the commonest outside kinds of the outside corpus."""
    return {
        "tao:emoji_count": lambda kw, text: within(len(_EMOJI.findall(text)), kw["relation"], kw["count"],
                                                   kw.get("upper")),
        "tao:hashtag_count": lambda kw, text: within(len(_HASHTAG.findall(text)), kw["relation"], kw["count"],
                                                     kw.get("upper")),
        "tao:starts_with": lambda kw, text: text.lstrip(_LEADING_MARKUP).lower().startswith(kw["phrase"].lower()),
        "tao:ends_with_question": lambda kw, text: text.rstrip(" \t\n\"'”’)*_").endswith("?"),
    }


OWN_CHECKS = _own_checks()


@functools.cache
def _registry() -> dict[str, Any]:
    import langdetect  # IFEval's language check; seeded, so the same reply always gets the same verdict
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    langdetect.DetectorFactory.seed = 0
    return dict(INSTRUCTION_DICT)


def warm_up() -> None:
    """Import IFEval's checkers and load langdetect's language profiles now (about a second), at a
    server's start, not on the first request that asks for a language."""
    import langdetect

    _registry()
    langdetect.detect("This sentence loads the language profiles.")


@functools.cache
def _ifeval_languages() -> frozenset[str]:
    from if_verifiable.ifeval.instructions import _LANGUAGES

    return frozenset(_LANGUAGES)


def _written_in(text: str, language: str) -> bool:
    """IFEval's language check (langdetect), for the languages its own list leaves out (Dutch, Swedish, ...)."""
    import langdetect

    _registry()  # seeds langdetect
    try:
        return langdetect.detect(text) == language
    except langdetect.LangDetectException:
        return False


def bounds(relation: str, count: int, upper: int | None = None) -> list[tuple[str, int]]:
    """A relation as IFEval bounds: ("at least", n) and/or ("less than", n). "between" is a range,
    `count` to `upper` inclusive ("between 100 and 150 words")."""
    if relation == "less than":
        return [("less than", count)]
    if relation == "at least":
        return [("at least", count)]
    if relation == "at most":
        return [("less than", count + 1)]
    if relation == "more than":
        return [("at least", count + 1)]
    if relation == "exactly":
        return [("at least", count), ("less than", count + 1)]
    if relation == "about":
        return [("at least", math.ceil(count * (1 - ABOUT))), ("less than", math.floor(count * (1 + ABOUT)) + 1)]
    if relation == "between" and upper is not None:
        return [("at least", count), ("less than", upper + 1)]
    raise ValueError(f"unknown relation {relation!r}")


def within(value: int, relation: str, count: int, upper: int | None = None) -> bool:
    return all(value >= n if kind == "at least" else value < n for kind, n in bounds(relation, count, upper))


def satisfied(instruction_id: str, kwargs: dict[str, Any], text: str) -> bool:
    """Does `text` follow the instruction? Raises KeyError for an id IFEval does not know."""
    if not text.strip():
        return False
    if instruction_id in OWN_CHECKS:
        return OWN_CHECKS[instruction_id](kwargs, text)
    if instruction_id == "length_constraints:number_paragraphs" and kwargs.get("separator") == "blank line":
        return len(paragraphs(text)) == kwargs["num_paragraphs"]
    if instruction_id == "length_constraints:nth_paragraph_first_word" and kwargs["num_paragraphs"] is None:
        return _nth_paragraph_starts(text, kwargs["nth_paragraph"], kwargs["first_word"])
    if instruction_id == "length_constraints:number_sentences":
        return within(len(sentences(text)), kwargs["relation"], kwargs["num_sentences"], kwargs.get("upper"))
    if instruction_id in RELATION_KWARGS:
        relation_key, count_key = RELATION_KWARGS[instruction_id]
        ifeval_kwargs = {k: v for k, v in kwargs.items() if k != "upper"}  # ours: IFEval's checkers refuse it
        return all(_ifeval(instruction_id, {**ifeval_kwargs, relation_key: kind, count_key: n}, text)
                   for kind, n in bounds(kwargs[relation_key], kwargs[count_key], kwargs.get("upper")))
    return _ifeval(instruction_id, kwargs, text)


def _nth_paragraph_starts(text: str, nth: int, word: str) -> bool:
    """IFEval's first-word test on the nth paragraph, where the prompt states no paragraph count
    (IFEval's own check also requires one exact count, which would be a guess)."""
    blocks = paragraphs(text)  # nth -1: the last one ("end with a paragraph starting ...")
    if not blocks or nth > len(blocks):
        return False
    first = blocks[nth - 1 if nth > 0 else -1].lstrip().split(maxsplit=1)
    return bool(first) and first[0].strip(".,;:!?\"'*#").lower() == word.lower()


def _ifeval(instruction_id: str, kwargs: dict[str, Any], text: str) -> bool:
    if instruction_id == "language:response_language" and kwargs["language"] not in _ifeval_languages():
        return _written_in(text, kwargs["language"])
    checker = _registry()[instruction_id](instruction_id)
    try:
        checker.build_description(**kwargs)
        return bool(checker.check_following(text))
    except Exception:  # noqa: BLE001 - a checker that cannot read the reply (e.g. language on digits) says no
        return False
