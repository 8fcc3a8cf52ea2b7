"""Judge a response against one *outside* constraint (a verifiable constraint that is not an IFEval kind).

The corpus ``tests/data/outside/prompts.jsonl`` annotates each prompt's constraints. Those marked
``"ifeval": true`` carry an IFEval instruction id (``"keywords:existence"`` ...) and are judged elsewhere; those
marked ``"ifeval": false`` carry one of the kinds in :data:`KINDS`, and :func:`check` judges them here.

Units (used by every checker below):

* **paragraphs**: blocks of text separated by one or more blank lines. A line that is only a markdown divider
  (``***``, ``---``, ``___``) also separates paragraphs. Blocks that are empty after stripping are dropped.
* **words**: runs of letters, digits and apostrophes (``don't`` is one word, ``e-bike`` is two, ``3.5`` is two);
  leading/trailing apostrophes are dropped.  Any Unicode letter counts as a letter.
* **sentences**: each paragraph is split after ``.``, ``!`` or ``?`` (optionally followed by closing quotes or
  brackets) when whitespace or the end follows. Pieces without any word are dropped. So ``Dr. Who`` is two
  sentences, and lines of a list with no end punctuation stay in one sentence.
* **lines**: lines that are not blank after stripping.
* **bullet items**: lines starting (after indentation) with ``-``, ``*``, ``+`` or ``•`` and a space.
* **numbered items**: lines starting (after indentation) with digits followed by ``.`` or ``)`` and a space.
* **lists**: maximal runs of bullet/numbered items; blank lines between items do not end a list, any other line does.
* **headings**: markdown ATX headings, ``#`` to ``######`` followed by a space.

Counting kinds take ``{"min": int, "max": int}``; either may be left out (no bound); both bounds are inclusive,
so "exactly N" is ``{"min": N, "max": N}``. Keyword matching is case-insensitive and whole-word (the keyword may
not be glued to other letters or digits). ``n``/``paragraph`` positions are 1-based, and negative values count
from the end (``-1`` is the last).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from typing import Any

Args = dict[str, Any]

_WORD_RE = re.compile(r"(?:[^\W_]|')+")
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+")
_DIVIDER_RE = re.compile(r"^\s*(?:\*\s*){3,}$|^\s*(?:-\s*){3,}$|^\s*(?:_\s*){3,}$")
_BULLET_RE = re.compile(r"^\s*[-*+\u2022]\s+(\S.*)$")
_NUMBERED_RE = re.compile(r"^\s*(\d+)[.)]\s+(\S.*)$")
_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})\s+(\S.*?)\s*#*\s*$")
_URL_RE = re.compile(r"https?://[^\s)>\]\"']+")
_HASHTAG_RE = re.compile(r"(?<![\w#&/])#\w*[^\W\d_]\w*")
_FENCE_BLOCK_RE = re.compile(r"^\s*```[ \t]*([^\s`]*)[^\n]*\n.*?^\s*```", re.MULTILINE | re.DOTALL)
_ISO_DATE_RE = re.compile(r"\b\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b")
_SLASH_DATE_RE = re.compile(r"\b\d{1,4}[/.]\d{1,2}[/.]\d{2,4}\b")
_MONTHS = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)"
)
_WORDY_DATE_RE = re.compile(
    rf"\b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\b"
)
# Pictographic code points counted as emoji. Skin-tone modifiers are excluded; a flag is two regional
# indicators and counts once; a ZWJ sequence counts once per pictograph in it.
_EMOJI_RANGES = (
    (0x1F300, 0x1F3FA), (0x1F400, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
    (0x1FA70, 0x1FAFF), (0x2600, 0x26FF), (0x2700, 0x27BF), (0x2B50, 0x2B55), (0x1F004, 0x1F0CF),
)
_TITLE_SMALL_WORDS = frozenset(
    "a an the and but or nor for so yet as at by in of on to up via per vs with from into onto over".split()
)
_LANG_ALIASES = {
    "python": {"python", "py", "python3"},
    "bash": {"bash", "sh", "shell", "zsh"},
    "javascript": {"javascript", "js"},
    "typescript": {"typescript", "ts"},
    "yaml": {"yaml", "yml"},
    "dockerfile": {"dockerfile", "docker"},
}


# ----------------------------------------------------------------------------------------------- units


def words(text: str) -> list[str]:
    """Runs of letters/digits/apostrophes, with leading/trailing apostrophes stripped."""
    out = [w.strip("'") for w in _WORD_RE.findall(text)]
    return [w for w in out if w]


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines or by a divider line (``***``/``---``/``___``); empties dropped."""
    blocks: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip() or _DIVIDER_RE.match(line):
            if current:
                blocks.append("\n".join(current).strip())
                current = []
        else:
            current.append(line)
    if current:
        blocks.append("\n".join(current).strip())
    return [b for b in blocks if b]


