"""Verifiable instructions: find what a prompt asks of the reply's form, as IFEval instructions.

`detect(prompt)` turns free prompt text (system message and every user turn) into
`Constraint`s: an IFEval instruction id with its kwargs ("in under fifty words" →
`length_constraints:number_words {relation: "less than", num_words: 50}`). Checking a reply is
IFEval's own code (`checks.py`); reading the phrasings people use is ours, and it is written
against a corpus of prompts written independently of it (`tests/data/instruction_prompts.jsonl`,
precision and recall per kind in the README).

How it reads: the prompt is cut into clauses (sentences, lines, list items); each kind has a
few patterns over a clause, with numbers as digits or words and relations in the words people
use ("under", "no more than", "at least", "roughly", "exactly", or none: "in 3 sentences").
Quoted text carries the arguments (keywords, end phrases). A clause that talks *about* a form
without asking for it ("What is a comma splice?") does not match, because every pattern needs
the reply as its object or an imperative around it.

All or nothing: a constraint the checkers cannot test whole is never read as a nearby kind they
can. A range is read as both bounds ("between 100 and 150 words"); a clause stating a relation
between parts of the reply ("each sentence longer than the one before"), a position ("the third
sentence must mention ..."), a count per part ("each bullet under ten words"), a count of a unit
no checker counts ("exactly 3 questions"), or a constraint in a language the patterns do not read,
gives no reading and is returned as unverifiable; so are two statements of one kind that no reply
can both meet ("at least 300 words" ... "under 50 words").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.rewards.checks import RELATION_KWARGS, bounds, satisfied
from gateway.rewards.stopping import check_stopped
from gateway.rewards.text import NUMBER, parse_number

# ---- patterns, compiled once ---------------------------------------------------------------------------
# The patterns are large (numbers in words, relations); compiling one takes 10-70 ms. They are compiled
# once per process and kept here, never evicted from `re`'s own bounded cache by other code, and
# `warm_up()` compiles them at startup rather than on a request's event loop. Every pattern runs through
# these wrappers, which first ask whether the scoring was given up (`check_stopped`): each run reads at
# most one clause (MAX_CLAUSE_CHARS) or one bounded prompt, so a stopped job ends within milliseconds.
@functools.cache
def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def _search(pattern: str, text: str, flags: int = 0) -> re.Match[str] | None:
    check_stopped()
    return _compiled(pattern, flags).search(text)


def _match(pattern: str, text: str, flags: int = 0) -> re.Match[str] | None:
    check_stopped()
    return _compiled(pattern, flags).match(text)


def _fullmatch(pattern: str, text: str, flags: int = 0) -> re.Match[str] | None:
    check_stopped()
    return _compiled(pattern, flags).fullmatch(text)


def _finditer(pattern: str, text: str, flags: int = 0):
    check_stopped()
    return _compiled(pattern, flags).finditer(text)


def _split(pattern: str, text: str, flags: int = 0) -> list[str]:
    check_stopped()
    return _compiled(pattern, flags).split(text)


def _sub(pattern: str, replacement: str, text: str, flags: int = 0) -> str:
    check_stopped()
    return _compiled(pattern, flags).sub(replacement, text)


# ---- vocabulary --------------------------------------------------------------------------------------
_REL = {
    "less than": r"less than|fewer than|under|below|shorter than|not (?:even )?reach(?:ing)?",
    "at most": r"at most|no more than|not more than|no longer than|not longer than|a maximum of|maximum of|max(?:imum)?"
               r"\.?|up to|not (?:to )?exceed(?:ing)?|(?:does|do|should|must|shall|will) not exceed|within|limit(?:ed)? "
               r"(?:it |yourself |your (?:answer|response|reply) )?to|capped at|no greater than",
    "at least": r"at least|no fewer than|no less than|not less than|not fewer than|a minimum of|minimum of|min\.?",
    "more than": r"more than|over|above|greater than|longer than|exceed(?:ing|s)?|in excess of",
    "exactly": r"exactly|precisely|just|only|strictly",
    "about": r"about|around|roughly|approximately|approx\.?|~|close to|somewhere around|in the neighbou?rhood of",
}
_REL_ANY = "|".join(f"(?:{v})" for v in _REL.values())
_AFTER = {"at most": r"or (?:less|fewer)|at most|max(?:imum)?|tops|or under", "at least": r"or more|at least|minimum|"
          r"or longer|plus"}

_QUOTE = r"[\"“”'‘’`«»]"
_QUOTED = r"(?:\"([^\"\n]{1,120})\"|“([^”\n]{1,120})”|‘([^’\n]{1,120})’|(?<![A-Za-z])'((?:[^'\n]|(?<=[A-Za-z])'(?=[A-Za-z])){1,120}?)'(?![A-Za-z])|`([^`\n]{1,120})`|«([^»\n]{1,120})»)"
_REPLY = r"(?:response|answer|reply|output|text|essay|email|e-mail|letter|story|poem|post|message|summary|description|" \
         r"explanation|article|note|review|paragraph|speech|pitch|report|blurb|piece|write-?up|story|list|it)"

LANGUAGES = {
    "english": "en", "spanish": "es", "french": "fr", "german": "de", "italian": "it", "portuguese": "pt",
    "dutch": "nl", "russian": "ru", "chinese": "zh", "mandarin": "zh", "japanese": "ja", "korean": "ko",
    "arabic": "ar", "hindi": "hi", "bengali": "bn", "urdu": "ur", "turkish": "tr", "polish": "pl", "swedish": "sv",
    "norwegian": "no", "danish": "da", "finnish": "fi", "greek": "el", "hebrew": "he", "thai": "th",
    "vietnamese": "vi", "indonesian": "id", "malay": "ms", "swahili": "sw", "persian": "fa", "farsi": "fa",
    "ukrainian": "uk", "czech": "cs", "romanian": "ro", "hungarian": "hu", "tamil": "ta", "telugu": "te",
    "marathi": "mr", "gujarati": "gu", "kannada": "kn", "punjabi": "pa", "nepali": "ne", "tagalog": "tl",
}


_LANGUAGE_NAMES = "|".join(LANGUAGES)

# Languages named in their own language ("Réponds en français"), for prompts written in them.
NATIVE_LANGUAGES = {"français": "fr", "francais": "fr", "español": "es", "espanol": "es", "castellano": "es",
                    "deutsch": "de", "italiano": "it", "português": "pt", "portugues": "pt", "nederlands": "nl"}


@dataclass(frozen=True)
class Constraint:
    """One instruction a prompt states: an IFEval instruction id and its arguments."""

    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The short name: "number_words" for "length_constraints:number_words"."""
        return self.id.split(":", 1)[1]

    def satisfied_by(self, text: str) -> bool:
        return satisfied(self.id, self.kwargs, text)


def _quoted(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _finditer(_QUOTED, text)]


MAX_CLAUSE_CHARS = 1000  # the longest clause of the three corpora is 904 characters


