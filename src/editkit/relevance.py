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

A logistic regression over them (17 weights) gives P(the edit is about the question). It is
trained on the CounterFact train split (rewrite and paraphrase questions with their own edit = in
scope; neighbourhood questions and every other retrieved candidate = out of scope, with noise
prefixes added to some questions, as CounterFact paraphrases have them), and its decision threshold
is calibrated on the validation split. The artifact is one JSON file (weights, the document
frequencies it was trained with, the threshold, provenance), shipped per embedder, like the
P-Tokens.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ArtifactError, InvalidInputError
from .fileio import atomic_write

GATE_FORMAT = "editkit-relevance-gate/1"
_WORD = re.compile(r"\w+")
# A sentence ends at . ! ? followed by white space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

FEATURE_NAMES = (
    *(f"{view}_{name}" for view in ("full", "last") for name in (
        "fact_covered", "question_covered", "rarest_uncovered", "rarest_shared",
        "fact_top2_in_question")),
    "cosine", "min_rarest_uncovered", "max_question_covered", "max_fact_covered", "bias",
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


class RelevanceGate:
    """P(edit is about the question) from cosine + IDF-weighted word overlap (see module doc)."""

    def __init__(self, artifact: GateArtifact) -> None:
        if artifact.format != GATE_FORMAT:
            raise ArtifactError(f"Relevance gate format {artifact.format!r} is not "
                                f"{GATE_FORMAT!r}; retrain it with this editkit version.")
        if list(artifact.features) != list(FEATURE_NAMES) or \
                len(artifact.weights) != len(FEATURE_NAMES):
            raise ArtifactError("The relevance gate was trained on other features than this "
                                "editkit version computes; retrain it (editkit.relevance).")
        self.artifact = artifact
        self.weights = np.asarray(artifact.weights, dtype=np.float64)
        self.threshold = artifact.threshold
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
        return [*full, *last, float(cosine), min(full[2], last[2]), max(full[1], last[1]),
                max(full[0], last[0]), 1.0]

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


@functools.lru_cache(maxsize=8)
def shipped_gate(embedder: str) -> RelevanceGate | None:
    """The shipped gate for `embedder`, or None where none ships; looked up (and loaded) once
    per process and embedder, since every retrieval asks."""
    path = shipped_gate_path(embedder)
    return RelevanceGate.load(path) if path is not None else None


# ---- training ---------------------------------------------------------------------------
class GateTrainConfig(BaseModel):
    """How the shipped gate is trained; every field is recorded in the artifact."""

    model_config = ConfigDict(extra="forbid")
    train: str = Field(description="CounterFact (EasyEdit format) train file: questions, pairs")
    val: str = Field(description="CounterFact (EasyEdit format) validation file: threshold")
    n_train: int = Field(1500, ge=10, description="train records whose questions make pairs")
    train_memory: int = Field(3000, ge=20, description="facts in memory while mining pairs")
    n_val: int = Field(300, ge=10, description="validation records for the threshold")
    val_memory: int = Field(1000, ge=20)
    candidates: int = Field(8, ge=1, le=64, description="retrieved candidates judged per question")
    candidate_threshold: float = Field(0.25, ge=-1.0, le=1.0,
                                       description="cosine below which nothing is a candidate")
    noise_share: float = Field(0.3, ge=0.0, le=1.0,
                               description="share of questions given a noise sentence in front")
    target_recall: float = Field(0.97, gt=0.0, le=1.0,
                                 description="share of validation paraphrases whose own edit "
                                             "the threshold keeps")
    l2: float = Field(1e-3, ge=0.0)
    seed: int = 0


def _fact(rec: dict[str, Any]) -> str:
    return f"{rec['prompt']} {rec['target_new']}"


def _load(path: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"Cannot read {path}: {exc}") from None
    need = {"case_id", "prompt", "target_new", "rephrase_prompt", "locality_prompt"}
    if not isinstance(data, list) or not data or not all(
            isinstance(r, dict) and need <= r.keys() for r in data):
        raise InvalidInputError(f"{path} is not a CounterFact file in the EasyEdit format "
                                f"(a list of records with {sorted(need)}).")
    return data


def doc_freq(records: Sequence[dict[str, Any]]) -> tuple[dict[str, int], int]:
    """Document frequencies over the facts and questions of training records."""
    docs = []
    for r in records:
        docs += [_fact(r), r["rephrase_prompt"], r["locality_prompt"]]
    df = Counter(w for d in docs for w in set(words(d)))
    return dict(sorted(df.items())), len(docs)


def _noise_prefixes(records: Sequence[dict[str, Any]]) -> list[str]:
    """The unrelated sentences CounterFact puts before some paraphrases, as found in train."""
    out = []
    for r in records:
        views = question_views(r["rephrase_prompt"])
        if len(views) == 2:
            out.append(r["rephrase_prompt"][: len(r["rephrase_prompt"]) - len(views[1])])
    return out


@dataclass
class _Question:
    text: str
    kind: str  # rewrite | paraphrase | neighbour
    own: int  # index of the record's fact in the memory


def _questions(records: Sequence[dict[str, Any]], noise: Sequence[str], share: float,
               rng: random.Random) -> list[_Question]:
    out = []
    for i, r in enumerate(records):
        for kind, key in (("rewrite", "prompt"), ("paraphrase", "rephrase_prompt"),
                          ("neighbour", "locality_prompt")):
            text = r[key]
            if noise and rng.random() < share:
                text = rng.choice(noise) + text
            out.append(_Question(text, kind, i))
    return out


def _candidates(embedder: Any, questions: Sequence[_Question], fact_vecs: np.ndarray,
                k: int, threshold: float) -> list[list[tuple[int, float]]]:
    """Top-k memory facts per question by the best cosine over its views (as the policy does)."""
    views = [question_views(q.text) for q in questions]
    flat = [v for vs in views for v in vs]
    vecs = embedder.encode(flat)
    out, at = [], 0
    for vs in views:
        sims = (vecs[at: at + len(vs)] @ fact_vecs.T).max(axis=0)
        at += len(vs)
        top = np.argsort(-sims)[:k]
        out.append([(int(j), float(sims[j])) for j in top if sims[j] >= threshold])
    return out


def _fit(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Class-balanced logistic regression by Newton steps (17 weights: exact and fast)."""
    w = np.zeros(x.shape[1])
    sw = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (sw * (p - y)) / len(y) + l2 * w
        hess = (x * (sw * p * (1 - p))[:, None]).T @ x / len(y) + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def routing(gate: RelevanceGate | None, questions: Sequence[_Question],
            cands: Sequence[Sequence[tuple[int, float]]], facts: Sequence[str],
            threshold: float | None = None) -> dict[str, Counter[str]]:
    """Per question kind: did the question's own edit reach the prompt, another edit, nothing?"""
    out: dict[str, Counter[str]] = {}
    for q, cs in zip(questions, cands):
        kept = [j for j, _ in cs]
        if gate is not None:
            probs = gate.probabilities(q.text, [Candidate(facts[j], s) for j, s in cs])
            th = gate.threshold if threshold is None else threshold
            kept = [j for (j, _), p in zip(cs, probs) if p >= th]
        res = "nothing" if not kept else ("own" if kept[0] == q.own else "other")
        out.setdefault(q.kind, Counter())[res] += 1
    return out


def train_gate(cfg: GateTrainConfig, embedder: Any = None) -> RelevanceGate:
    """Mine pairs on the train split, fit the weights, calibrate the threshold on validation."""
    from .embedder import DEFAULT_EMBEDDER, shared_embedder

    emb = embedder or shared_embedder()
    rng = random.Random(cfg.seed)
    started = time.time()
    train = _load(cfg.train)
    if cfg.n_train > cfg.train_memory or cfg.n_train > len(train):
        raise InvalidInputError(f"n_train={cfg.n_train} needs n_train ≤ train_memory "
                                f"({cfg.train_memory}) ≤ records in {cfg.train} ({len(train)}).")
    df, n_docs = doc_freq(train)
    provisional = RelevanceGate(GateArtifact(
        embedder=getattr(emb, "name", DEFAULT_EMBEDDER), features=list(FEATURE_NAMES),
        weights=[0.0] * len(FEATURE_NAMES), threshold=0.5,
        candidate_threshold=cfg.candidate_threshold, n_docs=n_docs, doc_freq=df))
    mem = train[: cfg.train_memory]
    facts = [_fact(r) for r in mem]
    questions = _questions(mem[: cfg.n_train], _noise_prefixes(train), cfg.noise_share, rng)
    cands = _candidates(emb, questions, emb.encode(facts), cfg.candidates,
                        cfg.candidate_threshold)
    x, y = [], []
    for q, cs in zip(questions, cands):
        for j, s in cs:
            x.append(provisional.features(q.text, facts[j], s))
            y.append(float(j == q.own and q.kind != "neighbour"))
    if not x or min(y) == max(y):
        raise InvalidInputError("Too few training pairs of both kinds; raise n_train.")
    weights = _fit(np.asarray(x), np.asarray(y), cfg.l2)
    gate = RelevanceGate(provisional.artifact.model_copy(update={"weights": weights.tolist()}))

    # Threshold: the highest that keeps the target share of validation paraphrases (with noise
    # added as in training) reaching their own edit (if retrieval found it at all).
    val = _load(cfg.val)
    vmem = val[: cfg.val_memory]
    vfacts = [_fact(r) for r in vmem]
    vq = _questions(vmem[: cfg.n_val], _noise_prefixes(train), cfg.noise_share,
                    random.Random(cfg.seed + 1))
    vc = _candidates(emb, vq, emb.encode(vfacts), cfg.candidates, cfg.candidate_threshold)
    own_p = []
    for q, cs in zip(vq, vc):
        if q.kind == "paraphrase":  # the hard in-scope kind: rewrites pass far above it
            probs = gate.probabilities(q.text, [Candidate(vfacts[j], s) for j, s in cs])
            own_p.append(next((p for (j, _), p in zip(cs, probs) if j == q.own), 0.0))
    own = np.sort(np.asarray(own_p))
    threshold = float(own[int(math.floor((1 - cfg.target_recall) * len(own)))])
    gate = RelevanceGate(gate.artifact.model_copy(update={"threshold": threshold}))
    report = {k: dict(v) for k, v in routing(gate, vq, vc, vfacts).items()}
    gate.artifact.provenance = {
        # file names, not this machine's paths; the digests pin the contents
        "trained_with": {**cfg.model_dump(), "train": Path(cfg.train).name,
                         "val": Path(cfg.val).name},
        "train_sha256": hashlib.sha256(Path(cfg.train).read_bytes()).hexdigest(),
        "val_sha256": hashlib.sha256(Path(cfg.val).read_bytes()).hexdigest(),
        "pairs": len(y), "positive_share": float(np.mean(y)),
        "validation_routing": report,
        "seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    return gate
