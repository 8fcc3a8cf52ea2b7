"""Text measures the scorers share: words, sentences, repetition, and numbers as people write them."""

from __future__ import annotations

import re

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_SPECIAL = {"a single": 1, "single": 1, "once": 1, "a couple of": 2, "a couple": 2, "a pair of": 2, "twice": 2,
            "thrice": 3, "a dozen": 12, "dozen": 12, "half a dozen": 6, "a hundred": 100, "hundred": 100}

# A count as people write it: 40, forty, forty-two, one hundred, two hundred and fifty, a dozen, twice.
_WORD_NUMBER = (r"(?:(?:a|one|two|three|four|five|six|seven|eight|nine)[\s-]+hundred(?:[\s-]+(?:and[\s-]+)?"
                r"(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[\s-]+(?:one|two|three|four|five|"
                r"six|seven|eight|nine))?|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|"
                r"nineteen|ten|one|two|three|four|five|six|seven|eight|nine))?"
                r"|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[\s-]+(?:one|two|three|four|five|"
                r"six|seven|eight|nine))?"
                r"|half a dozen|a dozen|a couple(?: of)?|a pair of|a single|single|twice|thrice|once|hundred"
                r"|zero|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|ten|one|two|three"
                r"|four|five|six|seven|eight|nine)")
NUMBER = rf"(\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d+|{_WORD_NUMBER})"  # "1,000" is one number; "3, 4" are two


def parse_number(token: str) -> int:
    """A count as the prompt states it: "3", "1,000", "three", "forty-two", "a dozen", "twice"."""
    token = token.strip().lower()
    if token[0].isdigit():
        return int(token.replace(",", ""))
    if token in _SPECIAL:
        return _SPECIAL[token]
    total = 0
    for part in re.split(r"[\s-]+", token):
        if part in ("and", "a"):
            total = max(total, 1) if part == "a" else total
        elif part == "hundred":
            total = max(total, 1) * 100
        elif part in _TENS:
            total += _TENS[part]
        elif part in _UNITS:
            total += _UNITS[part]
    return total


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


_POSTSCRIPT = re.compile(r"(?:^|\s)P\.\s?(?:P\.\s?)?S\.?(?=\s|:|$)", flags=re.IGNORECASE)


def body(text: str) -> str:
    """The reply without its postscript: a "P.S. ..." is an addition, not one of the body's sentences."""
    match = _POSTSCRIPT.search(text)
    return text[:match.start()] if match else text


def has_postscript(text: str, marker: str = "P.S.") -> bool:
    """A postscript opened with `marker` (any case: "p.s." counts in an all-lowercase reply)."""
    letters = [c for c in marker.upper() if c.isalpha()]
    pattern = r"\.?\s?".join(letters)
    return re.search(rf"(?:^|\s){pattern}\.?(?=\s|:|$)", text, flags=re.IGNORECASE) is not None


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines (a line of *** counts as one), empty ones left out."""
    return [p for p in re.split(r"\n\s*\n|^\s*\*\*\*\s*$", text, flags=re.M) if p.strip() and p.strip() != "***"]


def sentences(text: str) -> list[str]:
    """Sentences of the reply's body (its postscript, if any, is not counted)."""
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", body(text).strip()) if words(s)]


def repetition(text: str) -> float:
    """Share of repeated word trigrams, 0 (none) to ~1 (a loop): how degenerate the text is.
    Measured from three words on (a short loop such as "the the the the" counts); under three words
    there is no trigram and it is 0, so the scorer's `substance` factor is what keeps those from winning."""
    tokens = [w.lower() for w in words(text)]
    if len(tokens) < 3:
        return 0.0
    trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
    return 1.0 - len(set(trigrams)) / len(trigrams)
