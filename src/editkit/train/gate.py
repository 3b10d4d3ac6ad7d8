"""Training the relevance gate: mine (question, retrieved edit) pairs, fit, calibrate.

The gate itself (features, the logistic regression's use, the artifact and its loading) is
`editkit.retrieval.gate`, which runs at question time and does not import this module. This one is
what makes the shipped artifact: on the CounterFact (and zsRE) train splits it asks each record's
rewrite, paraphrase and neighbourhood questions of a memory of facts, labels every retrieved
candidate (own edit for rewrite/paraphrase = in scope, anything else = out of scope), fits the
weights by Newton steps, and calibrates the threshold on validation sets so that
`target_recall` of the paraphrases keep their own edit. `routing` counts where each question's
candidates went, which the artifact's provenance records.

Called by scripts/train_gate.py (the shipped artifact) and tests/test_retrieval.py.
"""
from __future__ import annotations

import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..datasets import Format, load_records, one_edit_per_fact
from ..errors import DatasetError, InvalidInputError
from ..retrieval.gate import (
    FEATURE_NAMES,
    Candidate,
    GateArtifact,
    RelevanceGate,
    question_views,
    words,
)


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
    from ..embedder import DEFAULT_EMBEDDER, shared_embedder

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