def sentences(text: str) -> list[str]:
    """Sentences of every paragraph, split after . ! ? (+ closing quotes) followed by whitespace or the end."""
    out: list[str] = []
    for para in paragraphs(text):
        out.extend(s.strip() for s in _SENT_SPLIT_RE.split(para) if words(s))
    return out


def lines(text: str) -> list[str]:
    """Non-blank lines, stripped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def bullet_items(text: str) -> list[str]:
    """Text of every bullet item (``-``, ``*``, ``+``, ``•``)."""
    return [m.group(1) for ln in text.splitlines() if (m := _BULLET_RE.match(ln))]


def numbered_items(text: str) -> list[tuple[int, str]]:
    """(number, text) of every numbered item (``1.`` or ``1)``)."""
    return [(int(m.group(1)), m.group(2)) for ln in text.splitlines() if (m := _NUMBERED_RE.match(ln))]


def lists(text: str) -> list[int]:
    """Item counts of the lists in the text (runs of bullet/numbered items, blank lines allowed inside)."""
    sizes: list[int] = []
    current = 0
    for ln in text.splitlines():
        if _BULLET_RE.match(ln) or _NUMBERED_RE.match(ln):
            current += 1
        elif ln.strip():
            if current:
                sizes.append(current)
            current = 0
    if current:
        sizes.append(current)
    return sizes


def headings(text: str) -> list[tuple[int, str]]:
    """(level, heading text) of every markdown ATX heading."""
    return [(len(m.group(1)), m.group(2)) for ln in text.splitlines() if (m := _HEADING_RE.match(ln))]


# --------------------------------------------------------------------------------------------- helpers


def _in_range(n: int, args: Args) -> bool:
    """``min <= n <= max`` with either bound optional."""
    lo, hi = args.get("min"), args.get("max")
    return (lo is None or n >= lo) and (hi is None or n <= hi)


def _pick(items: list[Any], position: int) -> Any | None:
    """Item at a 1-based (or negative, from the end) position, or None when out of range."""
    if position > 0 and position <= len(items):
        return items[position - 1]
    if position < 0 and -position <= len(items):
        return items[position]
    return None


def _keyword_re(keyword: str) -> re.Pattern[str]:
    """Case-insensitive whole-word pattern for a keyword or phrase."""
    return re.compile(r"(?<![^\W_])" + re.escape(keyword) + r"(?![^\W_])", re.IGNORECASE)


def _lead_strip(text: str) -> str:
    """Text without leading whitespace, markdown emphasis/heading/quote marks or opening quotes."""
    return text.lstrip(" \t\n*_#>\"'\u201c\u2018")


def _starts_with(text: str, prefix: str) -> bool:
    """Case-insensitive prefix match that does not end in the middle of a word."""
    text = _lead_strip(text)
    if not text.lower().startswith(prefix.lower()):
        return False
    rest = text[len(prefix):]
    return not (prefix[-1:].isalnum() and rest[:1].isalnum())


def _strip_fence(text: str) -> str:
    """The text without one surrounding code fence (```lang ... ```), if it has one."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        if body.rstrip().endswith("```"):
            body = body.rstrip()[:-3]
    return body.strip()


def _is_emoji(ch: str) -> bool:
    """True for a pictographic code point in one of the emoji blocks."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES)


def _strictly(values: list[int], order: str) -> bool:
    """At least two values, strictly increasing or decreasing as ``order`` says."""
    if len(values) < 2:
        return False
    pairs = list(zip(values, values[1:]))
    if order == "increasing":
        return all(a < b for a, b in pairs)
    if order == "decreasing":
        return all(a > b for a, b in pairs)
    raise ValueError(f"order must be 'increasing' or 'decreasing', not {order!r}")


# -------------------------------------------------------------------------------------------- checkers


def _word_count(a: Args, r: str) -> bool:
    return _in_range(len(words(r)), a)


def _sentence_count(a: Args, r: str) -> bool:
    return _in_range(len(sentences(r)), a)


def _paragraph_count(a: Args, r: str) -> bool:
    return _in_range(len(paragraphs(r)), a)


def _char_count(a: Args, r: str) -> bool:
    return _in_range(len(r.strip()), a)


def _line_count(a: Args, r: str) -> bool:
    return _in_range(len(lines(r)), a)


def _max_sentence_words(a: Args, r: str) -> bool:
    sents = sentences(r)
    return bool(sents) and all(len(words(s)) <= a["n"] for s in sents)


def _max_word_length(a: Args, r: str) -> bool:
    return all(sum(c.isalpha() for c in w) <= a["n"] for w in words(r))


def _bullet_max_words(a: Args, r: str) -> bool:
    items = bullet_items(r)
    return bool(items) and all(len(words(i)) <= a["n"] for i in items)


def _paragraph_words(a: Args, r: str) -> bool:
    paras = paragraphs(r)
    return bool(paras) and all(_in_range(len(words(p)), a) for p in paras)


def _sentences_per_paragraph(a: Args, r: str) -> bool:
    paras = paragraphs(r)
    return bool(paras) and all(_in_range(len(sentences(p)), a) for p in paras)


def _question_count(a: Args, r: str) -> bool:
    return _in_range(r.count("?"), a)


def _exclamation_count(a: Args, r: str) -> bool:
    return _in_range(r.count("!"), a)


def _hashtag_count(a: Args, r: str) -> bool:
    return _in_range(len(_HASHTAG_RE.findall(r)), a)


def _emoji_count(a: Args, r: str) -> bool:
    flags = sum(0x1F1E6 <= ord(c) <= 0x1F1FF for c in r) // 2
    return _in_range(sum(_is_emoji(c) for c in r) + flags, a)


def _digit_count(a: Args, r: str) -> bool:
    return _in_range(sum(c in "0123456789" for c in r), a)


def _bullet_count(a: Args, r: str) -> bool:
    return _in_range(len(bullet_items(r)), a)


def _numbered_item_count(a: Args, r: str) -> bool:
    return _in_range(len(numbered_items(r)), a)


def _heading_count(a: Args, r: str) -> bool:
    level = a.get("level")
    return _in_range(sum(1 for lv, _ in headings(r) if level is None or lv == level), a)


def _stanza_count(a: Args, r: str) -> bool:
    stanzas = paragraphs(r)
    per = a.get("lines_per_stanza")
    return _in_range(len(stanzas), a) and (per is None or all(len(lines(s)) == per for s in stanzas))


def _keyword_count(a: Args, r: str) -> bool:
    return _in_range(len(_keyword_re(a["keyword"]).findall(r)), a)


def _url_count(a: Args, r: str) -> bool:
    return _in_range(len(_URL_RE.findall(r)), a)


def _starts_with_phrase(a: Args, r: str) -> bool:
    return _starts_with(r, a["phrase"])


def _last_word(a: Args, r: str) -> bool:
    ws = words(r)
    return bool(ws) and ws[-1].lower() == a["word"].lower()


def _paragraph_starts_with(a: Args, r: str) -> bool:
    paras = paragraphs(r)
    pos = a.get("paragraph")
    targets = paras if pos is None else [_pick(paras, pos)]
    return bool(targets) and all(p is not None and _starts_with(p, a["prefix"]) for p in targets)


def _paragraph_first_word_in(a: Args, r: str) -> bool:
    allowed = {w.lower() for w in a["words"]}
    paras = paragraphs(r)
    firsts = [(words(p) or [""])[0].lower() for p in paras]
    return bool(paras) and all(w in allowed for w in firsts)


def _paragraph_ends_with(a: Args, r: str) -> bool:
    paras = paragraphs(r)
    pos = a.get("paragraph")
    targets = paras if pos is None else [_pick(paras, pos)]
    return bool(targets) and all(
        p is not None and p.rstrip(" \t*_\"'\u201d\u2019").endswith(a["suffix"]) for p in targets
    )


def _ends_with_question(a: Args, r: str) -> bool:
    return r.rstrip(" \t\n*_\"'\u201d\u2019)").endswith("?")


def _nth_sentence_contains(a: Args, r: str) -> bool:
    sent = _pick(sentences(r), a["n"])
    return sent is not None and bool(_keyword_re(a["keyword"]).search(sent))


def _keyword_in_paragraph(a: Args, r: str) -> bool:
    pattern = _keyword_re(a["keyword"])
    counts = [len(pattern.findall(p)) for p in paragraphs(r)]
    pos = a["paragraph"]
    if _pick(counts, pos) is None:
        return False
    index = pos - 1 if pos > 0 else len(counts) + pos
    target = counts[index]
    others = sum(counts) - target
    count = a.get("count")
    return target >= 1 and others == 0 and (count is None or target == count)


def _sentence_length_order(a: Args, r: str) -> bool:
    return _strictly([len(words(s)) for s in sentences(r)], a["order"])


def _paragraph_length_order(a: Args, r: str) -> bool:
    return _strictly([len(words(p)) for p in paragraphs(r)], a["order"])


def _list_size_order(a: Args, r: str) -> bool:
    return _strictly(lists(r), a["order"])


def _table_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _markdown_table(a: Args, r: str) -> bool:
    """Some table (header row, ``---`` separator row, data rows; every row starts and ends with ``|``)
    has ``columns`` header cells, the same cell count in every row, and ``rows`` data rows."""
    blocks: list[list[str]] = []
    previous_was_row = False
    for ln in r.splitlines():
        s = ln.strip()
        is_row = len(s) > 1 and s.startswith("|") and s.endswith("|")
        if is_row and previous_was_row:
            blocks[-1].append(s)
        elif is_row:
            blocks.append([s])
        previous_was_row = is_row
    for block in blocks:
        if len(block) < 2 or not all(re.fullmatch(r":?-+:?", c) for c in _table_cells(block[1])):
            continue
        ncols = len(_table_cells(block[0]))
        if any(len(_table_cells(row)) != ncols for row in block):
            continue
        if a.get("columns") in (None, ncols) and a.get("rows") in (None, len(block) - 2):
            return True
    return False


def _code_block(a: Args, r: str) -> bool:
    langs = [m.group(1).lower() for m in _FENCE_BLOCK_RE.finditer(r)]
    want = a.get("language")
    if want is None:
        return bool(langs)
    accepted = _LANG_ALIASES.get(want.lower(), {want.lower()})
    return any(lang in accepted for lang in langs)


_YAML_MAP_RE = re.compile(r"^(\s*)(?:-\s+)?(\"[^\"]+\"|'[^']+'|[^\s:#\-\[{][^\s:#]*)\s*:(?:\s+\S.*)?\s*$")
_YAML_ITEM_RE = re.compile(r"^(\s*)-(?:\s+\S.*)?$")


def _yaml_format(a: Args, r: str) -> bool:
    """Every line is ``key: value``, ``key:``, ``- item``, a comment, ``---``, or a more-indented line of a
    block scalar (after a line ending in ``|`` or ``>``); and the top-level keys include ``keys``. Unquoted
    keys may not contain spaces, so a prose line such as ``Here is the config:`` fails."""
    body = _strip_fence(r)
    if not body:
        return False
    top_keys: set[str] = set()
    block_indent: int | None = None
    for ln in body.splitlines():
        if not ln.strip():
            continue
        indent = len(ln) - len(ln.lstrip())
        if block_indent is not None:
            if indent > block_indent:
                continue
            block_indent = None
        s = ln.strip()
        if s.startswith("#") or s == "---":
            continue
        m = _YAML_MAP_RE.match(ln)
        if m:
            if indent == 0 and not s.startswith("-"):
                top_keys.add(m.group(2).strip("\"'"))
        elif not _YAML_ITEM_RE.match(ln):
            return False
        if re.search(r":\s*[|>][-+]?\s*$", ln):
            block_indent = indent
    return set(a.get("keys") or []) <= top_keys


def _csv_format(a: Args, r: str) -> bool:
    """Parses as CSV with >= 2 columns, the same number in every row; the first row is the header.
    Optional ``header`` (names, case-insensitive), ``columns`` and ``rows`` (data rows, header excluded)."""
    rows = list(csv.reader(ln for ln in _strip_fence(r).splitlines() if ln.strip()))
    if not rows or len(rows[0]) < 2 or any(len(row) != len(rows[0]) for row in rows):
        return False
    header = a.get("header")
    if header is not None and [c.strip().lower() for c in rows[0]] != [h.lower() for h in header]:
        return False
    return a.get("columns") in (None, len(rows[0])) and a.get("rows") in (None, len(rows) - 1)


def _json_keys(a: Args, r: str) -> bool:
    """The response (optionally fenced) is a JSON object with every key in ``keys``, or a non-empty JSON
    array whose every element is such an object."""
    try:
        data = json.loads(_strip_fence(r))
    except ValueError:
        return False
    objs = data if isinstance(data, list) and data else [data]
    return all(isinstance(o, dict) and set(a["keys"]) <= set(o) for o in objs)


def _iso_dates(a: Args, r: str) -> bool:
    """At least one YYYY-MM-DD date and no date in another format (3/4/2024, March 4, 4th of July)."""
    return bool(_ISO_DATE_RE.search(r)) and not _SLASH_DATE_RE.search(r) and not _WORDY_DATE_RE.search(r)


def _title_case_headings(a: Args, r: str) -> bool:
    """At least one heading, and in every heading each word starting with a letter is capitalized, except
    small words (a, the, of, ...) that are not the first word."""
    hs = headings(r)
    if not hs:
        return False
    for _, text in hs:
        ws = re.findall(r"[^\W\d_][\w'\-]*", text)
        for i, w in enumerate(ws):
            if not w[0].isupper() and not (i > 0 and w.lower() in _TITLE_SMALL_WORDS):
                return False
    return True


def _acrostic(a: Args, r: str) -> bool:
    """First letters of the lines (``unit: line``, the default) or paragraphs (``unit: paragraph``) spell
    ``word``. A title line (``<<...>>``) or a markdown heading line is skipped."""
    if a.get("unit", "line") == "paragraph":
        units = paragraphs(r)
    else:
        units = [ln for ln in lines(r) if not (ln.startswith("<<") and ln.endswith(">>")) and not _HEADING_RE.match(ln)]
    initials = ""
    for u in units:
        letter = next((c for c in u if c.isalpha()), "")
        initials += letter
    target = "".join(c for c in a["word"] if c.isalpha())
    return initials.lower() == target.lower()


def _numbered_list(a: Args, r: str) -> bool:
    """At least two numbered items, numbered 1, 2, 3... (a new list may restart at 1), and no bullet items."""
    nums = [n for n, _ in numbered_items(r)]
    if len(nums) < 2 or nums[0] != 1 or bullet_items(r):
        return False
    return all(cur == prev + 1 or cur == 1 for prev, cur in zip(nums, nums[1:]))


def _no_markdown(a: Args, r: str) -> bool:
    """No headings, bullet items, bold/italic markers, code fences or table rows (numbered lines are allowed)."""
    if headings(r) or bullet_items(r) or "```" in r or "**" in r or "__" in r:
        return False
    if re.search(r"(?<![\w*])\*[^*\s][^*\n]*\*(?![\w*])", r):
        return False
    return not any(ln.startswith("|") and ln.endswith("|") and len(ln) > 1 for ln in lines(r))


