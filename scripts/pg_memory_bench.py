"""PostgreSQL + pgvector edit memory against the SQLite one, on the same vectors, in one run.

    .venv/bin/python scripts/pg_memory_bench.py --sizes 1000,3000,10000,30000,100000 --real 10000

Per size, one namespace holding every vector is loaded into each backend through
`add_embedded` (the write path without the embedder; bulk COPY for PostgreSQL, one SQLite
transaction per 10k batch), then timed through `retrieve_vector(k=10)` (search plus reading the
hits back as Edits):
- pg exact: the namespace's rows scanned and sorted by cosine distance in the database;
- pg hnsw: the namespace's partial HNSW index (m 16, ef_construction 64; the default
  hnsw.ef_search, then each --ef setting), built by `PostgresEditMemory.ensure_ann_index`
  after the load (build time reported);
- sqlite: the default `EditMemory` (index "auto": exact below 20k, FAISS IVF-PQ from 20k).
Recall@10 compares each with pg exact; hit@1 is the share of queries whose planted neighbour
comes first.

Vectors: the size sweep uses random unit vectors (embedding a million sentences takes ~50 min
on 2 cores); each query is a stored vector mixed with noise to cosine ~0.6, so it has one true
neighbour and nine near-ties at noise level, a worst case for approximate search. `--real N`
adds a row set on N real embedded facts with real CounterFact questions (editkit.benchmarks);
`--semi N` one on N vectors made of those real ones plus noisy copies of them (cosine ~0.85,
as `editkit bench memory_scale` does beyond its real vectors), asked the same real questions.
Add throughput: bulk (`add_embedded`, 10k a call) and one fact per call with the real embedder
(`add`), on both backends. PostgreSQL is a throwaway local server (editkit.retrieval.pg_local,
pgserver's binaries) unless --url names one.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from editkit.benchmarks.common import pct, save, table
from editkit.retrieval import EditMemory
from editkit.retrieval.pg_local import LocalPostgres
from editkit.retrieval.postgres import DEFAULT_EF_SEARCH, PostgresEditMemory

DIM, BATCH, K = 384, 10_000, 10
SERVER = {"shared_buffers": "2GB", "maintenance_work_mem": "3GB", "work_mem": "64MB",
          "max_parallel_maintenance_workers": "1", "synchronous_commit": "on"}


def random_set(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random unit vectors, and queries near `queries` of them (cosine ~0.6): (vecs, qvecs,
    index of each query's planted neighbour)."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    target = rng.choice(n, size=queries, replace=False)
    noise = rng.standard_normal((queries, DIM), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = 0.6 * vecs[target] + 0.8 * noise
    return vecs, q / np.linalg.norm(q, axis=1, keepdims=True), target


def real_set(n: int, queries: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    from editkit.benchmarks.facts import facts, questions, vectors

    texts = facts(n)
    return texts, vectors(texts, "facts"), vectors(questions(queries), "questions")


def load(mem: Any, texts: list[str], vecs: np.ndarray) -> float:
    """Store everything through add_embedded, BATCH a call; return edits per second."""
    t = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        mem.add_embedded(texts[i:i + BATCH], vecs[i:i + BATCH], on_update="keep-both")
    return len(texts) / (time.perf_counter() - t)


def search(mem: Any, qvecs: np.ndarray, **kw: Any) -> tuple[list[float], list[list[str]]]:
    mem.retrieve_vector(qvecs[0], k=K, threshold=-1.0, **kw)  # warm (SQLite: builds its index)
    times, hits = [], []
    for q in qvecs:
        t = time.perf_counter()
        found = mem.retrieve_vector(q, k=K, threshold=-1.0, **kw)
        times.append(time.perf_counter() - t)
        hits.append([h.edit.text for h in found])
    return times, hits


def row(n: int, kind: str, backend: str, rate: float, build_s: float | str,
        times: list[float], hits: list[list[str]], exact: list[list[str]],
        planted: list[str] | None) -> dict[str, Any]:
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(hits, exact)]))
    hit1 = (float(np.mean([bool(h) and h[0] == p for h, p in zip(hits, planted)]))
            if planted is not None else None)
    return {"vectors": n, "kind": kind, "backend": backend, "load_per_s": rate,
            "index_build_s": build_s, "p50_ms": 1e3 * pct(times, 0.5),
            "p95_ms": 1e3 * pct(times, 0.95), "recall_at_10": recall, "hit_at_1": hit1,
            "queries": len(times)}


def one_size(url: str, tmp: Path, n: int, texts: list[str], vecs: np.ndarray,
             qvecs: np.ndarray, planted: list[str] | None, kind: str,
             exact_queries: int, hnsw: bool = True,
             efs: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """One size on every backend; `efs`: further hnsw.ef_search settings to time."""
    out = []
    pg = PostgresEditMemory(url, ann_min_edits=0)
    rate = load(pg, texts, vecs)
    qx = qvecs[:exact_queries]
    plant = planted[:exact_queries] if planted else None
    times, exact = search(pg, qx, exact=True)
    out.append(row(n, kind, "pg exact", rate, "-", times, exact, exact, plant))
    print(out[-1], flush=True)
    if hnsw:
        t = time.perf_counter()
        pg.ensure_ann_index("default")
        build = time.perf_counter() - t
        for ef in (DEFAULT_EF_SEARCH, *efs):
            with PostgresEditMemory(url, ann_min_edits=0, ef_search=ef) as mem:
                times, hits = search(mem, qx)
            out.append(row(n, kind, f"pg hnsw ef{ef}", rate, build, times, hits, exact, plant))
            print(out[-1], flush=True)
    pg.clear()
    pg.close()
    path = tmp / f"{uuid.uuid4().hex}.sqlite"
    sq = EditMemory(path)
    rate = load(sq, texts, vecs)
    sq.close()
    sq = EditMemory(path)
    t = time.perf_counter()
    times, hits = search(sq, qx)
    build = time.perf_counter() - t - sum(times)
    kind_built = getattr(sq._index("default").index, "kind", "exact")
    out.append(row(n, kind, f"sqlite ({kind_built})", rate, build, times, hits, exact, plant))
    print(out[-1], flush=True)
    sq.close()
    path.unlink()
    return out


def add_rates(url: str, tmp: Path, n: int) -> list[list[Any]]:
    """One fact per call through `add` (real embedder), then one pre-embedded fact per call
    (the commit alone), on both backends."""
    from editkit.benchmarks.facts import facts

    texts = facts(n, seed=7)
    out = []
    for name, mem in (("pg", PostgresEditMemory(url, ann_min_edits=0)),
                      ("sqlite", EditMemory(tmp / "adds.sqlite"))):
        vecs = mem.embedder.encode(texts)
        t = time.perf_counter()
        for f in texts:
            mem.add(f, namespace="adds")
        real = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for f, v in zip(texts, vecs):
            mem.add_embedded(f, v[None], namespace="adds-embedded")
        bare = n / (time.perf_counter() - t)
        out.append([name, f"{real:,.0f}", f"{bare:,.0f}"])
        print(out[-1], flush=True)
        mem.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,3000,10000,30000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries-max", type=int, default=50,
                    help="queries timed at the largest sizes (exact search is slow there)")
    ap.add_argument("--real", type=int, default=10_000, help="real embedded facts (0: none)")
    ap.add_argument("--semi", type=int, default=0,
                    help="also this many vectors: the real ones plus noisy copies of them "
                         "(cosine ~0.85, as memory_scale), asked with real questions")
    ap.add_argument("--ef", default="", help="further hnsw.ef_search settings, e.g. 40,400")
    ap.add_argument("--adds", type=int, default=200, help="facts added one per call")
    ap.add_argument("--hnsw-max", type=int, default=300_000,
                    help="build HNSW only up to this size (1M took longer than the budget)")
    ap.add_argument("--url", default=None, help="an existing PostgreSQL (default: a local one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="editkit-pgbench-") as tmpdir:
        tmp = Path(tmpdir)
        local = None if args.url else LocalPostgres(tmp / "pg", settings=SERVER)
        if local is not None:
            local.start()
        try:
            def url() -> str:
                name = f"bench_{uuid.uuid4().hex[:8]}"
                return local.create_database(name) if local is not None else args.url

            for n in sizes:
                vecs, qvecs, target = random_set(n, args.queries)
                texts = [f"fact {i}." for i in range(n)]
                nq = args.queries if n <= 100_000 else min(args.queries, args.exact_queries_max)
                rows += one_size(url(), tmp, n, texts, vecs, qvecs,
                                 [texts[i] for i in target], "random", nq, n <= args.hnsw_max)
            efs = tuple(int(x) for x in args.ef.split(",") if x)
            if args.real:
                texts, vecs, qvecs = real_set(args.real, args.queries)
                rows += one_size(url(), tmp, args.real, texts, vecs, qvecs, None,
                                 "real facts", args.queries, efs=efs)
            if args.semi:
                from editkit.benchmarks.facts import facts
                from editkit.benchmarks.memory_scale import corpus_vectors

                _, real, qvecs = real_set(args.real or 10_000, args.queries)
                rows += one_size(url(), tmp, args.semi, facts(args.semi),
                                 corpus_vectors(args.semi, real), qvecs, None,
                                 "real + noisy copies", args.queries, efs=efs)
            adds = add_rates(url(), tmp, args.adds) if args.adds else []
        finally:
            if local is not None:
                local.destroy()
    print()
    print(table(["vectors", "kind", "backend", "load edits/s", "index build s", "p50 ms",
                 "p95 ms", "recall@10 vs pg exact", "planted hit@1", "queries"],
                [[r["vectors"], r["kind"], r["backend"], f"{r['load_per_s']:,.0f}",
                  r["index_build_s"], r["p50_ms"], r["p95_ms"], r["recall_at_10"],
                  "-" if r["hit_at_1"] is None else r["hit_at_1"], r["queries"]]
                 for r in rows]))
    if adds:
        print()
        print(table(["backend", "add() one fact a call, facts/s (embedder included)",
                     "add_embedded one fact a call, facts/s (the commit alone)"], adds))
    payload = {"rows": rows, "adds": adds, "server_settings": SERVER}
    print("wrote", save("pg_memory", payload, args.json))
    return payload


if __name__ == "__main__":
    main()
