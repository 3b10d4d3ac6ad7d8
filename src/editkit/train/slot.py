"""Training the "same slot" judge: mine (new fact, older fact) pairs, fit, calibrate for precision.

The judge itself (features, artifact, loading) is `editkit.retrieval.slot`. Pairs, per record:

- same slot (label 1): the fact with its new object against the fact with its true object in the
  same wording ("update"; zsRE: its question-form facts, "What is the product made by UniFirst?
  uniform"), and across the record's rephrase wording ("update_reworded": measured, trained on
  only with `reworded_positives`, see below).
- other slot (label 0): the neighbourhood subject with the same relation, with the true and with
  the new object ("neighbour_*"); the nearest other facts by embedding among the records' true
  facts ("nearest": what retrieval puts in front of the judge); another record's subject in the
  same wording ("other_subject_same_wording"); the subject with one word changed ("near_subject":
  "Porsche 911" -> "Porsche 912"); the subject in another relation's wording ("other_relation":
  CounterFact has no relation ids, so wordings are grouped into relations by joining each
  record's prompt and rephrase templates, and only wordings of *other* groups are used).
- app-style statements (`editkit.eval.app_facts`, when it is there): see `app_pairs`.

Reworded updates ("Toko Yasuda is incredible at piano" vs "Toko Yasuda, the guitar") share the
subject and differ in the rest, exactly as the subject's other relations do ("Toko Yasuda was born
in Osaka"); word features cannot tell them apart, and training on them cost 15 points of recall on
same-wording updates at the precision threshold and let other relations through, so by default
they are left out of the fit and only reported.

The fit is the relevance gate's class-balanced Newton logistic regression (`train.gate._fit`);
the threshold is the lowest whose false-accept rate on each validation set's negatives (and on
all of them together) is at most `target_far`, and on each kind of negative at most `kind_far`.
Called by scripts/train_slot_judge.py (the shipped artifact) and tests/test_slot_judge.py.
"""
from __future__ import annotations

import hashlib
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..datasets import one_edit_per_fact
from ..errors import InvalidInputError
from ..retrieval.gate import shipped_gate
from ..retrieval.slot import FEATURE_NAMES, LearnedSlotJudge, SlotJudgeArtifact, idf_digest
from .gate import _fit, _records
from .slot_pairs import Pair, app_pairs, counterfact_pairs, zsre_pairs


class SlotTrainConfig(BaseModel):
    """How the shipped slot judge is trained; every field is recorded in the artifact."""

    model_config = ConfigDict(extra="forbid")
    train: str = Field(description="CounterFact (EasyEdit format) train file")
    val: str = Field(description="CounterFact (EasyEdit format) validation file: threshold")
    zsre: str | None = Field(None, description="zsRE train file (optional); its last "
                                               "`zsre_holdout` share joins the calibration")
    zsre_holdout: float = Field(0.2, gt=0.0, lt=1.0)
    n_train: int = Field(3000, ge=10, description="CounterFact train records that make pairs")
    n_val: int | None = Field(None, ge=10, description="validation records (None: all)")
    nearest: int = Field(4, ge=0, le=32, description="nearest other facts per new fact")
    reworded_positives: bool = Field(False, description=(
        "train on the rephrase-wording positives too: word features cannot tell a reworded "
        "update from the subject's other relations, and with them the judge takes both"))
    app: bool = Field(True, description="add app-style pairs (editkit.eval.app_facts) if found")
    target_far: float = Field(0.002, gt=0.0, lt=1.0,
                              description="false-accept rate allowed on validation negatives")
    kind_far: float = Field(0.005, gt=0.0, lt=1.0,
                            description="false-accept rate allowed on each kind of validation "
                                        "negative with at least 200 pairs (neighbours, siblings)")
    l2: float = Field(1e-3, ge=0.0)
    seed: int = 0


def embed_pairs(emb: Any, pairs: Sequence[Pair]) -> None:
    """Fill each pair's cosine, every distinct text encoded once."""
    texts = sorted({t for p in pairs for t in (p.new, p.old)})
    index = {t: i for i, t in enumerate(texts)}
    vecs = emb.encode(texts, batch_size=128)
    for p in pairs:
        p.cosine = float(vecs[index[p.new]] @ vecs[index[p.old]])


def rates(judge: Any, pairs: Sequence[Pair], threshold: float | None = None,
          ) -> dict[str, dict[str, float]]:
    """Per pair kind: how many, and the share the judge calls same slot (recall on label-1
    kinds, false-accept rate on label-0 kinds); plus the pooled 'positives'/'negatives'."""
    th = judge.threshold if threshold is None else threshold
    acc: dict[str, list[bool]] = defaultdict(list)
    probs = probabilities(judge, pairs)
    for p, pr in zip(pairs, probs):
        for key in (p.kind, "positives" if p.label else "negatives"):
            acc[key].append(pr >= th)
    return {k: {"n": len(v), "same_slot": round(float(np.mean(v)), 4)}
            for k, v in sorted(acc.items())}


def probabilities(judge: Any, pairs: Sequence[Pair]) -> list[float]:
    return [judge.probabilities(p.new, [(p.old, p.cosine)])[0] for p in pairs]


