"""A large set of real-looking facts, built from the real CounterFact records, with cached vectors.

Each record's prompt minus its subject is a relation template ("{} plays the"); a fact pairs a
real subject with its template and a real object of the same template ("Toko Yasuda plays the
violin."). Up to ~20k records x their template's objects gives far more than a million distinct
facts, every one of them a sentence of the data's kind. Vectors are cached per corpus size, since
embedding is the slow part (~200-300 facts/s on 2 cores).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from editkit.loading import cache_dir

from .common import data_file

SPLITS = ("counterfact-train.json", "counterfact-val.json", "counterfact-test.json")


def _templates() -> list[tuple[str, str, list[str]]]:
    """(subject, template, objects of that template) for every CounterFact record."""
    recs = []
    for name in SPLITS:
        recs += json.loads(data_file("counterfact", name).read_text())
    pool: dict[str, set[str]] = {}
    rows = []
    for r in recs:
        if r["subject"] not in r["prompt"]:
            continue
        tpl = r["prompt"].replace(r["subject"], "{}", 1)
        pool.setdefault(tpl, set()).update((r["target_new"], r["ground_truth"]))
        rows.append((r["subject"], tpl))
    every = sorted({o for objs in pool.values() for o in objs})
    return [(s, t, sorted(pool[t]) if len(pool[t]) >= 20 else every) for s, t in rows]


def facts(n: int, seed: int = 0) -> list[str]:
    """n distinct facts, deterministic for (n, seed); the first k of facts(n) are facts(k)."""
    rows = _templates()
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        for i in rng.permutation(len(rows)):
            s, tpl, objs = rows[int(i)]
            text = tpl.format(s) + " " + objs[int(rng.integers(len(objs)))] + "."
            if text not in seen:
                seen.add(text)
                out.append(text)
                if len(out) == n:
                    break
    return out


def questions(n: int, seed: int = 1) -> list[str]:
    """Real CounterFact questions (rephrase prompts) to retrieve with."""
    recs = json.loads(data_file("counterfact", "counterfact-test.json").read_text())
    rng = np.random.default_rng(seed)
    return [recs[int(i)]["rephrase_prompt"] for i in rng.choice(len(recs), n, replace=False)]


def vectors(texts: list[str], tag: str) -> np.ndarray:
    """Embeddings of `texts` with the default embedder, cached on disk under `tag`."""
    from editkit.embedder import shared_embedder

    path = Path(cache_dir()) / "bench" / f"{tag}-{len(texts)}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    vecs = shared_embedder().encode(texts, batch_size=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vecs, allow_pickle=False)
    tmp.replace(path)
    return vecs