def _bounded(clause: str) -> list[str]:
    """A clause longer than MAX_CLAUSE_CHARS (pasted text without sentence breaks) as pieces of at
    most that, each cut at a space where there is one. Every pattern then reads a bounded text, so
    reading a prompt costs time linear in its length, whatever the patterns' own worst case."""
    if len(clause) <= MAX_CLAUSE_CHARS:
        return [clause]
    pieces, start = [], 0
    while start < len(clause):
        end = min(start + MAX_CLAUSE_CHARS, len(clause))
        if end < len(clause):
            space = clause.rfind(" ", start + MAX_CLAUSE_CHARS // 2, end)
            end = space + 1 if space > 0 else end
        pieces.append(clause[start:end])
        start = end
    return pieces


def _clauses(prompt: str) -> list[str]:
    """Sentences, lines and list items: the unit a pattern reads (quotes are kept whole), none
    longer than MAX_CLAUSE_CHARS."""
    parts = []
    for line in _split(r"\n+", prompt):
        line = _sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", line)
        parts += [piece for p in _split(r"(?<=[.!?;])\s+(?=[A-Z(\"“'])|(?<=[;?!])\s+", line) if p.strip()
                  for piece in _bounded(p)]
    return parts


def _relation(before: str | None, after: str | None, default: str = "exactly") -> str:
    for name in ("less than", "at most", "at least", "more than", "about", "exactly"):
        if before and _fullmatch(_REL[name], before.strip(), flags=re.IGNORECASE):
            return name
    for name, pattern in _AFTER.items():
        if after and _fullmatch(pattern, after.strip(), flags=re.IGNORECASE):
            return name
    return default


def _counted(clause: str, unit: str) -> tuple[str, int] | None:
    """(relation, count) for "<relation> <number> <unit>" in the clause ("under 50 words", "3 sentences or
    fewer", "a 100-word summary", "word count of at most 80")."""
    m = _search(rf"(?:({_REL_ANY})\s+)?(?:of\s+|the\s+)?{NUMBER}(?:\s*|-)(?:{unit})\b(?:\s+({_AFTER['at most']}|"
                  rf"{_AFTER['at least']})\b)?", clause, flags=re.IGNORECASE)
    if m:
        relation = _relation(m[1], m[3])
        if m[1] and _search(r"(?:n't|\bnot|\bnever)\s+(?:\w+\s+){0,3}$", clause[:m.start()], re.I):
            relation = {"more than": "at most", "less than": "at least"}.get(relation, relation)
        return relation, parse_number(m[2])
    m = _search(rf"(?:{unit.split('|')[0].rstrip('s?')}\s+(?:count|limit|length))\s*(?:of|is|should be|must be|under|"
                  rf"below|at|:)?\s*(?:({_REL_ANY})\s+)?{NUMBER}", clause, flags=re.IGNORECASE)
    if m:
        return _relation(m[1], None, "at most" if "limit" in m[0].lower() else "exactly"), parse_number(m[2])
    return None


_OWN_WORK = (r"\bmy\s+(?:[\w']+\s+)?(?:essay|paper|thesis|dissertation|assignment|article|report|book|draft|novel|story|"
             r"speech|chapter|manuscript|cover\s+letter|personal\s+statement|resume|cv|application)\b|"
             r"\b(?:posting|job\s+ad|listing|portal|counsell?or|coach)\s+(?:\w+\s+)?(?:says|said|states|told|requires)\b|\b(?:I|we)\s+(?:have|need|am\s+supposed|are\s+supposed)\s+to\s+(?:submit|"
             r"hand\s+in|turn\s+in)\b|\b(?:university|professor|teacher|supervisor|school|journal|publisher)\s+(?:\w+\s+)?"
             r"(?:has|says|said|wants|requires|set)\b|\b(?:my\s+)?(?:students?|pupils|kids|children|employees|staff|"
             r"class|boss|manager)\s+(?:must|have\s+to|has\s+to|need\s+to|should|wants?\s+every)\b")


def _addresses_the_reader(clause: str) -> bool:
    """"you"/"your": the clause speaks to the assistant, whatever else it mentions."""
    return _search(r"\byou(?:r)?\b", clause, re.I) is not None


def _about_own_work(clause: str) -> bool:
    """A rule for the user's own assignment ("my professor said we must not use 'very'"), not for the reply."""
    return _search(_OWN_WORK, clause, re.I) is not None and not _addresses_the_reader(clause)


def _is_about_the_reply(clause: str) -> bool:
    """Does the clause ask something of the reply (an imperative, "your …", "should/must …", or a
    requirement-list fragment such as "Exactly 3 sentences.")? Not when it is about the user's own text."""
    if _about_own_work(clause):
        return False
    if _match(rf"\s*(?:like\s+|maybe\s+|just\s+|keep\s+it\s+)?(?:{_REL_ANY}|{NUMBER})\b", clause, flags=re.IGNORECASE):
        return True
    return _search(rf"\b(?:your|you|please|make sure|ensure|must|should|need to|needs to|has to|have to|keep|write|"
                     rf"answer|respond|reply|use|give|provide|limit|format|wrap|put|enclose|include|end|finish|"
                     rf"conclude|start|begin|avoid|do not|don'?t|never|without|no|in|only|the {_REPLY}|answers|"
                     rf"responses|replies|outputs|aim|target|stick|stay|try|gimme|pls|plz|can you|could you|would you|"
                     rf"i need|i want|i'd like)\b",
                     clause, flags=re.IGNORECASE) is not None


# ---- one function per kind: clause → kwargs, or None --------------------------------------------------
def _number_words(c: str) -> dict | None:
    if "word" not in c.lower():  # a cheap test first: the counting patterns are costly on long clauses
        return None
    # "at least 2 words in ALL CAPS" counts capitalised words, not the reply's length
    c = _compiled(rf"(?:(?:{_REL_ANY})\s+)?{NUMBER}\s+(?:[\w-]+\s+)?words?\s+(?:(?:in|with|written\s+in)\s+)?"
                  r"(?:all[\s-]*caps|all\s+capital|capital|uppercase|upper-case|block\s+capitals)|(?:all[\s-]*caps|"
                  r"capitali[sz]ed|uppercase)\s+words", re.I).sub("", c)
    found = _counted(c, r"words?")
    if found and _is_about_the_reply(c) and not _search(r"\bwords? (?:like|such as)\b|letter words?", c, re.I):
        return {"relation": found[0], "num_words": found[1]}
    return None


def _number_sentences(c: str) -> dict | None:
    if "sentence" not in c.lower():
        return None
    found = _counted(c, r"sentences?|full sentences?|complete sentences?")
    if found and _is_about_the_reply(c) and not _search(r"\b(?:each|every|per)\s+(?!(?:reply|response|answer|message|"
                                                              r"time|summary|output|post|email|story|of\s+your|your)\b)|"
                                                              r"\b(?:object|field|key|column|entry)\b", c, re.I):
        return {"relation": found[0], "num_sentences": found[1]}
    return None


def _paragraph_count(c: str) -> int | None:
    if "paragraph" not in c.lower() and "***" not in c:
        return None
    m = _search(rf"{NUMBER}(?:\s+|-)(?:separate\s+|distinct\s+|short\s+)?paragraphs?", c, flags=re.IGNORECASE)
    if m is None and _search(r"\*\*\*|blank\s+lines?|empty\s+lines?|paragraphs", c, re.I):
        m = _search(rf"{NUMBER}(?:\s+|-)(?:separate\s+|distinct\s+|short\s+)?(?:stanzas?|verses?|parts|sections|blocks)",
                    c, flags=re.IGNORECASE)
    if m is None or (parse_number(m[1]) == 1 and not _search(r"\b(?:your|entire|whole|all)\b", c, re.I)):
        return None
    return parse_number(m[1])


_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "6th": 6, "last": -1}


def _nth_paragraph(prompt: str) -> dict | None:
    if not _search(r"paragraph|stanza", prompt, re.I):
        return None
    m = _search(r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|1st|2nd|3rd|4th|5th|6th|final|"
                  r"last)\s+(?:paragraph|stanza)\s+(?:must|should|has to|needs to|will|shall)?\s*(?:always\s+)?(?:start|begin|"
                  r"open)s?\s+with\s+"
                  r"(?:the\s+(?:word|term)\s+)?" + _QUOTED + r"|(?:start|begin|open)\s+(?:the\s+)?"
                  r"(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|1st|2nd|3rd|4th|5th|6th|final|"
                  r"last)\s+(?:paragraph|stanza|one)\s+with\s+(?:the\s+(?:word|term)\s+)?" + _QUOTED, prompt, flags=re.IGNORECASE)
    numbered = _search(r"\bparagraph\s+(\d|one|two|three|four|five|six)\s+(?:must|should|has to|needs to|will|shall)?\s*"
                       r"(?:always\s+)?(?:start|begin|open)s?\s+with\s+(?:the\s+(?:word|term)\s+)?" + _QUOTED, prompt, re.I)
    numbered = numbered or _search(r"\b(?:start|begin|open)\s+paragraph\s+(\d|one|two|three|four|five|six)\s+with\s+"
                                   r"(?:the\s+(?:word|term)\s+)?" + _QUOTED, prompt, re.I)
    numbered = numbered or _search(r"\bfirst\s+word\s+of\s+paragraph\s+(\d|one|two|three|four|five|six)\s+(?:must|should|"
                                   r"has to|needs to|will)\s+be\s+(?:the\s+word\s+)?" + _QUOTED, prompt, re.I)
    numbered = numbered or (_search(r"paragraph", prompt, re.I) and _search(
        r"\bthe\s+(first|second|third|fourth|fifth|sixth|last|final)\s+(?:one\s+|paragraph\s+)?(?:must|should|has to|"
        r"needs to|will)\s*(?:start|begin|open)s?\s+with\s+(?:(?:the\s+(?:word|term)\s+)?" + _QUOTED +
        r"|the\s+(?:word|term)\s+([A-Za-z][\w'-]*))", prompt, re.I))
    if numbered:
        count = next((n for n in map(_paragraph_count, _clauses(prompt)) if n), None)
        ordinal = numbered[1].lower()
        nth = (count or -1) if ordinal in ("last", "final") else _ORDINALS.get(ordinal) or parse_number(ordinal)
        word = next(g for g in numbered.groups()[1:] if g)
        return {"num_paragraphs": count, "nth_paragraph": nth, "first_word": word.strip().strip(".,").split()[0]}
    if not m:
        m2 = _search(r"first\s+word\s+of\s+the\s+(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|1st|"
                       r"2nd|3rd|4th|5th|6th|final|last)\s+paragraph\s+(?:should|must|has to|needs to|will)\s+be\s+"
                       r"(?:the\s+word\s+)?" + _QUOTED, prompt, flags=re.IGNORECASE)
        if not m2:
            return None
        groups = (m2[1], *m2.groups()[1:], None, *([None] * 6))
    else:
        groups = m.groups()
    count = next((n for n in map(_paragraph_count, _clauses(prompt)) if n), None)
    ordinal = (groups[0] or groups[7]).lower()
    nth = (count or -1) if ordinal in ("final", "last") else _ORDINALS[ordinal]
    word = next(g for g in groups[1:7] + groups[8:] if g)
    return {"num_paragraphs": count, "nth_paragraph": nth, "first_word": word.strip().strip(".,").split()[0]}


def _number_paragraphs(c: str) -> dict | None:
    count = _paragraph_count(c)
    if count and _is_about_the_reply(c) and not _search(r"(?<!between )\b(?:each|every|per) paragraph|"
                                                             r"paragraphs? (?:below|above)", c, re.I):
        return {"num_paragraphs": count}
    return None


def _bullets(c: str) -> dict | None:
    if "bullet" not in c.lower():
        return None
    m = _search(rf"(?:({_REL_ANY})\s+)?{NUMBER}\s+(?:markdown\s+|short\s+|separate\s+|distinct\s+)?"
                  r"(?:bullet(?:ed)?[\s-]*points?|bullets|bullet[\s-]*list\s+items|bulleted\s+items|list\s+items\s+"
                  r"(?:as|in|with)\s+bullet)", c, flags=re.IGNORECASE)
    m = m or _search(rf"bullet(?:ed|[\s-]point)?\s+list\s+(?:of|with|containing)\s+(?:({_REL_ANY})\s+)?{NUMBER}\s+"
                       r"(?:items|points|entries|bullets)", c, flags=re.IGNORECASE)
    m = m or _search(rf"{NUMBER}\s+(?:items|points|entries|reasons|tips|ideas|steps)\b[^.]{{0,200}}\bbullet", c, re.I) and \
        _search(rf"()({NUMBER[1:-1]})\s+(?:items|points|entries|reasons|tips|ideas|steps)", c, re.I)
    m = m or _search(rf"()(?<![\w-]){NUMBER}\s+(?:[\w-]+\s+){{0,2}}?[\w-]+s\b[^.]{{0,200}}?\b(?:one|each)\s+(?:per|as\s+a|"
                     r"in\s+(?:a|its\s+own)|on\s+(?:a|its\s+own))\s+(?:markdown\s+)?bullet", c, re.I)
    if m:
        return {"num_bullets": parse_number(m[2])}
    return None


