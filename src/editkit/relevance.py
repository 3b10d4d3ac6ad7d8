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

from .datasets import Format, load_records, one_edit_per_fact
from .errors import ArtifactError, DatasetError, InvalidInputError
from .fileio import atomic_write

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


# ---- training ---------------------------------------------------------------------------
class GateTrainConfig(BaseModel):
    """How the shipped gate is trained; every field is recorded in the artifact."""

    model_config = ConfigDict(extra="forbid")
    train: str = Field(description="CounterFact (EasyEdit format) train file: questions, pairs")
    val: str = Field(description="CounterFact (EasyEdit format) validation file: threshold")
    zsre: str | None = Field(None, description="zsRE train file (optional): question-form pairs "
                                               "('Which business did X release?'); its last "
                                               "`zsre_holdout` share joins the calibration")
    zsre_records: int | None = Field(None, ge=20, description="first N zsRE records with "
                                                              "distinct subjects (None: all)")
    zsre_holdout: float = Field(0.2, gt=0.0, lt=1.0)
    zsre_fillers: int = Field(2000, ge=0, description="CounterFact train facts added to the zsRE "
                                                      "memory while mining (other-style edits)")
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
                                             "the threshold keeps, on each validation set")
    l2: float = Field(1e-3, ge=0.0)
    seed: int = 0


@dataclass
class _Edit:
    """One training record, whatever its format: the fact and one question of each kind."""

    fact: str
    rewrite: str
    paraphrase: str
    neighbour: str


def _records(path: str, fmt: Format, what: str) -> list[Any]:
    """A training file read and validated by the data loaders (`editkit.datasets`)."""
    try:
        return load_records(path, fmt)[1]
    except DatasetError as exc:
        raise InvalidInputError(f"{path} is not {what}: {exc}") from None


def _load(path: str) -> list[_Edit]:
    """CounterFact in the EasyEdit format."""
    return [_Edit(r.fact, r.prompt, r.rephrase_prompt, r.locality_prompt)
            for r in _records(path, "counterfact", "a CounterFact file in the EasyEdit format")]


def _load_zsre(path: str) -> list[_Edit]:
    """zsRE (MEND/EasyEdit format), one record per fact (`one_edit_per_fact`): zsRE edits a
    subject in several records with different answers, and two contradicting edits would label
    each other's paraphrases both in and out of scope. Its neighbour is the NQ locality
    question. Records without a new answer are left out, as the evaluation skips them."""
    recs = [r for r in _records(path, "zsre", "a zsRE file") if r.alt.strip()]
    return [_Edit(r.fact, r.src, r.rephrase, r.loc) for r in one_edit_per_fact(recs)[0]]


def doc_freq(records: Sequence[_Edit]) -> tuple[dict[str, int], int]:
    """Document frequencies over the facts and questions of training records."""
    docs = []
    for r in records:
        docs += [r.fact, r.paraphrase, r.neighbour]
    df = Counter(w for d in docs for w in set(words(d)))
    return dict(sorted(df.items())), len(docs)


def _noise_prefixes(records: Sequence[_Edit]) -> list[str]:
    """The unrelated sentences CounterFact puts before some paraphrases, as found in train."""
    out = []
    for r in records:
        views = question_views(r.paraphrase)
        if len(views) == 2:
            out.append(r.paraphrase[: len(r.paraphrase) - len(views[1])])
    return out


@dataclass
class _Question:
    text: str
    kind: str  # rewrite | paraphrase | neighbour
    own: int  # index of the record's fact in the memory


def _questions(records: Sequence[_Edit], noise: Sequence[str], share: float,
               rng: random.Random) -> list[_Question]:
    out = []
    for i, r in enumerate(records):
        for kind in ("rewrite", "paraphrase", "neighbour"):
            text = getattr(r, kind)
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
    """Class-balanced logistic regression by Newton steps (22 weights: exact and fast)."""
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


@dataclass
class _PairSet:
    """Questions, the memory facts they are matched against, and their retrieved candidates."""

    questions: list[_Question]
    facts: list[str]
    cands: list[list[tuple[int, float]]]


def _pair_set(emb: Any, memory: Sequence[_Edit], asked: int, extra_facts: Sequence[str],
              noise: Sequence[str], cfg: GateTrainConfig, rng: random.Random) -> _PairSet:
    """The first `asked` records of `memory` ask their questions of a memory holding every
    record's fact plus `extra_facts`."""
    facts = [r.fact for r in memory] + list(extra_facts)
    questions = _questions(memory[:asked], noise, cfg.noise_share, rng)
    cands = _candidates(emb, questions, emb.encode(facts), cfg.candidates,
                        cfg.candidate_threshold)
    return _PairSet(questions, facts, cands)


