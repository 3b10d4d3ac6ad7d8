"""One-off: speed/recall of FAISS IVF and HNSW on the cached 100k real fact vectors and real questions
(run `editkit bench memory_scale` first so the vectors are cached). Numbers: docs/benchmarks.md."""
import time

import faiss
import numpy as np

from editkit.loading import cache_dir

B = cache_dir() / 'bench'
X = np.load(B / 'facts-100000.npy'); Q = np.load(B / 'questions-500.npy')[:200]
faiss.omp_set_num_threads(1)
flat = faiss.IndexFlatIP(384); flat.add(X); _, gt = flat.search(Q, 10)
t=time.perf_counter(); 
for q in Q: flat.search(q[None], 10)
print("flat 1thr ms", (time.perf_counter()-t)/len(Q)*1e3)
for nlist in (316, 1000):
    quant = faiss.IndexFlatIP(384); ivf = faiss.IndexIVFFlat(quant, 384, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0); ivf.train(X[rng.choice(len(X), min(len(X), 40*nlist), replace=False)]); ivf.add(X)
    for nprobe in (16, 32, 64, 128):
        if nprobe > nlist: continue
        ivf.nprobe = nprobe
        t=time.perf_counter(); I=[ivf.search(q[None],10)[1][0] for q in Q]; dt=(time.perf_counter()-t)/len(Q)*1e3
        rec=np.mean([len(set(a)&set(b))/10 for a,b in zip(I,gt)])
        print(nlist, nprobe, f"{dt:.2f} ms", f"recall {rec:.3f}")
for M in (32,):
    h = faiss.IndexHNSWFlat(384, M, faiss.METRIC_INNER_PRODUCT); h.hnsw.efConstruction=80
    faiss.omp_set_num_threads(2); t=time.perf_counter(); h.add(X); print("hnsw build s", time.perf_counter()-t); faiss.omp_set_num_threads(1)
    for ef in (32, 64, 128):
        h.hnsw.efSearch=ef
        t=time.perf_counter(); I=[h.search(q[None],10)[1][0] for q in Q]; dt=(time.perf_counter()-t)/len(Q)*1e3
        rec=np.mean([len(set(a)&set(b))/10 for a,b in zip(I,gt)])
        print("hnsw", M, ef, f"{dt:.2f} ms", f"recall {rec:.3f}")