def _highlights(c: str) -> dict | None:
    verb = _search(r"(?<!be )(?<!are )highlight(?!s\b)|emphasi[sz]e|itali(?:ci[sz]e|cs)", c, re.I) or \
        _search(r"(?<!the )(?<!key )(?<!main )highlights\b", c, re.I)
    if not verb or not _search(r"markdown|\*[^*\s][^*]{0,200}\*|section|part", c, re.I):
        return None
    m = _search(rf"(?:({_REL_ANY})\s+)?{NUMBER}\s+(?:\w+\s+)?(?:sections?|parts?|phrases?|portions?)", c, re.I)
    m2 = _search(rf"highlight(?:s|ed)?\s+(?:({_REL_ANY})\s+)?{NUMBER}", c, re.I)
    count = parse_number((m2 or m)[2]) if (m or m2) else 1
    return {"num_highlights": count}


def _sections(prompt: str) -> dict | None:
    """"N sections" in one clause, and how each is marked ("SECTION X", "Part 1") anywhere in the prompt."""
    marker = _search(rf"(?i:with|using|as|by|label(?:l?ed)?|mark(?:ed)?|begin(?:ning|s)?|start(?:ing|s)?|titled?|"
                       rf"heading|header|called|named)\s+(?i:them\s+|each(?:\s+(?:one|section|part|chapter|day|step|"
                       rf"week|module|lesson))?\s+|every\s+\w+\s+)?(?i:with\s+|as\s+)?(?i:the\s+)?(?i:word\s+|label\s+|"
                       rf"text\s+|marker\s+|heading\s+)?{_QUOTE}?([A-Z][a-z]+|[A-Z]+|section|part)\s+(?:X|N|\d|\[|\{{|<|#)", prompt)
    if not marker:
        return None
    named = _search(r"\beach\s+(\w+?)s?\s+(?:with|as|by)\b", prompt[max(0, marker.start() - 60):marker.end()], re.I)
    unit = rf"sections|parts|chapters|segments|{re.escape(marker[1].lower())}s?" + \
        (rf"|{re.escape(named[1].lower())}s?" if named else "")
    numbering = rf"\b{re.escape(marker[1])}\s+(?:\d+|[XN])\b"
    count = next((m for m in (_search(rf"(?<!highlight )(?<!least ){NUMBER}(?:\s+|-)(?:\w+\s+)?(?:{unit})\b",
                                      _sub(numbering, "", c), re.I) for c in _clauses(prompt)) if m), None)
    if not count:
        return None
    return {"section_spliter": marker[1] if marker[1][0].isupper() else marker[1].capitalize(),
            "num_sections": parse_number(count[1])}


def _title(c: str) -> dict | None:
    if _search(r"title(?:d|\s+(?:is|was))\s*:?\s*<<", c, re.I) or _about_own_work(c):
        return None
    if _search(r"<<[^<>]{0,200}>>|double\s+angul?ar\s+brackets|double\s+angle\s+brackets|<<\s*>>", c, re.I):
        return {}
    return None


def _json(c: str) -> dict | None:
    if not _search(r"\bjson\b", c, re.I):
        return None
    if _search(r"\b(?:api|server|endpoint|service|backend)\s+(?:returns?|sends?|responds\s+with)\s+json|\b(?:write|"
               r"create|implement)\w*\s+(?:a|an|the)\s+(?:\w+\s+)?(?:function|method|class|script)\b[^.]{0,200}\bjson\b|"
               r"\bjson\s+string", c, re.I) and not _addresses_the_reader(c):
        return None  # what a system returns, not the reply's format
    if _search(r"\b(?:this|the following|the below|below|attached|my|the given|these|that|a)\s+json\b(?!\s+"
                 r"(?:format|object|block|output|only))|json\s+(?:schema|file|data|payload)s?\b(?! format)|what is json|"
                 r"\bjson\s+(?:vs|versus)|parse|serializ", c, re.I) and not _search(
                     r"(?:wrap|format|output|respond|reply|answer|return|provide|give|write)\w*\b[^.]{0,200}\bjson", c, re.I):
        return None
    if _search(rf"(?:entire|whole|full|complete)\s+(?:{_REPLY})|(?:wrap|format|output|respond|reply|answer|return|"
                 rf"provide|give|write|present|structure|express|put)\w*\b[^.]{{0,60}}\bjson|\bjson\s+(?:format|"
                 rf"object|only|block)|valid\s+json|in\s+json\b|as\s+json\b|json[- ]formatted", c, re.I):
        return {}
    return None


def _constrained_response(c: str) -> dict | None:
    if _search(r"my answer is (?:yes|no|maybe)", c, re.I):
        return {}
    return None


def _reported_form(c: str) -> bool:
    """A form someone else uses ("she texted 'k.' in lowercase", "stored in all caps"), not one asked of the reply."""
    return _search(r"\b(?:said|speaks|spoke|stored|texted|typed)\b", c, re.I) is not None and not _addresses_the_reader(c)


def _lowercase(c: str) -> dict | None:
    if _reported_form(c):
        return None
    if _search(r"convert|lowercas(?:es|ed|ing)\b|lowercase\s+(?:letter|character)s?\s+(?:in|of)\s+(?:a|the|this)|(?:is|are)\s+lowercase\b|"
                 r"function|string|variable|lowercase\s+or\s+uppercase|case[- ]sensitiv", c, re.I):
        return None
    if _search(r"lower[\s-]?case|small letters|no (?:capital|uppercase|upper-case) letters|(?:without|avoid|do not use|"
                 r"don't use|never use|no)\s+(?:any\s+)?(?:capital(?:ized)?|uppercase|upper-case)\s+letters|"
                 r"(?:zero|no) capitali[sz]ation|(?:do not|don't|never) capitali[sz]e", c, re.I):
        return {}
    return None


def _capital_frequency(c: str) -> dict | None:
    if not _search(r"(?:all[\s-]+cap(?:ital)?s?|all[\s-]+capital\s+letters|uppercase|upper-case|capitali[sz]ed|"
                     r"in\s+caps|block\s+capitals|fully\s+capitali[sz]ed|entirely\s+in\s+capital)", c, re.I):
        return None
    caps = (r"(?:all[\s-]*caps|all[\s-]+capital(?:\s+letters)?|capital\s+letters|uppercase|upper-case|block\s+capitals|"
            r"(?:fully\s+)?capitali[sz]ed|all-capital|(?:entirely\s+)?in\s+capitals)")
    # the count must be tied to the capitalised words, not to the reply's length ("in all caps, at least 120 words")
    m = _search(rf"(?:({_REL_ANY})\s+)?{NUMBER}\s+(?:[\w-]+\s+){{0,2}}?(?:words|times|occurrences|instances)\s+"
                rf"(?:(?:in|with|using|written\s+in)\s+)?{caps}", c, re.I)
    m = m or _search(rf"(?:({_REL_ANY})\s+)?{NUMBER}\s+(?:[\w-]+\s+)?{caps}\s+words", c, re.I)
    m = m or _search(rf"(?:{caps}\s+words?|words?\s+(?:(?:in|with|written)\s+)?(?:entirely\s+)?{caps})[^.]{{0,200}}?(?:({_REL_ANY})\s+)?"
                     rf"{NUMBER}(?!\s+(?:words|sentences|paragraphs))", c, re.I)
    if not m:
        return None
    return {"capital_relation": _relation(m[1], None, "at least"), "capital_frequency": parse_number(m[2])}


def _uppercase(c: str) -> dict | None:
    if _reported_form(c):
        return None
    if _search(r"\b(?:my|his|her|their|our)\s+\w+\s+(?:writes|types|uses|sends|speaks)\b|convert|function|string|variable|acronym|(?:never|not|n't|avoid)\s+(?:\w+\s+){0,3}(?:in\s+)?all[\s-]*caps",
                 c, re.I):
        return None
    if _search(r"(?:all|only|entirely|completely|exclusively|fully)\s+(?:in\s+)?(?:english\s+)?(?:capital\s+letters|"
                 r"capitals|caps|uppercase|upper-case|upper\s+case|block\s+capitals)|in\s+(?:english\s+)?(?:capital\s+"
                 r"letters|uppercase|upper-case|upper\s+case|block\s+capitals|all[\s-]caps|caps)\b|all[\s-]caps|"
                 r"(?:capital|uppercase)\s+letters\s+only|every\s+(?:single\s+)?letter\s+(?:(?:of|in)\s+(?:your|the)\s+\w+\s+)?"
                 r"(?:should|must|has\s+to|needs\s+to)\s+be\s+(?:in\s+)?(?:capital|uppercase|upper-case|caps)|"
                 r"capitali[sz]e\s+every\s+(?:letter|word\s+and\s+letter)",
                 c, re.I):
        return {}
    return None


def _end_phrase(c: str) -> dict | None:
    if _about_own_work(c):
        return None
    m = _search(r"(?:end|finish|conclude|close|wrap up|sign off|terminate)\w*\s+(?:off\s+)?(?:(?:it|them|things)\s+|(?:all\s+)?(?:your|"
                  r"the|this|each|every)\s+(?:entire\s+|whole\s+)?\w+(?:\s+\w+)?\s+)?(?:with|by\s+(?:saying|writing))\s+(?:the\s+|this\s+"
                  r"|these\s+)?(?:exact\s+|precise\s+|following\s+|same\s+|exactly\s+|precisely\s+)?(?:phrase|sentence|words?|line|question|"
                  r"statement|text|sign-?off|signoff|tagline|catchphrase|slogan|signature|motto|closing(?:\s+line)?|"
                  r"greeting)?\s*(?:of\s+)?:?\s*" + _QUOTED, c, re.I)
    m = m or _search(r"(?:very\s+)?end\s+of\s+(?:your|the)\s+\w+\s+(?:should|must|has to|needs to|will)\s+(?:read|be)\s*:?\s*"
                     + _QUOTED, c, re.I)
    m = m or _search(r"(?:last|final|closing)\s+(?:line|sentence|words?|phrase)\s+(?:of\s+(?:your|the)\s+\w+\s+)?"
                       r"(?:should|must|has to|needs to|will)\s+(?:be|read)\s*:?\s*(?:exactly\s+)?" + _QUOTED, c, re.I)
    m = m or _search(_QUOTED + r"\s+(?:should|must)\s+be\s+the\s+(?:very\s+)?(?:last|final)\s+(?:words?|phrase|line|"
                       r"sentence|thing)", c, re.I)
    m = m or _search(r"(?:last|final|closing)\s+(?:line|sentence|words?|phrase)\s+(?:of\s+(?:your|the)\s+\w+\s+)?"
                       r"(?:should|must|has to|needs to|will)\s+(?:be|read)\s*:\s*(.+?)\s*$", c, re.I)
    m = m or _search(r"(?:end|finish|conclude|close|sign\s+off)\w*\s+(?:it|(?:your|the)\s+\w+)\s+with\s+([#@][\w-]+)", c, re.I)
    if not m:
        return None
    phrase = next(g for g in m.groups() if g is not None).strip()
    return {"end_phrase": phrase}