def _own_paraphrase_probabilities(gate: RelevanceGate, ps: _PairSet) -> np.ndarray:
    own_p = []
    for q, cs in zip(ps.questions, ps.cands):
        if q.kind == "paraphrase":  # the hard in-scope kind: rewrites pass far above it
            probs = gate.probabilities(q.text, [Candidate(ps.facts[j], s) for j, s in cs])
            own_p.append(next((p for (j, _), p in zip(cs, probs) if j == q.own), 0.0))
    return np.sort(np.asarray(own_p))


def train_gate(cfg: GateTrainConfig, embedder: Any = None) -> RelevanceGate:
    """Mine pairs on the train split(s), fit the weights, calibrate the threshold on validation.

    The threshold is the highest that keeps `target_recall` of the validation paraphrases (noise
    added as in training) reaching their own edit on each validation set (CounterFact val, and
    the zsRE hold-out when zsRE is given): the lower of the per-set thresholds.
    """
    from .embedder import DEFAULT_EMBEDDER, shared_embedder

    emb = embedder or shared_embedder()
    rng = random.Random(cfg.seed)
    started = time.time()
    train = _load(cfg.train)
    if cfg.n_train > cfg.train_memory or cfg.n_train > len(train):
        raise InvalidInputError(f"n_train={cfg.n_train} needs n_train ≤ train_memory "
                                f"({cfg.train_memory}) ≤ records in {cfg.train} ({len(train)}).")
    zs_train: list[_Edit] = []
    zs_hold: list[_Edit] = []
    if cfg.zsre:
        zs = _load_zsre(cfg.zsre)[: cfg.zsre_records]
        cut = int(round(len(zs) * (1 - cfg.zsre_holdout)))
        zs_train, zs_hold = zs[:cut], zs[cut:]
        if len(zs_train) < 10 or len(zs_hold) < 10:
            raise InvalidInputError(f"{cfg.zsre}: {len(zs)} records with distinct subjects are "
                                    "too few to split into training and hold-out.")
    df, n_docs = doc_freq(train + zs_train)
    provisional = RelevanceGate(GateArtifact(
        embedder=getattr(emb, "name", DEFAULT_EMBEDDER), features=list(FEATURE_NAMES),
        weights=[0.0] * len(FEATURE_NAMES), threshold=0.5,
        candidate_threshold=cfg.candidate_threshold, n_docs=n_docs, doc_freq=df))
    noise = _noise_prefixes(train)
    fillers = [r.fact for r in train[cfg.train_memory: cfg.train_memory + cfg.zsre_fillers]]
    sets = [_pair_set(emb, train[: cfg.train_memory], cfg.n_train, [], noise, cfg, rng)]
    if zs_train:
        sets.append(_pair_set(emb, zs_train, len(zs_train), fillers, noise, cfg, rng))
    x, y = [], []
    for ps in sets:
        for q, cs in zip(ps.questions, ps.cands):
            for j, s in cs:
                x.append(provisional.features(q.text, ps.facts[j], s))
                y.append(float(j == q.own and q.kind != "neighbour"))
    if not x or min(y) == max(y):
        raise InvalidInputError("Too few training pairs of both kinds; raise n_train.")
    weights = _fit(np.asarray(x), np.asarray(y), cfg.l2)
    gate = RelevanceGate(provisional.artifact.model_copy(update={"weights": weights.tolist()}))

    val = _load(cfg.val)
    vrng = random.Random(cfg.seed + 1)
    checks = {"counterfact_val": _pair_set(emb, val[: cfg.val_memory], cfg.n_val, [], noise,
                                           cfg, vrng)}
    if zs_hold:
        checks["zsre_holdout"] = _pair_set(emb, zs_hold, len(zs_hold),
                                           fillers[: cfg.val_memory], noise, cfg, vrng)
    thresholds = {}
    for name, ps in checks.items():
        own = _own_paraphrase_probabilities(gate, ps)
        thresholds[name] = float(own[int(math.floor((1 - cfg.target_recall) * len(own)))])
    gate = RelevanceGate(gate.artifact.model_copy(update={"threshold": min(thresholds.values())}))
    report = {name: {k: dict(v) for k, v in routing(gate, ps.questions, ps.cands,
                                                    ps.facts).items()}
              for name, ps in checks.items()}
    files = {"train": cfg.train, "val": cfg.val, **({"zsre": cfg.zsre} if cfg.zsre else {})}
    gate.artifact.provenance = {
        # file names, not this machine's paths; the digests pin the contents
        "trained_with": {**cfg.model_dump(), **{k: Path(v).name for k, v in files.items()}},
        **{f"{k}_sha256": hashlib.sha256(Path(v).read_bytes()).hexdigest()
           for k, v in files.items()},
        "pairs": len(y), "positive_share": float(np.mean(y)),
        "thresholds_per_validation_set": thresholds,
        "validation_routing": report,
        "seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    return gate
