"""Retrieval settings and their defaults, defined once: the policy (`policy.select`) reads them,
the stores' `retrieve(k=..., threshold=...)` take them as arguments."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..records import DEFAULT_NAMESPACE
from .gate import Judge

DEFAULT_TOP_K = 4
"""Candidates per question: the best becomes the fact, the rest distractors."""
DEFAULT_THRESHOLD = 0.5
"""The threshold gate's minimum cosine similarity (all-MiniLM-L6-v2) for an edit to be placed."""
DEFAULT_CANDIDATES = 8
"""Edits retrieved per question view before the relevance decision."""
Gate = Literal["learned", "threshold"]
DEFAULT_GATE: Gate = "learned"


class RetrievalSettings(BaseModel):
    """Which stored edits reach the prompt: top-k above a cosine threshold, in one namespace."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=200,
                       description="best is the edit, the rest distractors")
    threshold: float = Field(DEFAULT_THRESHOLD, ge=-1.0, le=1.0,
                             description="minimum cosine similarity (threshold gate; and the "
                                         "candidate cut-off of the learned gate when set lower "
                                         "than the gate's own)")
    namespace: str = DEFAULT_NAMESPACE
    gate: Gate = Field(DEFAULT_GATE, description="learned: the shipped relevance gate decides; "
                                                 "threshold: the cosine threshold alone")
    gate_threshold: float | None = Field(None, ge=0.0, le=1.0,
                                         description="learned gate's probability cut-off; "
                                                     "None = the one calibrated on validation")
    gate_file: str | None = Field(None, description="learned gate: an artifact trained with "
                                                    "`editkit.train.gate.train_gate` (its "
                                                    "embedder must be the memory's); None = the "
                                                    "one shipped for the embedder")
    candidates: int = Field(DEFAULT_CANDIDATES, ge=1, le=200,
                            description="edits retrieved per question view before the gate")
    judge: Any = Field(None, exclude=True,
                       description="your own relevance step (a `Judge`: a cross-encoder, a "
                                   "classifier) instead of the shipped gate; needs gate "
                                   "'learned', and is not written into reports")

    @field_validator("judge")
    @classmethod
    def _is_judge(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, Judge):
            raise ValueError(f"judge must implement editkit.retrieval.Judge (probabilities("
                             f"question, candidates), threshold, candidate_threshold), got "
                             f"{type(v).__name__}")
        return v

    @model_validator(mode="after")
    def _judge_needs_learned_gate(self) -> RetrievalSettings:
        if self.judge is not None and self.gate != "learned":
            raise ValueError("a judge decides relevance in place of the learned gate; "
                             "gate='threshold' would ignore it (leave gate 'learned')")
        if self.judge is not None and self.gate_file is not None:
            raise ValueError("give a judge or a gate_file, not both")
        return self