def _quotation(c: str) -> dict | None:
    if _search(r"\b(?:function|method|regex|snippet)\b|\bwrite\s+(?:a|an)\s+\w+\s+(?:script|program)\b", c, re.I):
        return None
    if _search(r"(?:wrap|enclose|put|surround|place|contain|present)\w*\s+[^.]{0,60}(?:in|with|inside|within|"
                 r"between)\s+(?:a\s+(?:pair|set)\s+of\s+)?double\s+(?:quotation\s+marks|quotes|quote\s+marks)|"
                 r"(?:entire|whole|full)\s+(?:\w+\s+)?(?:should|must)\s+be\s+(?:in|inside|wrapped in|enclosed in)\s+"
                 r"double\s+(?:quotation\s+marks|quotes)|double\s+quotation\s+marks\s+(?:around|wrapping)\s+"
                 r"(?:your|the)\s+(?:entire|whole)", c, re.I):
        return {}
    return None


def _no_comma(c: str) -> dict | None:
    if _search(r"(?:without|avoid|no|never|zero|not\s+(?:a\s+single|any|one)|don'?t\s+(?:use|include|put)|"
                 r"leave\s+out|omit|skip|drop|"
                 r"do\s+not\s+(?:use|include|put)|refrain\s+from\s+(?:using\s+)?|free\s+of|(?:is|are)\s+not\s+allowed)"
                 r"[^.]{0,25}\bcommas?\b|\bcommas?\b[^.]{0,30}(?:not\s+allowed|forbidden|prohibited|banned|"
                 r"off[\s-]limits|not\s+permitted|disallowed|(?:should|must|may|can)\s+not|mustn't|shouldn't|are\s+out)|"
                 r"comma[\s-]free|\bno[\s-]comma|keine\s+kommas?|ohne\s+(?:\w+\s+)?kommas?|sans\s+[^.]{0,30}virgules?|"
                 r"aucune\s+virgule|sin\s+(?:usar\s+|utilizar\s+|ninguna\s+)?comas?\b|ninguna\s+coma", c, re.I) and \
            not _search(r"\bregex|regular\s+expression|\bfunction\b|\bstrings\b", c, re.I) and not _search(r"comma\s+splice|oxford\s+comma\s+(?:is|rule)|what\s+is\s+a\s+"
                                                                r"comma|comma-separated|csv", c, re.I):
        return {}
    return None


def _letter_frequency(c: str) -> dict | None:
    if "letter" not in c.lower() or _search(r"\b(?:novel|book|poem|story|text)\b[^.]{0,200}\bwritten\s+without", c, re.I):
        return None
    none = _search(rf"(?:never|don't|do not|avoid|without|not)\s+(?:\w+\s+){{0,2}}?(?:the\s+)?letter\s+{_QUOTE}?([A-Za-z])"
                     rf"{_QUOTE}?(?!\w)", c, re.I)
    if none:
        return {"letter": none[1].lower(), "let_relation": "less than", "let_frequency": 1}
    m = _search(rf"letter\s+{_QUOTE}?([A-Za-z]){_QUOTE}?\s+[^.]{{0,200}}?(?:({_REL_ANY})\s+)?{NUMBER}(?:\s+times|(?<=twice)|"
                rf"(?<=once)|(?<=thrice))", c, re.I)
    m = m or _search(rf"(?:({_REL_ANY})\s+)?{NUMBER}\s+(?:times|instances|occurrences|uses)[^.]{{0,200}}?letter\s+{_QUOTE}?"
                     rf"([A-Za-z]){_QUOTE}?\b", c, re.I)
    if not m:
        return None
    g = m.groups()
    letter, relation, count = (g[0], g[1], g[2]) if len(g[0] or "") == 1 and g[0].isalpha() and m.re.pattern.startswith(
        "letter") else (g[2], g[0], g[1])
    return {"letter": letter.lower(), "let_relation": _relation(relation, None, "at least"),
            "let_frequency": parse_number(count)}


def _frequency(c: str) -> dict | None:
    if not _search(r"times?\b|twice|thrice|once", c, re.I):
        return None
    bare = _search(rf"\bthe\s+(?:key)?(?:word|term|name)\s+([A-Za-z][\w-]*)\s+(?:(?:should|must|has\s+to|needs\s+to|will|to)\s+)?"
                   rf"(?:appears?|occurs?|be\s+(?:used|mentioned|repeated))?\s*(?:for\s+)?(?:({_REL_ANY})\s+)?"
                   rf"(\d+|{NUMBER[1:-1]})(?:\s+times?\b|(?<=twice)|(?<=thrice)|(?<=once))", c, re.I)
    if bare:
        return {"keyword": bare[1], "relation": _relation(bare[2], None, "exactly"), "frequency": parse_number(bare[3])}
    m = _search(_QUOTED + rf"\s+(?:is|be|gets?|should\s+be|must\s+be)\s+(?:repeated|used|mentioned|said)\s+"
                rf"(?:({_REL_ANY})\s+)?({NUMBER[1:-1]})\s*(?:times)?", c, re.I)
    if m and _search(r"times|twice|thrice|once", m[0], re.I):
        keyword = next(x for x in m.groups()[:6] if x)
        return {"keyword": keyword, "relation": _relation(m[7], None), "frequency": parse_number(m[8])}
    m = _search(rf"(?:word|keyword|term)\s+{_QUOTED}\s+[^.]{{0,200}}?(?:appear|occur|use|used|mention|repeat|include|be used|shows?\s+up|"
                  rf"turns?\s+up|crops?\s+up)\w*\s+[^.]{{0,200}}?(?:({_REL_ANY})\s+)?({NUMBER[1:-1]})\s*(?:times)?|(?:use|mention|repeat|include|say|contain)\w*"
                  rf"\s+(?:the\s+(?:[\w-]+\s+){{0,2}}?(?:word|keyword|term|name|phrase)\s+)?{_QUOTED}\s+(?:for\s+)?(?:({_REL_ANY})\s+)?"
                  rf"({NUMBER[1:-1]})(?:\s+times)?"
                  rf"(?:\s+({_AFTER['at least']}|{_AFTER['at most']}))?", c, re.I)
    if not m:
        return None
    g = m.groups()
    if g[0] is not None or any(g[1:6]):
        keyword = next(x for x in g[0:6] if x)
        relation, count, after = g[6], g[7], None
    else:
        keyword = next(x for x in g[8:14] if x)
        relation, count, after = g[14], g[15], g[16]
    if count is None or (not _search(r"times|twice|thrice|once", m[0], re.I)):
        return None
    return {"keyword": keyword, "relation": _relation(relation, after, "exactly" if relation is None and after is None
                                                      else "at least"), "frequency": parse_number(count)}


# never a keyword named without quotes ("use only words of six letters" asks nothing of the word "of")
_FUNCTION_WORDS = {"in", "the", "of", "to", "for", "with", "from", "that", "than", "and", "or", "a", "an", "only", "at",
                   "on", "by", "no", "not", "as", "like", "such", "which", "this", "these", "those"}


def _existence(c: str) -> dict | None:
    if _search(r"(?:do not|don't|never|avoid|without|not)\s+(?:\w+\s+){0,3}(?:the\s+)?(?:key)?(?:words?|terms?)|"
                 r"(?:must|should|may|can|does|do|will)\s*(?:not|n't)\s+(?:appear|be\s+(?:used|included|mentioned))",
                 c, re.I):
        return None
    trigger = _search(r"(?:includ|incorporat|mention|us(?=e|ing)|contain|featur|work in|weave in)\w*\s+(?:\w+\s+){0,3}?"
                        r"(?:the\s+|these\s+|following\s+|both\s+)*(?:key)?(?:words?|terms?|phrases?)\b|"
                        r"(?:(?:key)?words?|phrases?|terms?)\s+(?:like\s+)?" + _QUOTED + r"[^.]{0,200}?(?:(?:should|must|need to|has to|have to|"
                        r"will)\s+(?:\w+\s+)?)?(?:appears?|be\s+(?:included|used|mentioned|present)|shows?\s+up|"
                        r"(?:is|gets?)\s+(?:included|used|mentioned))|make sure\s+(?:to\s+)?"
                        r"(?:include|mention|use)|\bwith\s+the\s+(?:key)?(?:words?|terms?|phrases?)\s+" + _QUOTED +
                        r"\s+(?:in\s+it|included|somewhere|in\s+there)|"
                        r"(?:be\s+sure|make\s+sure|ensure)\s+" + _QUOTED + r"\s+(?:is|appears?|shows?\s+up)|"
                        r"(?:be\s+sure|make\s+sure|ensure|check)\s+(?:that\s+)?(?:it|you|the\s+\w+|your\s+\w+)\s+"
                        r"(?:includes?|mentions?|uses?|contains?)\s+" + _QUOTED + r"|"
                        r"(?:^|please\s+|and\s+|also\s+|,\s*|to\s+)(?<!when to )(?<!how to )"
                        r"(?:include|incorporate|mention|use)\s+" + _QUOTED, c, re.I)
    if trigger and _search(r"caps|capital|upper|lower", trigger[0], re.I):
        rest = c[trigger.end():]
        nxt = _existence(rest) if rest.strip() else None
        return nxt if nxt is not None else _unquoted_keywords(c)
    if not trigger:
        return _unquoted_keywords(c)
    # the words asked for, up to a refusal that follows ("include 'Olympus', and don't mention 'Zeus'")
    asked = _split(r"\b(?:but|and)?\s*(?:don'?t|do\s+not|never|avoid|without)\b|\b(?:end|finish|conclude|close)\w*\s+"
                   r"(?:\w+\s+){0,3}?with\b", c[trigger.start():], re.I)[0]
    keywords = _quoted(asked)
    if not keywords:
        m = _search(r"(?:key)?(?:words?|terms?)\s*:?\s+([A-Za-z][\w-]*(?:(?:,\s*|\s+and\s+|,\s*and\s+)[A-Za-z][\w-]*)*)",
                      asked, re.I)
        if not m:
            return _unquoted_keywords(c)
        keywords = [k for k in _split(r",\s*(?:and\s+)?|\s+and\s+", m[1]) if k and k.lower() not in _FUNCTION_WORDS]
    if _search(r"times|twice|thrice|once", c[trigger.start():], re.I) and len(keywords) == 1:
        return None  # a frequency, not just presence
    # a keyword with its own count ("mention 'AI' at most once") is a frequency, not presence
    keywords = [k for k in keywords if not _search(
        rf"{re.escape(k)}{_QUOTE}?\s+(?:[\w']+\s+){{0,3}}?(?:(?:{_REL_ANY})\s+)?(?:once|twice|thrice|{_N}\s+times?)\b", c, re.I)]
    return {"keywords": keywords} if keywords else None


