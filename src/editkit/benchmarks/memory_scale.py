"""Edit memory at scale: insert throughput, retrieval p50/p99 and recall@10, exact vs FAISS.

    python -m editkit.benchmarks.memory_scale --sizes 1000,10000,100000,1000000

Every size is a real SQLite file written through `EditMemory.add_embedded` (the write path without
the embedder), then opened fresh per index kind; retrieval is timed on real CounterFact questions
through `retrieve_vector` (index search + reading the hits back from SQLite). Question embedding is
timed separately, once, because it does not depend on the memory's size.

Vectors: the first 100k facts are embedded for real (cached). Embedding a million sentences takes
~1 h on 2 cores, so beyond 100k each extra fact's vector is a real one plus Gaussian noise with
cosine ~0.85 to it (about how close two facts about one subject are); docs/benchmarks.md says so.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from editkit.retrieval import EditMemory

from .common import pct, save, table, timed
from .facts import facts, questions, vectors

REAL = 100_000


def corpus_vectors(n: int, real: np.ndarray, seed: int = 0) -> np.ndarray:
    """n vectors: the real ones first, then noisy copies of random real ones (cos ~0.85)."""
    if n <= len(real):
        return real[:n]
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    sigma = np.sqrt((1 / 0.85**2 - 1) / dim)
    out = np.empty((n, dim), dtype=np.float32)
    out[:len(real)] = real
    for start in range(len(real), n, 100_000):
        stop = min(n, start + 100_000)
        v = real[rng.integers(0, len(real), stop - start)] + \
            rng.normal(scale=sigma, size=(stop - start, dim)).astype(np.float32)
        out[start:stop] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def build_file(path: Path, texts: list[str], vecs: np.ndarray, batch: int = 10_000) -> float:
    """Write every fact into a new memory file; return facts per second."""
    mem = EditMemory(path, index="exact")
    t = time.perf_counter()
    for i in range(0, len(texts), batch):
        # distinct facts of many records: a bulk load, no update checks
        mem.add_embedded(texts[i:i + batch], vecs[i:i + batch], on_update="keep-both")
    rate = len(texts) / (time.perf_counter() - t)
    mem.close()
    return rate


def measure(path: Path, kind: str, qvecs: np.ndarray, exact_ids: list[list[str]] | None,
            nprobes: list[int]) -> list[dict]:
    """Open the file with one index kind; time the first sync and each retrieval (per nprobe
    setting too, on the same built index, when it is an IVF index)."""
    t = time.perf_counter()
    mem = EditMemory(path, index=kind)
    mem.retrieve_vector(qvecs[0], k=10, threshold=-1.0)  # loads and builds the index
    open_s = time.perf_counter() - t
    index = mem._index("default").index
    built = getattr(index, "kind", "exact")
    rows = []
    for nprobe in [0] + (nprobes if built == "ivf" else []):
        if nprobe:
            index.set_nprobe(nprobe)  # type: ignore[attr-defined]
        ids, times = [], []
        for q in qvecs:
            t = time.perf_counter()
            hits = mem.retrieve_vector(q, k=10, threshold=-1.0)
            times.append(time.perf_counter() - t)
            ids.append([h.edit.id for h in hits])
        row = {"index": kind, "built_as": built, "nlist": getattr(index, "nlist", 0),
               "nprobe": getattr(index, "nprobe", 0), "default_nprobe": not nprobe,
               "open_and_build_s": open_s, "p50_ms": 1e3 * pct(times, 0.5),
               "p99_ms": 1e3 * pct(times, 0.99), "ids": ids}
        if exact_ids is not None:
            row["recall_at_10"] = float(np.mean([len(set(a) & set(b)) / max(1, len(b))
                                                 for a, b in zip(ids, exact_ids)]))
        rows.append(row)
    mem.close()
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="exact,faiss")
    ap.add_argument("--real", type=int, default=REAL, help="facts embedded for real")
    ap.add_argument("--nprobes", default="", help="extra IVF nprobe settings to time, e.g. 32,64")
    ap.add_argument("--json", default=None, help="output path (default results/bench/...)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    nprobes = [int(x) for x in args.nprobes.split(",") if x]
    n_real = min(args.real, max(sizes))
    texts = facts(max(sizes))
    real = vectors(texts[:n_real], "facts")
    qtexts = questions(args.queries)
    qvecs = vectors(qtexts, "questions")

    from editkit.embedder import shared_embedder
    emb = shared_embedder()
    embed_q = timed(lambda: emb.encode([qtexts[0]]), repeat=30, warmup=3)
    sample = texts[:256]
    embed_rate = len(sample) / min(timed(lambda: emb.encode(sample, batch_size=128), repeat=2))

    rows, out_rows = [], []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "memory.sqlite"
            rate = build_file(path, texts[:n], corpus_vectors(n, real))
            exact_ids = None
            for kind in (["exact"] if "exact" in kinds else []) + [k for k in kinds
                                                                   if k != "exact"]:
                for r in measure(path, kind, qvecs, exact_ids, nprobes):
                    if kind == "exact":
                        exact_ids = r["ids"]
                    r.pop("ids")
                    r.update(facts=n, insert_per_s=rate, real_vectors=min(n, n_real),
                             file_mb=path.stat().st_size / 2**20)
                    out_rows.append(r)
                    rows.append([n, kind, r["built_as"],
                                 f"{r['nprobe']}/{r['nlist']}" if r["nlist"] else "-",
                                 f"{rate:,.0f}", r["open_and_build_s"], r["p50_ms"], r["p99_ms"],
                                 r.get("recall_at_10", 1.0 if kind == "exact" else "n/a")])
                    print(rows[-1], flush=True)
    print()
    print(f"question embedding: p50 {1e3 * pct(embed_q, 0.5):.1f} ms, p99 "
          f"{1e3 * pct(embed_q, 0.99):.1f} ms; fact embedding {embed_rate:,.0f} facts/s "
          "(add() = embedding + insert)")
    print(table(["facts", "index", "built as", "nprobe/nlist", "insert/s", "open+build s",
                 "p50 ms",
                 "p99 ms", "recall@10 vs exact"], rows))
    payload = {"rows": out_rows, "queries": args.queries, "real_vectors": n_real,
               "question_embed_ms": {"p50": 1e3 * pct(embed_q, 0.5),
                                     "p99": 1e3 * pct(embed_q, 0.99)},
               "fact_embed_per_s": embed_rate}
    print("wrote", save("memory_scale", payload, args.json))
    return payload


if __name__ == "__main__":
    main()
