"""The retrieval policy: which stored edit (if any) a question is about, and which go along.

Every path that puts stored edits into a prompt asks this module: `EditableLM.prompt/ask/score`,
evaluation's memory setting, MQuAKE (single shot and hop by hop) and the LangChain retriever and
RAG chain. It turns (question, memory) into a `Selection`: the edit placed as the fact, the others
placed as distractors, or nothing. The defaults (how many candidates, the similarity threshold)
are defined here once; the stores' own `retrieve(k=..., threshold=...)` take them as arguments.

Today's policy: the top `top_k` candidates from the store's index whose cosine similarity reaches
`threshold`; the best is the fact, the rest are distractors; a caller-supplied `accept` check (the
fact policy of `editkit.safety`) drops or refuses candidates that must never reach a prompt.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .records import DEFAULT_NAMESPACE, RetrievedEdit

DEFAULT_TOP_K = 4
"""Candidates per question: the best becomes the fact, the rest distractors."""
DEFAULT_THRESHOLD = 0.5
"""Minimum cosine similarity (all-MiniLM-L6-v2) for a stored edit to count as about a question."""


class RetrievalSettings(BaseModel):
    """Which stored edits reach the prompt: top-k above a cosine threshold, in one namespace."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=200,
                       description="best is the edit, the rest distractors")
    threshold: float = Field(DEFAULT_THRESHOLD, ge=-1.0, le=1.0,
                             description="minimum cosine similarity")
    namespace: str = DEFAULT_NAMESPACE


@dataclass
class Selection:
    """What the policy placed for one question: the fact (or None) and the distractors."""

    edit: RetrievedEdit | None = None
    distractors: list[RetrievedEdit] = field(default_factory=list)

    @property
    def fact(self) -> str | None:
        return self.edit.edit.text if self.edit is not None else None

    @property
    def distractor_texts(self) -> list[str]:
        return [d.edit.text for d in self.distractors]


def select(memory: Any, question: str, settings: RetrievalSettings, *,
           namespace: str | None = None, k: int | None = None,
           accept: Callable[[RetrievedEdit], bool] | None = None) -> Selection:
    """Retrieve candidates for `question` and split them into fact and distractors.

    memory: any `editkit.memory.EditStore`. namespace / k override the settings' for this call
    (evaluation asks for 1 + its number of distractors). accept: returns False for a candidate
    that must be left out (it may raise instead, to refuse the whole question).
    """
    hits = memory.retrieve(question, k=settings.top_k if k is None else k,
                           threshold=settings.threshold,
                           namespace=settings.namespace if namespace is None else namespace)
    if accept is not None:
        hits = [h for h in hits if accept(h)]
    return Selection(hits[0], hits[1:]) if hits else Selection()