_WORD_LIST = r"[A-Za-z][\w-]*(?:(?:,\s*|\s+(?:and|or)\s+|,\s*(?:and|or)\s+)[A-Za-z][\w-]*)"  # then * or +

_NOT_A_KEYWORD = r"(?:the|a|an|my|your|our|their|his|her|its|some|any|each|every|all|how|what|why|when|where|who|which|" \
                 r"that|this|these|those|it|them|me|us|you|whether|if|one|more|other|specific|relevant)\b"


def _unquoted_keywords(c: str) -> dict | None:
    """Keywords named without quotes: "must explicitly mention both Python and SQL", "be sure to mention
    drainage somewhere", "the word beekeeping has to appear". Only after "mention"/"reference" (not
    "include": "include examples" asks for content, not a word), and never a phrase that starts
    like a description ("mention the risks", "mention how …")."""
    m = _search(r"(?:must|should|has\s+to|have\s+to|needs?\s+to|be\s+sure\s+to|make\s+sure\s+(?:to|you)|remember\s+to|"
                r"don'?t\s+forget\s+to|please)\s+(?:also\s+|explicitly\s+|specifically\s+)?(?:mention|reference|name-?drop)"
                r"\s+(?:both\s+)?(?!" + _NOT_A_KEYWORD + r")([A-Za-z][\w-]*(?:\s+(?!and\b)[A-Za-z][\w-]*){0,2}?"
                r"(?:\s+and\s+(?!" + _NOT_A_KEYWORD + r")[A-Za-z][\w-]*(?:\s+[A-Za-z][\w-]*)?)?)"
                r"(?=\s*(?:[,.;!]|$|\s+(?:since|because|as\s+|somewhere|at\s+least\s+once|in\s+(?:it|there|the|your)|"
                r"so\b|too\b)))", c, re.I)
    m = m or _search(r"\bthe\s+(?:key)?(?:word|term)\s+([A-Za-z][\w-]*)\s+(?:has\s+to|must|should|needs\s+to)\s+"
                     r"(?:appear|be\s+(?:included|used|mentioned|present))", c, re.I)
    if not m or _search(r"(?:n't|\bnot|\bnever|\bno)\s+(?:\w+\s+){0,2}(?:mention|reference)", c[:m.end()], re.I):
        return None
    keywords = [k for k in _split(r"\s+and\s+", m[1]) if k]
    return {"keywords": keywords} if keywords else None


def _forbidden(c: str) -> dict | None:
    if _about_own_work(c):
        return None
    trigger = _search(r"(?:do not|don't|never|avoid|without|refrain from|no|skip|leave out|omit|exclude|(?:should|must|shall|"
                      r"will)\s+not|shouldn't|mustn't)\s+(?:\w+\s+){0,3}?(?:the\s+|these\s+|"
                        r"following\s+|any\s+of\s+the(?:se)?\s+)*(?:key)?(?:words?|terms?)\b|(?:words?|terms?)\s+"
                        r"[^.]{0,200}?(?:(?:should|must|may|can)\s*(?:not|n't)\s+(?:appear|be\s+used|be\s+mentioned|"
                        r"be\s+included)|(?:are|is)\s+(?:forbidden|banned|not\s+allowed|off[\s-]limits|prohibited))"
                        r"|(?:do not|don'?t|never|avoid|without|(?:may|must|should|can)\s*(?:not|n't))\s+(?:say|use|write|"
                        r"mention|include)\w*\s+(?:the\s+(?!(?:letter|character|symbol|digit)s?\b)(?:[\w-]+\s+){0,2}?)?" +
                        _QUOTED +
                        r"|(?:rather|prefer)\s+(?:\w+\s+)?not\s+(?:say|use|write|mention|include)\w*\s+(?:the\s+)?(?:key)?"
                        r"(?:words?|terms?)" +
                        r"|\bno\s+(?:uses?|utilices|digas|escribas|menciones)\s+(?:la|las|el|los)?\s*palabras?|"
                        r"\bsin\s+(?:usar|decir|mencionar)\s+(?:la|las)?\s*palabras?|n['’](?:utilise|emploie)[sz]?\s+pas\s+"
                        r"(?:le|les)\s+mots?|\bsans\s+(?:utiliser|dire|employer)\s+(?:le|les)\s+mots?|"
                        r"\bohne\s+(?:das|die)\s+W(?:ort|örter)|verwende\w*\s+(?:nicht|kein\w*)\s+(?:das\s+)?W(?:ort|örter)",
                        c, re.I)
    if not trigger or _search(NUMBER + r"\s+(?:key)?(?:words?|terms?)\b", trigger[0], re.I) or \
            _search(r"\bany\s+words\s+(?:or\s+characters|before)", c, re.I):
        return None  # "no more than thirty words" is a length; "say no words before…" is repeat_prompt's rule
    words_ = _quoted(c[max(0, trigger.start() - 80):]) if _match(r"(?:words?|terms?)", trigger[0], re.I) else \
        _quoted(c[trigger.start():])
    if not words_:  # unquoted words only as a list: "avoid these words: a, b" or "words like a or b"
        m = _search(rf"(?:words?|terms?)\s*(?::|like|such\s+as)\s*({_WORD_LIST}*)", c[trigger.start():], re.I) or \
            _search(rf"^\S.{{0,200}}?(?:key)?(?:words?|terms?)\s+({_WORD_LIST}+)", trigger[0] + c[trigger.end():], re.I) or \
            _search(rf"the\s+(?:key)?(?:words?|terms?)\s+({_WORD_LIST}*)\s+(?:are|is)\s+(?:forbidden|banned|not\s+allowed|"
                    r"off[\s-]limits|prohibited)", c, re.I)
        if not m:
            return None
        words_ = [w for w in _split(r",\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+", m[1]) if w]
    return {"forbidden_words": words_} if words_ else None


def _language(c: str) -> dict | None:
    hyphened = _search(r"\b(" + _LANGUAGE_NAMES + r")-language\b", c, re.I)
    if hyphened and _is_about_the_reply(c):
        return {"language": LANGUAGES[hyphened[1].lower()]}
    if _search(r"\bin\s+english\b", c, re.I) and _search(r"capital|lower[\s-]?case|upper[\s-]?case|caps", c, re.I):
        return None  # "in English and in all capital letters" is a case instruction (as IFEval words it)
    if _search(r"translat|how\s+(?:do|would|can)\s+(?:you|i|we|one)\s+say|(?:from|into)\s+(?:" + _LANGUAGE_NAMES + r")\b",
               c, re.I):
        return None
    m = _search(r"(?:(?:respond|answer|reply|write|written|speak|response|answer|reply|output|text)\w*\s+(?:[\w'-]+\s+){0,4}?"
                  r"(?:only\s+|entirely\s+|exclusively\s+|solely\s+|fully\s+|wholly\s+)?in|\busing|\blanguage\s*(?:of|:))"
                  r"\s+(?:the\s+)?(?:formal\s+|informal\s+|plain\s+|simple\s+|proper\s+|fluent\s+|natural\s+|british\s+|"
                  r"american\s+)?(" + _LANGUAGE_NAMES + r")\b(?:\s+language)?", c, re.I)
    m = m or _search(r"\b(" + _LANGUAGE_NAMES + r")\s+(?:only|language\s+only)\b", c, re.I)
    m = m or _search(r"\b(?:entirely|only|exclusively|completely|fully|wholly|all)\s+in\s+(" + _LANGUAGE_NAMES + r")\b|"
                     r"\b(?:in|using|use)\s+(?:only|entirely|exclusively|solely)\s+(?:the\s+)?(" + _LANGUAGE_NAMES + r")\b|"
                     r"\bkeep\s+(?:it|this|everything|the\s+\w+|your\s+\w+)\s+in\s+(" + _LANGUAGE_NAMES + r")\b", c, re.I)
    if m is None and _is_about_the_reply(c):
        m = _search(r"\bin\s+(?:the\s+)?(" + _LANGUAGE_NAMES + r")\s+language\b", c, re.I)
    if m:
        return {"language": LANGUAGES[next(g for g in m.groups() if g).lower()]}
    m = _search(r"\b(?:explain|describe|tell|write|summari[sz]e|answer|respond|reply|say|give)\b[^.?!]{0,80}?\bin\s+("
                  + _LANGUAGE_NAMES + r")\b(?!\s+(?:culture|history|cuisine|literature|grammar|food|art|music))",
                  c, re.I)
    if m:
        return {"language": LANGUAGES[m[1].lower()]}
    native = _search(r"\b(?:en|in|auf|em|in)\s+(" + "|".join(NATIVE_LANGUAGES) + r")\b", c, re.I)
    return {"language": NATIVE_LANGUAGES[native[1].lower()]} if native else None


def _placeholders(c: str) -> dict | None:
    if not _search(r"placeholders?|square\s+brackets", c, re.I):
        return None
    m = _search(rf"(?:({_REL_ANY})\s+)?{NUMBER}\s+(?:[\w-]+\s+){{0,5}}?placeholders?", c, re.I)
    m = m or _search(rf"placeholders?[^.]{{0,200}}?(?:({_REL_ANY})\s+)?{NUMBER}", c, re.I)
    if not m:
        return None
    return {"num_placeholders": parse_number(m[2])}