def _no_letter(a: Args, r: str) -> bool:
    return a["letter"].lower() not in r.lower()


def _same_initial_letter(a: Args, r: str) -> bool:
    ws = words(r)
    return bool(ws) and all(w[0].lower() == a["letter"].lower() for w in ws)


def _forbidden_chars(a: Args, r: str) -> bool:
    return not any(c in r for c in a["chars"])


def _normalize_option(text: str) -> str:
    return text.strip().strip("*_`\"'\u201c\u201d\u2018\u2019 ").rstrip(".!").strip().lower()


def _constrained_options(a: Args, r: str) -> bool:
    return _normalize_option(r) in {_normalize_option(o) for o in a["options"]}


_CHECKERS: dict[str, tuple[Callable[[Args, str], bool], str]] = {
    "word_count": (_word_count, "number of words within [min, max]"),
    "sentence_count": (_sentence_count, "number of sentences within [min, max]"),
    "paragraph_count": (_paragraph_count, "number of blank-line-separated paragraphs within [min, max]"),
    "char_count": (_char_count, "number of characters (response stripped) within [min, max]"),
    "line_count": (_line_count, "number of non-blank lines within [min, max]"),
    "max_sentence_words": (_max_sentence_words, "no sentence has more than n words"),
    "max_word_length": (_max_word_length, "no word has more than n letters"),
    "bullet_max_words": (_bullet_max_words, "there are bullet items and none has more than n words"),
    "paragraph_words": (_paragraph_words, "every paragraph has a word count within [min, max]"),
    "sentences_per_paragraph": (_sentences_per_paragraph, "every paragraph has a sentence count within [min, max]"),
    "question_count": (_question_count, "number of '?' characters within [min, max]"),
    "exclamation_count": (_exclamation_count, "number of '!' characters within [min, max]"),
    "hashtag_count": (_hashtag_count, "number of #hashtags within [min, max]"),
    "emoji_count": (_emoji_count, "number of emoji within [min, max]"),
    "digit_count": (_digit_count, "number of digit characters 0-9 within [min, max]"),
    "bullet_count": (_bullet_count, "number of bullet items within [min, max]"),
    "numbered_item_count": (_numbered_item_count, "number of numbered items (1. / 1)) within [min, max]"),
    "heading_count": (_heading_count, "number of markdown headings (of `level`, if given) within [min, max]"),
    "stanza_count": (_stanza_count, "number of stanzas within [min, max], each with `lines_per_stanza` lines if given"),
    "keyword_count": (_keyword_count, "whole-word occurrences of `keyword` within [min, max]"),
    "url_count": (_url_count, "number of http(s) URLs within [min, max]"),
    "starts_with": (_starts_with_phrase, "the response begins with `phrase`"),
    "last_word": (_last_word, "the last word of the response is `word`"),
    "paragraph_starts_with": (_paragraph_starts_with, "paragraph `paragraph` (every one if null) begins with `prefix`"),
    "paragraph_first_word_in": (_paragraph_first_word_in, "every paragraph's first word is one of `words`"),
    "paragraph_ends_with": (_paragraph_ends_with, "paragraph `paragraph` (every one if null) ends with `suffix`"),
    "ends_with_question": (_ends_with_question, "the response ends with a question mark"),
    "nth_sentence_contains": (_nth_sentence_contains, "sentence `n` contains `keyword`"),
    "keyword_in_paragraph": (
        _keyword_in_paragraph,
        "`keyword` occurs only in paragraph `paragraph` (exactly `count` times if given)",
    ),
    "sentence_length_order": (_sentence_length_order, "each sentence has more (increasing) / fewer (decreasing) words than the one before"),
    "paragraph_length_order": (_paragraph_length_order, "each paragraph has more / fewer words than the one before"),
    "list_size_order": (_list_size_order, "two or more lists, each with more / fewer items than the one before"),
    "markdown_table": (_markdown_table, "a markdown table with `columns` columns and `rows` data rows (each if given)"),
    "code_block": (_code_block, "a fenced code block, tagged with `language` if given"),
    "yaml_format": (_yaml_format, "the response is YAML-shaped and has the top-level `keys` if given"),
    "csv_format": (_csv_format, "the response is CSV (first row header) matching `header`/`columns`/`rows` if given"),
    "json_keys": (_json_keys, "the response is a JSON object (or array of objects) with all of `keys`"),
    "iso_dates": (_iso_dates, "it has dates and all are written YYYY-MM-DD"),
    "title_case_headings": (_title_case_headings, "there are headings and every heading is in Title Case"),
    "acrostic": (_acrostic, "first letters of the lines/paragraphs spell `word`"),
    "numbered_list": (_numbered_list, "the items form a numbered list 1, 2, 3... and there are no bullets"),
    "no_markdown": (_no_markdown, "plain text: no headings, bullets, emphasis, code fences or tables"),
    "no_letter": (_no_letter, "the letter `letter` (either case) never appears"),
    "same_initial_letter": (_same_initial_letter, "every word starts with `letter`"),
    "forbidden_chars": (_forbidden_chars, "none of the characters in `chars` appears"),
    "constrained_options": (_constrained_options, "the whole response is one of `options` (case and final . ! ignored)"),
}

KINDS: dict[str, str] = {kind: desc for kind, (_, desc) in _CHECKERS.items()}
"""Every outside kind -> one-line description."""


def check(kind: str, args: dict, response: str) -> bool | None:
    """True/False: whether ``response`` satisfies the outside constraint ``kind`` with ``args``.

    None for a kind this module does not know, which includes every IFEval instruction id
    (``"keywords:existence"`` ...): those are judged elsewhere.
    """
    entry = _CHECKERS.get(kind)
    if entry is None:
        return None
    return entry[0](args or {}, response)
