"""The relevance gate: is a retrieved edit about the question's subject, or only similar to it?

Dense retrieval ranks facts by sentence similarity, and similarity is not relevance. A question
about another subject with the same relation ("Porsche 911 GT1 is produced by" next to the edit
"Porsche 911, created by Honda") sits at cosine ~0.85 from the edit, closer than many paraphrases
of the edit itself; a paraphrase behind an unrelated sentence ("References ... Porsche 911 is
developed by") sits far from it. A cosine threshold cannot separate the two, so it trades one
paraphrase in three (measured) against a third of the neighbourhood questions.

What separates them is *which words* the question and the fact share. Subject names are rare
words, relation words are common ones. The gate reads, for each retrieved candidate, the cosine and
a few inverse-document-frequency weighted overlap features, on the whole question and on its last
sentence (the one that holds the question, free of noise prefixes):

- how much of the fact's (rare-word) mass the question covers, and vice versa;
- the rarest question word that the fact lacks ("GT1": another entity), and the rarest shared one;
- whether the fact's two rarest words (usually its subject) appear in the question.

A logistic regression over them (22 weights: the overlap features get separate slopes for
questions and cloze prompts) gives P(the edit is about the question). It is trained on the
CounterFact and zsRE train splits (rewrite and paraphrase questions with their own edit = in
scope; neighbourhood questions and every other retrieved candidate = out of scope, with noise
prefixes added to some questions, as CounterFact paraphrases have them), and its decision
threshold is calibrated on the CounterFact validation split and a zsRE hold-out. The artifact is
one JSON file (weights, the document frequencies it was trained with, the threshold, provenance),
shipped per embedder, like the P-Tokens.

`Judge` is the relevance step's interface: `RelevanceGate` is the shipped one, and any object with
`probabilities(question, candidates)`, `threshold` and `candidate_threshold` (a cross-encoder, your
own classifier) can take its place (`RetrievalSettings(judge=...)`, `from_pretrained(gate=...)`).

This module holds only what runs at question time (features, probabilities, loading the
artifact); the training (mining the pairs, the fit, the calibration) is `editkit.train.gate`.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ArtifactError
from ..fileio import atomic_write

GATE_FORMAT = "editkit-relevance-gate/1"
_WORD = re.compile(r"\w+")
# A sentence ends at . ! ? followed by white space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

FEATURE_NAMES = (
    *(f"{view}_{name}" for view in ("full", "last") for name in (
        "fact_covered", "question_covered", "rarest_uncovered", "rarest_shared",
        "fact_top2_in_question")),
    "cosine", "min_rarest_uncovered", "max_question_covered", "max_fact_covered",
    # Question form ("Which business did X release?", as in zsRE and chat) against a cloze prompt
    # ("X is developed by", CounterFact): the same overlap means different things in the two (a
    # question's fact carries a long answer the question lacks, and rewordings bring rare words),
    # so each overlap feature gets its own slope for questions.
    "is_question", "question_x_cosine", "question_x_min_rarest_uncovered",
    "question_x_max_question_covered", "question_x_max_fact_covered",
    "bias",
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore; any script)."""
    return _WORD.findall(text.lower())


def question_views(question: str) -> list[str]:
    """The texts a question is matched by: itself, and its last sentence when that differs.

    CounterFact paraphrases (and chat messages) often carry an unrelated sentence before the
    question ("References External links ... Porsche 911 is developed by"); the last sentence is
    the question without it. A last sentence of one word ("They play") is too little to match.
    """
    parts = [p.strip() for p in _SENTENCE_END.split(question) if p.strip()]
    last = parts[-1] if parts else question
    return [question, last] if last != question.strip() and len(words(last)) >= 2 else [question]


class GateArtifact(BaseModel):
    """The saved gate: weights over FEATURE_NAMES, document frequencies, threshold, provenance."""

    model_config = ConfigDict(extra="forbid")
    format: str = GATE_FORMAT
    embedder: str
    features: list[str]
    weights: list[float]
    threshold: float = Field(ge=0.0, le=1.0)
    candidate_threshold: float = Field(ge=-1.0, le=1.0)
    n_docs: int = Field(ge=1)
    doc_freq: dict[str, int]
    provenance: dict[str, Any] = {}


@dataclass
class Candidate:
    """One retrieved edit to judge: its text and its best cosine over the question's views."""

    text: str
    cosine: float


@runtime_checkable
class Judge(Protocol):
    """Decides which retrieved edits are about a question: the relevance step of the policy.

    `probabilities` gives P(about the question) per candidate (its text and its best cosine over
    the question's views); the policy keeps those at or above `threshold`, most probable first.
    `candidate_threshold` is the cosine from which retrieved edits reach the judge at all (the
    policy uses the lower of it and `RetrievalSettings.threshold`). `RelevanceGate` is the
    shipped judge; a cross-encoder or a classifier of your own fits the same three names.
    """

    threshold: float
    candidate_threshold: float

    def probabilities(self, question: str, candidates: Sequence[Candidate]) -> list[float]: ...