def _postscript(c: str) -> dict | None:
    if _search(r"what\s+(?:does|is)\s+(?:a\s+)?(?:p\.?s\.?|postscript)|stand\s+for|meaning\s+of", c, re.I):
        return None
    if not _search(r"\b(?:add|include|append|end|finish|close|conclude|write|put|attach|sign\s+off|with\s+an?|should|"
                     r"must|please|your|need)\b", c, re.I) or _search(r"\b(?:ended|received|saw|wrote|got)\b", c, re.I):
        return None
    if _search(r"p\.\s?p\.\s?s", c, re.I):
        return {"postscript_marker": "P.P.S"}
    if _search(r"postscript|\bp\.\s?s\.?(?=\s|$|[:\"'”),.;!])|\bps:", c, re.I):
        return {"postscript_marker": "P.S."}
    return None


_REPEAT_VERB = r"repeat|re-?stat|copy|reproduce|echo"


def _repeat_prompt(prompt: str) -> dict | None:
    m = _search(r"(?:repeat|copy|reproduce|echo|re-?state)\s+(?:the|this|my|your|our)?\s*(?:following\s+|exact\s+)?(?:[\w']+\s+)?"
                r"(?:request|question|prompt|instruction|task|query|sentence)"
                r"(?:\s+below|\s+above|\s+back)?\s+(?:first|word\s+for\s+word|verbatim|exactly|without\s+(?:any\s+)?change)",
                prompt, re.I)
    m = m or _search(r"(?:first|begin\s+by|start\s+by)\s*,?\s+(?:re-?stat|repeat|cop|restat)\w*\s+(?:the|this|my)\s+"
                       r"(?:\w+\s+)?(?:request|question|prompt|query|task)", prompt, re.I)
    m = m or _search(r"(?:repeat|copy|reproduce|echo|re-?state)\s+(?:it|this|that)(?:\s+(?:sentence|line|phrase|quote|"
                     r"question|text))?\s+(?:back\s+)?(?:to\s+me\s+)?(?:word\s+for\s+word|verbatim|exactly)\s*[^:]{0,200}:", prompt, re.I)
    first = _search(r"(?:repeat|copy|reproduce|echo|re-?state)\s+(?:the|that|this|my)\s+first\s+sentence", prompt, re.I)
    if not m and not first:
        return None
    clauses = _clauses(prompt)
    if first:
        return {"prompt_to_repeat": clauses[0].strip()}
    instruction = next(c for c in clauses if _search(_REPEAT_VERB, c, re.I))
    after_colon = _search(r"^([^:]*):\s*(\S.*)$", prompt[prompt.index(instruction):], re.S)
    if after_colon and not _search(r"\boptions\b|\bthen\s+(?:answer|respond|reply|choose)\w*\s+with\b", after_colon[1], re.I):
        # the text after the colon, up to where the next step starts ("… two toddlers? Then give …")
        text = _split(r"(?<=[.?!])\s+(?=(?:then|after\s+that|afterwards|next|finally|once)\b)", after_colon[2].strip(),
                      re.I)[0].strip()
        return {"prompt_to_repeat": text.strip("'\"“”‘’")}
    blocks = [b for b in _split(r"\n\s*\n", prompt) if b.strip()]
    if len(blocks) > 1 and instruction not in blocks[-1]:  # a standing rule (system message): the last turn
        return {"prompt_to_repeat": blocks[-1].strip()}
    rest = [c for c in clauses if not _search(_REPEAT_VERB + "|words or characters before", c, re.I)]
    if not rest:  # one run-on clause: the sentences before the instruction
        sentences = _split(r"(?<=[.!?])\s+", prompt.strip())
        rest = sentences[:next(i for i, t in enumerate(sentences) if _search(_REPEAT_VERB, t, re.I))]
    return {"prompt_to_repeat": " ".join(rest).strip()}


def _two_responses(c: str) -> dict | None:
    if _search(rf"(?:{_REL_ANY}|highlight\w*)\s+(?:two|2)\s+", c, re.I):
        return None
    if _search(r"(?:two|2)\s+(?:different|distinct|separate|alternative)?\s*(?:responses|answers|versions|replies)|"
                 r"\*{6}|six\s+asterisks", c, re.I) and _search(r"(?:two|2)\s+\w*\s*(?:responses|answers|versions|"
                                                                  r"replies)|\*{6}|six\s+asterisks", c, re.I):
        return {}
    return None


def _emojis(c: str) -> dict | None:
    return _unit_count(c, "emoji", r"emojis?|emoticons?|emoji")


def _hashtags(c: str) -> dict | None:
    return _unit_count(c, "hashtag", r"hashtags?")


def _unit_count(c: str, cue: str, unit: str) -> dict | None:
    """A count of a unit we count exactly ("2 to 4 emojis", "no hashtags", "at most 3 emojis")."""
    if cue not in c.lower():
        return None
    if _search(rf"\b(?:no|without|zero|avoid|(?:do\s+not|don'?t|never)\s+(?:use|add|include))\s+(?:any\s+)?(?:{unit})\b", c, re.I):
        return {"relation": "exactly", "count": 0}
    if _search(r"\b(?:(?:is|are)\s+(?:fine|ok(?:ay)?|allowed|welcome|acceptable)|you\s+(?:may|can)|feel\s+free)\b", c, re.I):
        return None  # a permission ("a couple of emojis are fine"), not a count asked for
    found = _counted(c, unit)
    if found and _is_about_the_reply(c):
        return {"relation": found[0], "count": found[1]}
    return None


_OPENED = r"(?:response|answer|reply|email|e-mail|letter|message|story|poem|post|note|speech|text|essay|caption|toast)"


def _starts_with(c: str) -> dict | None:
    """The reply's opening phrase: "start your reply with 'Hi there,'", "the email must open with 'Dear Sam'",
    "Begin with the words 'Once upon a time'" (never a part's: "paragraph 2 should begin with ...")."""
    quoted = r"\s+with\s+(?:the\s+(?:exact\s+)?(?:words?|phrase|line|greeting|sentence)\s+)?" + _QUOTED
    m = _search(rf"\b(?:start|begin|open)\w*\s+(?:your\s+{_OPENED}|it|the\s+{_OPENED}){quoted}|"
                rf"\b(?:your|the)\s+{_OPENED}\s+(?:must|should|has\s+to|needs\s+to|will|shall)?\s*(?:start|begin|open)s?"
                rf"{quoted}|^\s*(?:please\s+)?(?:start|begin|open){quoted}", c, re.I)
    if m is None:
        return None
    return {"phrase": next(g for g in m.groups() if g is not None).strip()}


def _ends_with_question(c: str) -> dict | None:
    m = _search(r"\b(?:end|finish|close|conclude|wrap\s+up)\w*\s+(?:your\s+\w+\s+|it\s+|the\s+(?:\w+\s+){1,2}|things\s+)?"
                r"(?:with|on)\s+(?:a|one)\s+(?:[\w-]+\s+)?question\b(?!\s+marks?)", c, re.I)
    return {} if m and _is_about_the_reply(c) else None


# (instruction id, per-clause function); the whole-prompt kinds are handled in detect()
_CLAUSE_KINDS = [
    ("length_constraints:number_words", _number_words),
    ("length_constraints:number_sentences", _number_sentences),
    ("detectable_format:number_bullet_lists", _bullets),
    ("detectable_format:number_highlighted_sections", _highlights),
    ("detectable_format:title", _title),
    ("detectable_format:json_format", _json),
    ("detectable_format:constrained_response", _constrained_response),
    ("change_case:capital_word_frequency", _capital_frequency),
    ("change_case:english_lowercase", _lowercase),
    ("change_case:english_capital", _uppercase),
    ("startend:end_checker", _end_phrase),
    ("startend:quotation", _quotation),
    ("punctuation:no_comma", _no_comma),
    ("keywords:letter_frequency", _letter_frequency),
    ("keywords:frequency", _frequency),
    ("keywords:existence", _existence),
    ("keywords:forbidden_words", _forbidden),
    ("language:response_language", _language),
    ("detectable_content:postscript", _postscript),
    ("combination:two_responses", _two_responses),
    ("tao:emoji_count", _emojis),
    ("tao:hashtag_count", _hashtags),
    ("tao:starts_with", _starts_with),
    ("tao:ends_with_question", _ends_with_question),
]

_READERS = dict(_CLAUSE_KINDS)  # instruction id -> its per-clause reader

def _asks_about_form(clause: str) -> bool:
    """A question about a form ("What does typing in ALL CAPS mean?"), not a request for one."""
    return clause.rstrip().endswith("?") and _match(r"\s*(?:what|why|how|when|where|who|which|does|do|is|are|was|"
                                                      r"were|should|could|can|would|will|shall|may|might|"
                                                      r"in\s+\w+,)\b", clause, re.I) is not None and \
        _search(r"\b(?:you|your|please|me)\b", clause, re.I) is None


_CANCEL_ALL = (r"\bno\s+more\s+\w+\s+(?:needed|necessary|required)|\b(?:write|answer|reply|respond)\s+normally|"
               r"back\s+to\s+normal|(?<!n't )(?<!not )\bforget\s+(?:about\s+)?the\s+(?:\w+\s+)?(?:limit|rule|constraint|"
               r"requirement|format|formatting)s?\b|"
               r"(?<!n't )(?<!not )\b(?:scratch|forget|ignore|disregard|scrap|cancel)\s+(?:that|it|about\s+(?:that|it)|the\s+\w+"
               r"\s+(?:entirely|altogether|completely|part|thing|idea|bit))\b|never\s*mind|"
               r"(?:ignore|forget|disregard|drop|scrap|never\s*mind)\s+(?:about\s+)?(?:all\s+)?(?:the\s+|my\s+|that\s+|"
               r"those\s+|these\s+)?(?:earlier|previous|above|former|prior|last|old)\s+(?:\w+\s+)?(?:instructions?|"
               r"requests?|rules?|constraints?|requirements?)")
_CANCEL_CASE = r"normal\s+(?:capitali[sz]ation|case)|capitali[sz]e\s+normally|regular\s+(?:capitali[sz]ation|case)"


_NEW_TOPIC = (r"\b(?:unrelated|(?:different|new|another|separate)\s+(?:thing|question|topic|subject)|change\s+of\s+"
              r"(?:topic|subject)|switching\s+gears|on\s+another\s+note)\b")
