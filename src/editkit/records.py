"""Validated records at the SDK boundary: facts in, stored edits out, answers back."""
from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from .errors import FactTooLongError, InvalidInputError
from .limits import MAX_FACT_CHARS, MAX_QUESTION_CHARS  # noqa: F401  (defined once, there)

DEFAULT_NAMESPACE = "default"


def clean_text(value: Any, what: str, max_chars: int) -> str:
    """Strip and check user text: a non-empty str, valid Unicode, no control characters, bounded.

    Newlines and tabs are allowed; other control characters (NUL, escape, ...) are refused because
    they have no place in a fact and can smuggle terminal or tokenizer tricks.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}.")
    text = value.strip()
    if not text:
        raise InvalidInputError(f"{what} is empty; give a non-empty sentence.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} contains invalid Unicode (lone surrogates).") from None
    bad = sorted({hex(ord(c)) for c in text
                  if unicodedata.category(c) == "Cc" and c not in "\n\t"})
    if bad:
        raise InvalidInputError(f"{what} contains control characters {', '.join(bad[:5])}; "
                                "remove them.")
    if len(text) > max_chars:
        raise FactTooLongError(f"{what} has {len(text)} characters; the limit is {max_chars}. "
                               "Split it into shorter facts.")
    return text


def check_namespace(value: Any) -> str:
    ns = clean_text(value, "namespace", 200)
    if "\n" in ns or "\t" in ns:
        raise InvalidInputError("namespace must be a single line.")
    return ns


def check_key(value: Any) -> str:
    """A slot key ("warehouse/ghent/shipping"): one line of at most 200 characters."""
    key = clean_text(value, "key", 200)
    if "\n" in key or "\t" in key:
        raise InvalidInputError("key must be a single line.")
    return key


class FactInput(BaseModel):
    """One edit as a user gives it: the fact text and, optionally, its (s, r, o) triple and a
    slot key. Two edits with the same `key` (or, without keys, the same subject and relation) are
    values of one slot: the newer supersedes the older (`retrieval.updates`)."""

    model_config = ConfigDict(extra="forbid")
    text: str
    subject: str | None = None
    relation: str | None = None
    object: str | None = None
    key: str | None = None

    @classmethod
    def parse(cls, value: Any) -> FactInput:
        """Accept a string, a dict or a FactInput; raise InvalidInputError otherwise."""
        if isinstance(value, FactInput):
            data = value.model_dump()
        elif isinstance(value, str):
            data = {"text": value}
        elif isinstance(value, dict):
            data = value
        else:
            raise InvalidInputError(f"A fact must be a string or a dict with 'text', got "
                                    f"{type(value).__name__}.")
        try:
            raw = cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid fact {data!r}: {exc}") from exc
        return cls(
            text=clean_text(raw.text, "fact", MAX_FACT_CHARS),
            **{k: (clean_text(getattr(raw, k), k, 300) if getattr(raw, k) is not None else None)
               for k in ("subject", "relation", "object")},
            key=None if raw.key is None else check_key(raw.key),
        )


class Edit(BaseModel):
    """An edit stored in memory.

    A live edit has `superseded_by` None and is what retrieval serves. A newer edit of the same
    slot supersedes it: it stays in history (`edits(history=True)`) with `superseded_by` (the
    newer edit's id) and `superseded_at` (when), and is never served again unless the newer one
    is forgotten. `supersedes` lists the edits this one retired (filled where the memory reports
    them: the return value of `add`, and history listings).
    """

    model_config = ConfigDict(frozen=True)
    id: str
    text: str
    subject: str | None = None
    relation: str | None = None
    object: str | None = None
    key: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    created_at: float
    superseded_by: str | None = None
    superseded_at: float | None = None
    supersedes: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        """Whether retrieval serves this edit now (not superseded)."""
        return self.superseded_by is None

    def live_at(self, t: float) -> bool:
        """Whether this edit was live at time `t` (seconds since the epoch): stored by then and
        not yet superseded. A forgotten edit is gone from history, as if never made."""
        return self.created_at <= t and (self.superseded_at is None or self.superseded_at > t)


class RetrievedEdit(BaseModel):
    """An edit found for a question, with its cosine similarity to it."""

    model_config = ConfigDict(frozen=True)
    edit: Edit
    score: float


class Answer(BaseModel):
    """What `ask()` returns: the text plus how it was produced."""

    text: str
    mode: str
    edit: RetrievedEdit | None = Field(None, description="the edit placed in the prompt")
    distractors: list[RetrievedEdit] = Field(default_factory=list)
    prompt_tokens: int
    completion_tokens: int = Field(description="generated tokens, EOS and a stop's tokens incl.")
    finish_reason: Literal["stop", "length"] = Field(
        "stop", description="'stop': EOS or a stop sequence ended it; 'length': max_new_tokens")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fact(self) -> str | None:
        """The text of the edit placed in the prompt (None: no edit applied); `edit` holds the
        full retrieval record (id, namespace, similarity)."""
        return self.edit.edit.text if self.edit is not None else None

    def __str__(self) -> str:
        return self.text


class CandidateScore(BaseModel):
    """Mean log-probability of one candidate continuation (teacher forced)."""

    candidate: str
    mean_logprob: float
    token_logprobs: list[float]


class ScoreResult(BaseModel):
    """What `score()` returns: one entry per candidate, in the order given."""

    mode: str
    scores: list[CandidateScore]
    edit: RetrievedEdit | None = None
    distractors: list[RetrievedEdit] = Field(default_factory=list)
    prompt_tokens: int

    @property
    def best(self) -> str:
        return max(self.scores, key=lambda s: s.mean_logprob).candidate

    def as_dict(self) -> dict[str, float]:
        return {s.candidate: s.mean_logprob for s in self.scores}
