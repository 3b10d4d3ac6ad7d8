"""One-off: speed/recall of IVF-PQ fast-scan + exact re-rank (the large-memory index) against
IVF-Flat, at 100k real fact vectors and at 1M (real + noisy copies, as
editkit.benchmarks.memory_scale),
on real questions, single queries, 1 thread. Numbers: docs/benchmarks.md.

    python scripts/ivfpq_curve.py --sizes 100000,1000000
"""
import argparse
import time

import faiss
import numpy as np

from editkit.benchmarks.memory_scale import corpus_vectors
from editkit.loading import cache_dir

ap = argparse.ArgumentParser()
ap.add_argument("--sizes", default="100000,1000000")
ap.add_argument("--pq", default="48,96")
ap.add_argument("--fracs", default="0.05,0.1,0.2,0.33")
ap.add_argument("--kfactors", default="4,10")
ap.add_argument("--mults", default="1,4", help="nlist = mult * sqrt(n)")
args = ap.parse_args()
B = cache_dir() / "bench"
real = np.load(B / "facts-100000.npy")
Q = np.load(B / "questions-500.npy")[:200]
d = real.shape[1]
for n in [int(s) for s in args.sizes.split(",")]:
    X = corpus_vectors(n, real)
    faiss.omp_set_num_threads(2)
    flat = faiss.IndexFlatIP(d)
    flat.add(X)
    _, gt = flat.search(Q, 10)
    del flat
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    for mult in [int(x) for x in args.mults.split(",")]:
        nlist = mult * int(np.sqrt(n))
        sample = X[rng.choice(n, min(n, 40 * nlist), replace=False)]
        for M in [int(m) for m in args.pq.split(",")]:
            faiss.omp_set_num_threads(2)
            t = time.perf_counter()
            idx = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(d), d, nlist, M, 4,
                                           faiss.METRIC_INNER_PRODUCT)
            idx.train(sample)
            idx.add(X)
            build = time.perf_counter() - t
            faiss.omp_set_num_threads(1)
            for frac in [float(f) for f in args.fracs.split(",")]:
                idx.nprobe = max(1, int(frac * nlist))
                for kf in [int(k) for k in args.kfactors.split(",")]:
                    res, t0 = [], time.perf_counter()
                    for q in Q:
                        _, cand = idx.search(q[None], 10 * kf)
                        c = cand[0][cand[0] >= 0]
                        s = X[c] @ q
                        res.append(c[np.argsort(-s)[:10]])
                    ms = (time.perf_counter() - t0) / len(Q) * 1e3
                    rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res, gt)])
                    print(f"n={n} nlist={nlist} PQ{M}x4fs build {build:.0f}s nprobe={idx.nprobe} "
                          f"k_factor={kf}: {ms:.2f} ms recall@10 {rec:.3f}", flush=True)
            del idx