_STANDING = (r"from\s+now\s+on|for\s+the\s+rest|for\s+(?:this|the\s+whole)\s+(?:session|chat|conversation|game)|"
             r"throughout|\balways\b|going\s+forward|\b(?:every|each|all)\s+(?:of\s+)?(?:your\s+|future\s+)?(?:answers?|"
             r"repl(?:y|ies)|responses?|messages?|summar(?:y|ies))\b|in\s+this\s+(?:chat|conversation)")


@dataclass(frozen=True)
class Reading:
    """What the detector read of a prompt: the constraints it checks, and the constraint sentences it
    saw but cannot read whole (kept out of the constraints, never mapped to a nearby kind)."""

    constraints: tuple[Constraint, ...]
    unverifiable: tuple[str, ...] = ()


# ---- all or nothing --------------------------------------------------------------------------------------
_N = f"(?:{NUMBER[1:-1]})"  # a number, not captured
_UNIT = (r"(?:words?|sentences?|paragraphs?|lines?|items?|bullets?|bullet[\s-]+points?|points?|stanzas?|verses?|"
         r"sections?|steps?|entries|entry|questions?|characters?|letters?|rows?|columns?|headings?|headers?|"
         r"hashtags?|emojis?|tips|examples?|reasons?|ideas?|options?|bullet\s+lists?|lists?|clauses?|syllables?|"
         r"digits?|numbers?|exclamation\s+(?:marks?|points?)|haikus?|couplets?|quatrains?|limericks?|tweets?)")
_COUNTED_UNITS = (r"(?:words?|sentences?|paragraphs?|bullet[\s-]+points?|bullets?|sections?|placeholders?|times|emojis?|"
                  r"hashtags?)")
_RANGES = [  # (pattern, group of the low end, group of the high end)
    rf"\bbetween\s+({_N})(?:\s+[a-z]+)?\s*(?:and|&|-|–|—|to)\s*({_N})\b",
    rf"\bfrom\s+({_N})\s*(?:to|-|–|—)\s*({_N})\b",
    rf"(?<![\w-])({_N})\s*(?:-|–|—|to)\s*({_N})\s+(?:[\w-]+\s+)?{_UNIT}",
    rf"(?<![\w-])({_N})\s+or\s+({_N})\s+(?:[\w-]+\s+)?{_UNIT}",
]
_LOWER = rf"{_REL['at least']}|{_REL['more than']}"
_UPPER = rf"{_REL['at most']}|{_REL['less than']}"
_BOUND_PAIRS = [  # "at least A (words) and no more than B", either way round
    (rf"\b({_LOWER})\s+({_N})(?:\s+([a-z]+))?[^.;]{{0,40}}?\b(?:and|but|,)\s+(?:also\s+)?(?:not\s+)?({_UPPER})\s+"
     rf"({_N})", "lower"),
    (rf"\b({_UPPER})\s+({_N})(?:\s+([a-z]+))?[^.;]{{0,40}}?\b(?:and|but|,)\s+(?:also\s+)?({_LOWER})\s+({_N})",
     "upper"),
]
_ORDINAL = (r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|\d+(?:st|nd|rd|th)|last|final|"
            r"opening|closing|penultimate|next-to-last|middle)")
_RELATIONAL = (
    rf"\b(?:longer|shorter|more|fewer|less|greater|bigger|smaller|higher|lower)\b[^.;]{{0,60}}?\bthan\s+(?:the\s+|its\s+)?"
    rf"(?:one\s+)?(?:before|previous|preceding|prior|first|second|other|next|following|last|{_UNIT})\b|"
    r"\b(?:progressively|gradually|steadily|increasingly)\s+(?:longer|shorter|more|fewer|less)\b|"
    r"\b(?:increas|decreas|grow|shrink)\w*\s+(?:\w+\s+){0,3}?(?:in\s+length|by\s+(?:one|two|three|\d+|a\s+\w+))\b|"
    rf"\b(?:as\s+many|the\s+same\s+number\s+of)\s+{_UNIT}\s+as\b|\b(?:equal|same)\s+(?:length|number\s+of\s+{_UNIT})"
)
_POSITIONAL = (rf"(?<!even\s)(?<!even\sthe\s)\b(?:the\s+|your\s+|its\s+|each\s+)?{_ORDINAL}\s+(?:[\w-]+\s+)?"
               rf"{_UNIT}\b(?!\s*:)|"
               rf"\b(?:start|begin|end|open|close|finish)\w*\s+(?:each|every|all|the\s+{_ORDINAL})\s+(?:[\w-]+\s+)?"
               rf"{_UNIT}\b|"
               rf"\b(?:each|every)\s+(?:[\w-]+\s+)?{_UNIT}\s+(?:\w+\s+){{0,2}}?(?:start|begin|end|open|close|finish)")
_PER_PART = (rf"\b(?:each|every|per)\s+(?:single\s+|individual\s+|[\w-]+\s+)?{_UNIT}\b|"
             r"\bno\s+(?:single\s+)?(?:sentence|paragraph|line|bullet|item|word|section|stanza|verse|point)\s+(?:is|should|"
             r"may|can|must|longer|shorter|over|exceeds?|has|with|more|goes)\b|"
             rf"\beach\s+(?:(?:{_REL_ANY}|between|containing|with|having)\b|of\s+(?!your\b)|{_N}\b)|{_UNIT}\s+each\b|"
             r"\beach\s*(?:[.;]|$)|"
             r"\bthe\s+(?:subject(?:\s+line)?|title|headline|heading|tagline|caption|greeting|sign-?off|introduction|intro|"
             r"conclusion|opening|closing|hook)\s+(?:must|should|has\s+to|needs\s+to|can|may|will|is|of)\b|"
             rf"\b{_UNIT}\s+(?:of|with|containing|having)\s+(?:(?:{_REL_ANY}|between)\s+)?{_N}\s+(?:[\w-]+\s+)?{_UNIT}")
_UNCOUNTED = (rf"(?:(?:{_REL_ANY})\s+)?\b({_N})\s+(?:[\w-]+\s+){{0,2}}?(?!{_COUNTED_UNITS}\b){_UNIT}\b")
_BULLETS_BOUNDED = (rf"(?:{_LOWER}|{_UPPER})\s+{_N}\s+(?:[\w-]+\s+)?bullet|{_N}\s+(?:[\w-]+\s+)?bullet(?:[\s-]*points?|s)?"
                    r"\s*[(,]?\s*(?:or\s+(?:more|fewer|less)|at\s+(?:least|most)|max(?:imum)?|minimum|tops)\b")
_BACK_REFERENCE = r"\b(?:both|each|every|all)\s+(?:times?|of\s+them|occurrences?|instances?|uses?)\b"
# Kinds whose own phrasings name a position or a part; a positional clause does not void them.
_POSITIONED_KINDS = {"startend:end_checker", "detectable_content:postscript", "combination:repeat_prompt",
                     "detectable_format:title", "startend:quotation", "combination:two_responses"}
_FOREIGN = (r"\b(?:le|la|les|des|une|avec|pas|moins|mots|phrases|réponse|réponds|répondez|und|der|die|das|nicht|mit|"
            r"mir|von|höchstens|mindestens|genau|bitte|Wörter|Wörtern|Sätze|Sätzen|Antwort|antworte|el|los|las|con|"
            r"menos|más|palabras|oraciones|respuesta|responde|usa|sin|parole|frasi|risposta|palavras|frases|"
            r"resposta)\b|[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af\u0400-\u04ff]")


def _ranges(clause: str) -> list[tuple[int, int, int, int]]:
    """Every range the clause states: (its two numbers as written, then the inclusive low and high)."""
    found = []
    for pattern in _RANGES:
        for m in _finditer(pattern, clause, re.I):
            a, b = parse_number(m[1]), parse_number(m[2])
            if a < b:
                found.append((a, b, a, b))
    for pattern, first in _BOUND_PAIRS:
        for m in _finditer(pattern, clause, re.I):
            if m[3] and not _fullmatch(_UNIT, m[3], re.I):
                m3 = None  # a word after the first number that is not a unit: still one range
            else:
                m3 = m[3]
            unit_after = _match(rf"\s*(?:[\w-]+\s+)?({_UNIT})", clause[m.end():], re.I)
            if m3 and unit_after and m3.lower().rstrip("s") != unit_after[1].lower().rstrip("s"):
                continue  # "at least 3 paragraphs and under 200 words": two constraints, not a range
            (low_rel, low), (high_rel, high) = (((m[1], m[2]), (m[4], m[5])) if first == "lower"
                                                else ((m[4], m[5]), (m[1], m[2])))
            lo = parse_number(low) + (_relation(low_rel, None) == "more than")
            hi = parse_number(high) - (_relation(high_rel, None) == "less than")
            if lo <= hi:
                found.append((parse_number(low), parse_number(high), lo, hi))
    return found


def _piece(clause: str, at: int) -> str:
    """The part of the clause around position `at`, between commas, semicolons and conjunctions
    ("more than 120 words, with each question in bold": the second part for "each question")."""
    start, end = 0, len(clause)
    for m in _finditer(r"[,;:]\s*|\s+(?:and|but|while|whereas|followed\s+by|then)\s+", clause, re.I):
        if m.end() <= at:
            start = m.end()
        elif m.start() >= at:
            end = m.start()
            break
    return clause[start:end]


def _stated_in(piece: str, constraint: Constraint) -> bool:
    """Could `constraint` have been read from `piece`? A counted kind: its count is a number there;
    any other kind: its reader finds it there."""
    if constraint.id in RELATION_KWARGS:
        _, count_key = RELATION_KWARGS[constraint.id]
        numbers = {parse_number(m[1]) for m in _finditer(NUMBER, piece, re.I)}
        return constraint.kwargs[count_key] in numbers or constraint.kwargs.get("upper") in numbers
    reader = _READERS.get(constraint.id)
    return reader is not None and reader(piece) is not None