def far_threshold(neg_probs: Sequence[float], target_far: float) -> float:
    """The lowest threshold (accept at p >= threshold) that accepts at most target_far of the
    negatives."""
    neg = np.sort(np.asarray(neg_probs, dtype=np.float64))[::-1]
    allowed = int(math.floor(target_far * len(neg)))
    if allowed >= len(neg):
        return 0.0
    return float(min(1.0, np.nextafter(neg[allowed], 2.0)))


class _Cached:
    """An embedder that encodes each distinct text once (pairs share their texts)."""

    def __init__(self, emb: Any) -> None:
        self.emb, self.name, self._vecs = emb, getattr(emb, "name", None), {}

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self._vecs})
        if todo:
            self._vecs.update(zip(todo, self.emb.encode(todo, batch_size=batch_size)))
        return np.asarray([self._vecs[t] for t in texts])


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_slot_judge(cfg: SlotTrainConfig, embedder: Any = None) -> LearnedSlotJudge:
    """Mine pairs on the train split(s), fit, set the threshold on the validation pairs."""
    from ..embedder import DEFAULT_EMBEDDER, shared_embedder

    emb = embedder or shared_embedder()
    name = getattr(emb, "name", None) or DEFAULT_EMBEDDER
    emb = _Cached(emb)
    gate = shipped_gate(name)
    if gate is None:
        raise InvalidInputError(f"No relevance gate ships for {name!r}: the slot judge reads its "
                                "IDF. Train one first (scripts/train_gate.py).")
    rng, vrng = random.Random(cfg.seed), random.Random(cfg.seed + 1)  # val pairs: seed + 1
    started = time.time()
    cf = _records(cfg.train, "counterfact", "a CounterFact file in the EasyEdit format")
    if cfg.n_train > len(cf):
        raise InvalidInputError(f"n_train={cfg.n_train} > records in {cfg.train} ({len(cf)}).")
    train = counterfact_pairs(cf[: cfg.n_train], emb, cfg.nearest, rng, linked=cf)
    val_cf = _records(cfg.val, "counterfact", "a CounterFact file in the EasyEdit format")
    checks = {"counterfact_val": counterfact_pairs(val_cf[: cfg.n_val], emb, cfg.nearest,
                                                     vrng, linked=val_cf)}
    if cfg.zsre:
        zs = [r for r in _records(cfg.zsre, "zsre", "a zsRE file") if r.alt.strip()
              and r.answers]
        zs = one_edit_per_fact(zs)[0]
        cut = int(round(len(zs) * (1 - cfg.zsre_holdout)))
        train += zsre_pairs(zs[:cut], emb, cfg.nearest)
        checks["zsre_holdout"] = zsre_pairs(zs[cut:], emb, cfg.nearest)
    if cfg.app:
        train += app_pairs("train", emb, cfg.nearest, rng)
        app_val = app_pairs("val", emb, cfg.nearest, vrng)
        if app_val:
            checks["app_val"] = app_val
    if not cfg.reworded_positives:  # measured on validation all the same
        train = [p for p in train if "reworded" not in p.kind]
    for ps in [train, *checks.values()]:
        embed_pairs(emb, ps)
    provisional = LearnedSlotJudge(SlotJudgeArtifact(
        embedder=name, features=list(FEATURE_NAMES), weights=[0.0] * len(FEATURE_NAMES),
        threshold=0.5, idf_sha256=idf_digest(gate)), idf=gate)
    x = np.asarray([provisional.features(p.new, p.old, p.cosine) for p in train])
    y = np.asarray([float(p.label) for p in train])
    if len(y) == 0 or y.min() == y.max():
        raise InvalidInputError("Too few training pairs of both kinds; raise n_train.")
    weights = _fit(x, y, cfg.l2)
    judge = LearnedSlotJudge(provisional.artifact.model_copy(
        update={"weights": weights.tolist()}), idf=gate)
    negs = {k: [(p.kind, pr) for p, pr in zip(ps, probabilities(judge, ps)) if not p.label]
            for k, ps in checks.items()}
    thresholds = {k: far_threshold([pr for _, pr in v], cfg.target_far) for k, v in negs.items()}
    thresholds["all"] = far_threshold([pr for v in negs.values() for _, pr in v], cfg.target_far)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, pr in (x for v in negs.values() for x in v):
        by_kind[kind].append(pr)
    thresholds |= {kind: far_threshold(v, cfg.kind_far) for kind, v in by_kind.items()
                   if len(v) >= 200}
    judge.threshold = max(thresholds.values())
    files = {"train": cfg.train, "val": cfg.val, **({"zsre": cfg.zsre} if cfg.zsre else {})}
    judge.artifact = judge.artifact.model_copy(update={
        "threshold": judge.threshold,
        "provenance": {
            "trained_with": {**cfg.model_dump(), **{k: Path(v).name for k, v in files.items()}},
            **{f"{k}_sha256": _sha256(v) for k, v in files.items()},
            "app_facts": "app_val" in checks,
            **({"app_facts_sha256": _sha256(sys.modules["editkit.eval.app_facts"].__file__)}
               if "app_val" in checks else {}),
            "train_pairs": dict(sorted(Counter(p.kind for p in train).items())),
            "thresholds": thresholds,  # per validation set, "all", per kind of negative
            "validation": {k: rates(judge, ps) for k, ps in checks.items()},
            "seconds": round(time.time() - started, 1),
            "date": time.strftime("%Y-%m-%d"),
        }})
    return judge
