"""Judging short greedy generations against a gold answer and its aliases (MQuAKE).

- `extract_answer`: the answer span of a generation (first line or clause, lead-ins and echoes of
  the query stripped). MQuAKE's released code (MeLLo notebook) judges an extracted final answer,
  not the raw generation.
- `exact_match`: MQuAKE's criterion, `ans == new_answer or ans in new_answer_alias`, on that span.
  Both sides are compared after `normalize` (case, accents, punctuation) with a leading "the"
  dropped; the reference compares raw strings (docs/metrics.md, audit D-10).
- `matches`: looser, the span *contains* an answer as whole words (hop-by-hop chains use it, since a
  hop's answer feeds the next hop as a subject).

`editkit.metrics.contains_answer` (a substring anywhere in the generation) is kept only as a
recorded legacy column: it counts `'Kyiv, Ukraine'` for `['UK']` and `'Indiana'` for `['India']`.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_LEAD_INS = re.compile(r"^(?:(?:the\s+)?answer(?:\s+is)?\s*:?|a\s*:)\s*", re.IGNORECASE)
_BREAK = re.compile(r"\n|[.;!?](?=\s|$)|,\s|\s\(|\s+in\s+\d")
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "đ": "d", "ł": "l",
                       "ı": "i", "þ": "th", "ð": "d"})


def normalize(text: str) -> str:
    """Lower case, accents folded (é → e, ø → o), '&' → 'and', every non-alphanumeric run → one
    space."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c)).translate(_FOLD)
    folded = folded.replace("&", " and ")
    return " ".join(re.sub(r"[\W_]+", " ", folded).split())


def extract_answer(generation: str, echoes: Sequence[str] = ()) -> str:
    """The answer span of a short greedy generation: what is passed to the next hop and judged.

    A lead-in ("The answer is:", "A:", also when a line break follows it) and an echo of the query
    (e.g. the hop's cloze "The capital of Latvia is" before "Tromsø") are stripped; then the text
    is cut at the first line or sentence/clause break ("\\n", ". ", ", ", ";", " (", " in <year>").
    """
    text = generation.strip()
    for _ in range(2):  # "The answer is: The capital of X is Y", "The answer is:\n\nY"
        text = _LEAD_INS.sub("", text, count=1).strip()
        for echo in echoes:
            e = echo.strip().rstrip("?").strip()
            if e and text.lower().startswith(e.lower()):
                text = text[len(e):].lstrip(" ?:").strip()
    return _BREAK.split(text, maxsplit=1)[0].strip(" \"'`")


def _key(text: str) -> str:
    return normalize(text).removeprefix("the ")


def exact_match(span: str, answers: Sequence[str]) -> bool:
    """True if the span *is* the answer or one of its aliases (MQuAKE's exact match), compared
    after `normalize` with a leading "the" dropped on both sides."""
    got = _key(span)
    return bool(got) and any(got == _key(a) for a in answers)


def matches(span: str, answers: Sequence[str]) -> bool:
    """True if the span contains an answer or alias as whole words (after `normalize`)."""
    hay = f" {normalize(span)} "
    for a in answers:
        n = _key(a)
        if n and f" {n} " in hay:
            return True
    return False