def _read_whole(clause: str, read: dict[str, Constraint]) -> tuple[dict[str, Constraint], bool]:
    """The clause's readings that hold whole, and whether the clause states a constraint that cannot
    be verified: a relation between parts, a position, a count per part. Readings made from the part
    of the clause that states it are dropped (they would be a part of it read as a whole); readings
    from the rest of the clause stand."""
    read = dict(read)
    counted = read.keys() & RELATION_KWARGS.keys()
    ranges = _ranges(clause) if counted or "detectable_format:number_bullet_lists" in read else []
    for kind in counted:  # ranges first: "between 100 and 150 words"
        relation_key, count_key = RELATION_KWARGS[kind]
        count = read[kind].kwargs[count_key]
        for a, b, lo, hi in ranges:
            if count in (a, b):
                read[kind] = Constraint(kind, {**read[kind].kwargs, relation_key: "between", count_key: lo, "upper": hi})
                break
    cannot = False
    bullets = read.get("detectable_format:number_bullet_lists")
    if bullets and (any(bullets.kwargs["num_bullets"] in (a, b) for a, b, _, _ in ranges)
                    or _search(_BULLETS_BOUNDED, clause, re.I)):
        del read["detectable_format:number_bullet_lists"]  # IFEval's bullet count is exact: a bound is not it
        cannot = True
    for pattern in (_RELATIONAL, _POSITIONAL, _PER_PART):
        for m in _finditer(pattern, clause, re.I):
            if pattern is _PER_PART and not read.keys() & RELATION_KWARGS.keys():
                break  # "each" with nothing counted: a count per part is what cannot be read
            cannot = True
            # "exactly twice, both times in the last paragraph": the position qualifies the whole clause
            piece = clause if _search(_BACK_REFERENCE, clause, re.I) else _piece(clause, m.start())
            if pattern is _PER_PART:  # a count per part: only the counts could have been read from it
                read = {k: v for k, v in read.items() if k not in RELATION_KWARGS or not _stated_in(piece, v)}
                continue
            of_a_word = _search(r"\b(?:word|letter|character)s?\b", m[0], re.I) is not None  # not an end phrase
            read = {k: v for k, v in read.items()
                    if (pattern is _POSITIONAL and k in _POSITIONED_KINDS and not (of_a_word and k == "startend:end_checker"))
                    or not _stated_in(piece, v)}
    if not read and (_foreign_constraint(clause) or _is_about_the_reply(clause) and _search(_UNCOUNTED, clause, re.I)):
        cannot = True
    return read, cannot


def _foreign_constraint(clause: str) -> bool:
    """A constraint in a language the patterns do not read: a count in a clause that is not English."""
    return _search(_FOREIGN, clause) is not None and _search(r"\d", clause) is not None


def _paragraphs_whole(prompt: str, clauses: list[str], unverifiable: list[str]) -> Constraint | None:
    """The paragraph count, read whole: a range ("between 2 and 4 paragraphs") or a relation between
    paragraphs voids it (IFEval's check is one exact count). Paragraphs are separated by blank lines
    (`separator`, checked by us) unless the prompt asks for IFEval's *** dividers."""
    for clause in clauses:
        kwargs = _number_paragraphs(clause)
        if kwargs is None:
            continue
        count = kwargs["num_paragraphs"]
        if any(count in (a, b) for a, b, _, _ in _ranges(clause)) or _search(_RELATIONAL, clause, re.I):
            unverifiable.append(clause)
            return None
        if not _search(r"\*\*\*|markdown\s+divider|horizontal\s+(?:rule|line)", prompt, re.I):
            kwargs = {**kwargs, "separator": "blank line"}
        return Constraint("length_constraints:number_paragraphs", kwargs)
    return None


def _contradicts(kept: Constraint, new: Constraint) -> bool:
    """Two statements of one counted kind that no reply meets together ("at least 300 words", "under 50")."""
    if kept.id not in RELATION_KWARGS or new.id != kept.id:
        return False
    relation_key, count_key = RELATION_KWARGS[kept.id]
    if {k: v for k, v in kept.kwargs.items() if k not in (relation_key, count_key, "upper")} != \
            {k: v for k, v in new.kwargs.items() if k not in (relation_key, count_key, "upper")}:
        return False  # another keyword or letter: not the same count
    both = bounds(kept.kwargs[relation_key], kept.kwargs[count_key], kept.kwargs.get("upper")) + \
        bounds(new.kwargs[relation_key], new.kwargs[count_key], new.kwargs.get("upper"))
    low = max((n for kind, n in both if kind == "at least"), default=0)
    high = min((n for kind, n in both if kind == "less than"), default=10 ** 9)
    return low >= high


def detect(prompt: str) -> list[Constraint]:
    """Every instruction the prompt states that the checkers verify, each kind once."""
    return list(read_prompt(prompt).constraints)


def read_prompt(prompt: str) -> Reading:
    """Every instruction the prompt states, each kind once (its first statement), and the
    constraint sentences that cannot be verified."""
    prompt = _sub(r"```.*?(?:```|$)", "\n\n", prompt, re.S)  # instructions inside code are the code's, not ours
    found: dict[str, Constraint] = {}
    standing: set[str] = set()  # stated as a rule for every reply: a change of topic keeps them
    void: set[str] = set()  # kinds stated in ways no reply can meet together
    unverifiable: list[str] = []
    clauses = []
    for block in _split(r"\n\s*\n", prompt):
        persona = _match(r"\s*you(?:\s+are|'re)\b", block, re.I) is not None  # a system message's rules stand
        for clause in _clauses(block):
            if _asks_about_form(clause):
                continue
            clauses.append(clause)
            if _search(_CANCEL_ALL, clause, re.I):
                found.clear()  # "ignore my earlier instructions": only what follows counts
            if _search(_CANCEL_CASE, clause, re.I):
                found.pop("change_case:english_lowercase", None)
                found.pop("change_case:english_capital", None)
            if _search(_NEW_TOPIC, clause, re.I):  # a one-off request of an earlier turn ends with its topic
                found = {k: v for k, v in found.items() if k in standing}
            clause_read: dict[str, Constraint] = {}
            for instruction_id, read in _CLAUSE_KINDS:
                if instruction_id in void:
                    continue
                kwargs = read(clause)
                if kwargs is not None:
                    clause_read[instruction_id] = Constraint(instruction_id, kwargs)
            clause_read, cannot = _read_whole(clause, clause_read)
            if cannot:
                unverifiable.append(clause)
            for instruction_id, constraint in clause_read.items():
                if instruction_id in found:
                    if _contradicts(found[instruction_id], constraint):
                        void.add(instruction_id)
                        del found[instruction_id]
                        unverifiable.append(clause)
                    continue
                found[instruction_id] = constraint
                if persona or _search(_STANDING, clause, re.I):
                    standing.add(instruction_id)
    nth = _nth_paragraph(prompt)
    if nth:
        found["length_constraints:nth_paragraph_first_word"] = Constraint("length_constraints:nth_paragraph_first_word",
                                                                          nth)
    else:
        paragraphs = _paragraphs_whole(prompt, clauses, unverifiable)
        if paragraphs:
            found[paragraphs.id] = paragraphs
    placeholders = _placeholders(prompt)
    if placeholders:
        found["detectable_content:number_placeholders"] = Constraint("detectable_content:number_placeholders",
                                                                     placeholders)
    sections = _sections(prompt)
    if sections:
        found["detectable_format:multiple_sections"] = Constraint("detectable_format:multiple_sections", sections)
    repeat = _repeat_prompt(prompt)
    if repeat:
        found["combination:repeat_prompt"] = Constraint("combination:repeat_prompt", repeat)
    _resolve_overlaps(found)
    return Reading(tuple(found.values()), tuple(unverifiable))


def _resolve_overlaps(found: dict[str, Constraint]) -> None:
    """Kinds whose phrasings overlap: the more specific reading wins."""
    if "change_case:capital_word_frequency" in found:
        found.pop("change_case:english_capital", None)
    if "keywords:frequency" in found and "keywords:existence" in found:  # a counted keyword is not also "present"
        keyword = found["keywords:frequency"].kwargs["keyword"].lower()
        rest = [k for k in found["keywords:existence"].kwargs["keywords"] if k.lower() != keyword]
        if rest:
            found["keywords:existence"] = Constraint("keywords:existence", {"keywords": rest})
        else:
            found.pop("keywords:existence")
    if "change_case:english_lowercase" in found and "change_case:english_capital" in found:
        found.pop("change_case:english_capital")  # "no capital letters" reads as both


_WARM_UP = [
    "Answer in at most forty-two words, in exactly 3 sentences, with 4 bullet points and 2 paragraphs.",
    "Use the word 'data' at least twice and the letter 'q' fewer than 3 times. Never use the letter 'z'.",
    "Include the keywords 'a' and 'b'. Do not use the words 'c' or 'd'. Respond only in Spanish.",
    "Highlight at least 2 sections with markdown. Your response must have 3 sections, marked SECTION X.",
    "Add a P.S. and a title in <<double angular brackets>>. Wrap the entire output in JSON format.",
    "Write in all lowercase letters. Answer in ALL CAPS with at least 5 words in all capital letters.",
    "End your response with the phrase 'Done.' Wrap your entire response in double quotation marks.",
    "Do not use any commas. Include at least 2 placeholders like [name]. Give two different responses.",
    "Answer with 'My answer is yes.' The 2nd paragraph must start with the word 'so'. Réponds en français.",
    "First repeat the request word for word without change, then give your answer. Request: hi. Word limit: 9.",
    "What is a comma splice? Explain it in Hindi. The last line should be: thanks. Keep it above 100 words.",
    "Write a poem. First repeat the request word for word without change, then answer. Sentence limit: 3.",
    "Use placeholders, at least 3 of them. Summarize this JSON schema and format the answer as JSON.",
    "ALL CAPS words should be used at least twice. My essay has to be at least 500 words.",
    "Avoid the words apple or pear. Include the keywords apple and pear.",
    "Give a bulleted list of 3 items about 5 tips, each a bullet. Write in English in all caps, 40 words or less.",
    "Use the word 'x' 3 times. Repeat the question verbatim. Request: hello.",
    "Give 5 tips, each as a bullet point. Do not use the words 3 words. Please repeat the request exactly, then answer.",
]


def warm_up() -> None:
    """Compile every pattern now (a server's start), not on the first requests' event loop."""
    for prompt in _WARM_UP:
        detect(prompt)
        for clause in _clauses(prompt):
            for _, read in _CLAUSE_KINDS:
                read(clause)