class RelevanceGate:
    """P(edit is about the question) from cosine + IDF-weighted word overlap (see module doc);
    the shipped `Judge`."""

    def __init__(self, artifact: GateArtifact) -> None:
        if artifact.format != GATE_FORMAT:
            raise ArtifactError(f"Relevance gate format {artifact.format!r} is not "
                                f"{GATE_FORMAT!r}; retrain it with this editkit version.")
        if list(artifact.features) != list(FEATURE_NAMES) or \
                len(artifact.weights) != len(FEATURE_NAMES):
            raise ArtifactError("The relevance gate was trained on other features than this "
                                "editkit version computes; retrain it (editkit.train.gate).")
        self.artifact = artifact
        self.weights = np.asarray(artifact.weights, dtype=np.float64)
        self.threshold = artifact.threshold
        self.candidate_threshold = artifact.candidate_threshold
        self._max_idf = math.log(artifact.n_docs + 1)
        self._idf_cache: dict[str, float] = {}

    # ---- features -----------------------------------------------------------------------
    def idf(self, word: str) -> float:
        v = self._idf_cache.get(word)
        if v is None:
            df = self.artifact.doc_freq.get(word, 0)
            v = self._idf_cache[word] = math.log((self.artifact.n_docs + 1) / (df + 1))
        return v

    def _view(self, question_words: set[str], fact_words: set[str], top2: list[str]) -> list[float]:
        idf, mx = self.idf, self._max_idf
        shared = question_words & fact_words
        shared_mass = sum(idf(w) for w in shared)
        fact_mass = sum(idf(w) for w in fact_words) or 1.0
        q_mass = sum(idf(w) for w in question_words) or 1.0
        uncovered = [idf(w) for w in question_words - fact_words]
        return [shared_mass / fact_mass, shared_mass / q_mass,
                max(uncovered, default=0.0) / mx,
                max((idf(w) for w in shared), default=0.0) / mx,
                sum(w in question_words for w in top2) / 2]

    def features(self, question: str, fact: str, cosine: float) -> list[float]:
        """The feature vector (FEATURE_NAMES order) of one (question, fact) pair."""
        fw = set(words(fact))
        top2 = sorted(fw, key=lambda w: (-self.idf(w), w))[:2]
        views = question_views(question)
        full = self._view(set(words(views[0])), fw, top2)
        last = self._view(set(words(views[-1])), fw, top2)
        mixed = [float(cosine), min(full[2], last[2]), max(full[1], last[1]),
                 max(full[0], last[0])]
        q = float(views[-1].rstrip().endswith("?"))
        return [*full, *last, *mixed, q, *(q * v for v in mixed), 1.0]

    def probabilities(self, question: str, candidates: Sequence[Candidate]) -> list[float]:
        """P(about the question) for each candidate."""
        if not candidates:
            return []
        x = np.asarray([self.features(question, c.text, c.cosine) for c in candidates])
        return (1.0 / (1.0 + np.exp(-(x @ self.weights)))).tolist()

    # ---- artifact -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        text = self.artifact.model_dump_json(indent=1)
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RelevanceGate:
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
            return cls(GateArtifact(**raw))
        except FileNotFoundError:
            raise ArtifactError(f"No relevance gate at {p}.") from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError, TypeError) as exc:
            raise ArtifactError(f"{p} is not a valid relevance gate: {exc}") from None


def shipped_gate_path(embedder: str) -> Path | None:
    """The gate trained for an embedder and shipped inside the package, if any."""
    path = Path(str(resources.files("editkit.data") / "gate" / embedder / "gate.json"))
    return path if path.is_file() else None


def load_gate(path: str) -> RelevanceGate:
    """A gate artifact from a file, loaded once per process and file version (every retrieval
    asks): a file rewritten in place (a retrained gate) is read again."""
    try:
        st = os.stat(path)
    except OSError:
        return RelevanceGate.load(path)  # raises the typed "no relevance gate at ..." error
    return _load_gate(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _load_gate(path: str, mtime_ns: int, size: int) -> RelevanceGate:
    return RelevanceGate.load(path)


@functools.lru_cache(maxsize=8)
def shipped_gate(embedder: str) -> RelevanceGate | None:
    """The shipped gate for `embedder`, or None where none ships; looked up (and loaded) once
    per process and embedder, since every retrieval asks."""
    path = shipped_gate_path(embedder)
    return RelevanceGate.load(path) if path is not None else None
