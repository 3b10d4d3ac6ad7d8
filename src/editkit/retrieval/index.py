"""In-RAM vector indexes behind the edit memory: exact (numpy) or FAISS (IVF-PQ once it is large).

SQLite stays the source of truth; an index is a per-process cache of one namespace's vectors that
the memory keeps in step with the database. Vectors are unit-norm, so inner product = cosine.

Why two: exact search reads every vector per query, which is memory-bound (~14 GB/s here, i.e.
~11 ms per query at 100k facts of dim 384). An IVF index reads only `nprobe` of its `nlist`
clusters, as 4-bit PQ codes, and re-ranks its best candidates exactly, so it stays in the low
milliseconds at a million facts, at the price of being approximate (docs/benchmarks.md measures
its recall@10 against exact search).
"""
from __future__ import annotations

import math
from typing import Literal, Protocol

import numpy as np

from ..errors import InvalidInputError

IndexKind = Literal["auto", "exact", "faiss"]

# Below this many vectors, FAISS also searches exactly (a flat index): an IVF index needs enough
# points to train its clusters, and exact search is already fast at this size.
IVF_MIN = 20_000
# Share of the IVF clusters probed per query, and candidates re-ranked exactly per result: chosen
# on real CounterFact questions for recall@10 >= 0.95 (scripts/ivfpq_curve.py, docs/benchmarks.md).
NPROBE_FRAC = 0.5
RERANK = 30


class VectorIndex(Protocol):
    """What the memory needs: add and remove labelled vectors, top-k inner-product search."""

    built_size: int

    def __len__(self) -> int: ...
    def add(self, labels: np.ndarray, vecs: np.ndarray) -> None: ...
    def remove(self, labels: np.ndarray) -> None: ...
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def wants_rebuild(self) -> bool: ...


class ExactIndex:
    """Brute-force search over a growable float32 matrix (amortised O(1) appends and deletes).

    A label -> row map makes deletes O(1) (the last row moves into the hole) and lets the FAISS
    index re-rank its candidates with these exact vectors.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._mat = np.zeros((0, dim), dtype=np.float32)
        self._labels = np.zeros(0, dtype=np.int64)
        self._row: dict[int, int] = {}
        self._n = 0
        self.built_size = 0

    def __len__(self) -> int:
        return self._n

    def add(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        need = self._n + len(labels)
        if need > len(self._mat):  # grow geometrically so a stream of single edits stays cheap
            cap = max(need, 2 * len(self._mat), 64)
            mat = np.zeros((cap, self.dim), dtype=np.float32)
            lab = np.zeros(cap, dtype=np.int64)
            mat[:self._n], lab[:self._n] = self._mat[:self._n], self._labels[:self._n]
            self._mat, self._labels = mat, lab
        self._mat[self._n:need] = vecs
        self._labels[self._n:need] = labels
        self._row.update(zip(np.asarray(labels).tolist(), range(self._n, need)))
        self._n = need

    def remove(self, labels: np.ndarray) -> None:
        for lab in np.asarray(labels).tolist():
            row = self._row.pop(lab, None)
            if row is None:
                continue
            last = self._n - 1
            if row != last:  # move the last row into the hole
                moved = int(self._labels[last])
                self._mat[row], self._labels[row] = self._mat[last], moved
                self._row[moved] = row
            self._n = last

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """The stored vectors of `labels` (all of which must be present)."""
        return self._mat[[self._row[lab] for lab in np.asarray(labels).tolist()]]

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._n == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        sims = self._mat[:self._n] @ query
        return _top(sims, self._labels[:self._n], k)

    def wants_rebuild(self) -> bool:
        return False


def _top(sims: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (similarity, label) pairs, best first (ties keep their order)."""
    k = min(k, len(sims))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    top = top[np.argsort(-sims[top], kind="stable")]
    return sims[top], labels[top]


def _pq_subquantizers(dim: int, dims_per_code: int = 4, min_codes: int = 16) -> int:
    """PQ sub-quantizers (4 bits each): one per `dims_per_code` dimensions, but at least
    `min_codes` (small embeddings would otherwise get codes too coarse to rank candidates);
    the largest divisor of dim within that budget."""
    budget = min(dim, max(dim // dims_per_code, min_codes))
    return max(m for m in range(1, budget + 1) if dim % m == 0)


class FaissIndex:
    """Exact (numpy) search while small; from IVF_MIN vectors on, a FAISS IVF-PQ fast-scan index
    that proposes `rerank * k` candidates which are then re-ranked exactly.

    Why this shape: questions sit far from the facts they ask about (cosine ~0.5), so their
    neighbours spread over many clusters and recall@10 needs a third to a half of the clusters
    probed (docs/benchmarks.md has the curve). Scanning half of a million float vectors reads
    ~750 MB per query; 4-bit PQ codes (dim/8 bytes a vector: 48 for dim 384) make that scan 32x
    smaller, and fast-scan keeps its lookup tables in SIMD registers. PQ distances are coarse, so
    the top `rerank * k` candidates are re-scored with the exact vectors, which also keeps the
    returned similarities exact (thresholds mean the same as with exact search).

    nlist = sqrt(n) clusters trained on a 40-per-cluster sample; nprobe = max(nprobe_min,
    nprobe_frac * nlist). Defaults measured on real questions (scripts/ivfpq_curve.py): at 1M
    facts, half the clusters and 30x re-ranking give recall@10 0.98 in ~4 ms on one core. The
    memory rebuilds the index from the database when it has grown 4x since it was trained, so
    clusters stay balanced.
    """

    def __init__(self, dim: int, vecs: np.ndarray, labels: np.ndarray, *,
                 ivf_min: int = IVF_MIN, nprobe_min: int = 16, nprobe_frac: float = NPROBE_FRAC,
                 rerank: int = RERANK, seed: int = 0) -> None:
        import faiss

        self.dim = dim
        self.ivf_min = ivf_min
        self.rerank = rerank
        self.built_size = n = len(labels)
        self._exact = ExactIndex(dim)  # the re-rank store, and the whole search while small
        self._ivf = None
        if n < ivf_min:
            self.nlist = self.nprobe = 0
        else:
            self.nlist = max(16, int(math.sqrt(n)))
            ivf = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, self.nlist,
                                           _pq_subquantizers(dim), 4, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = vecs[rng.choice(n, size=min(n, 40 * self.nlist), replace=False)]
            ivf.cp.seed = seed
            ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
            self._ivf = ivf
            self.set_nprobe(max(nprobe_min, int(nprobe_frac * self.nlist)))
        if n:
            self.add(labels, vecs)

    @property
    def kind(self) -> str:
        """'flat' (exact search) while small, 'ivf' once built as IVF-PQ."""
        return "flat" if self._ivf is None else "ivf"

    def __len__(self) -> int:
        return len(self._exact)

    def add(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        self._exact.add(labels, vecs)
        if self._ivf is not None:
            self._ivf.add_with_ids(vecs, labels)

    def remove(self, labels: np.ndarray) -> None:
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        self._exact.remove(labels)
        if self._ivf is not None:
            self._ivf.remove_ids(labels)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._ivf is None or len(self) == 0:
            return self._exact.search(query, k)
        q = np.ascontiguousarray(query[None], dtype=np.float32)
        _, cand = self._ivf.search(q, min(len(self), self.rerank * k))
        cand = cand[0][cand[0] >= 0]  # IVF pads with -1 when the probed clusters hold too few
        if len(cand) == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        return _top(self._exact.vectors(cand) @ query, cand, k)

    def set_nprobe(self, nprobe: int) -> None:
        """Clusters read per query (IVF only): the speed/recall knob."""
        if self._ivf is not None:
            self.nprobe = min(self.nlist, max(1, nprobe))
            self._ivf.nprobe = self.nprobe

    def wants_rebuild(self) -> bool:
        n = len(self)
        return (n >= self.ivf_min and self.kind == "flat") or (
            self.kind == "ivf" and n > 4 * self.built_size)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kind(kind: str) -> Literal["exact", "faiss"]:
    """'auto' is FAISS when installed (`pip install editkit[scale]`), else exact search."""
    if kind not in ("auto", "exact", "faiss"):
        raise InvalidInputError(f"index must be 'auto', 'exact' or 'faiss', not {kind!r}.")
    if kind == "faiss" and not faiss_available():
        raise InvalidInputError("index='faiss' needs faiss: `pip install editkit[scale]`.")
    if kind == "auto":
        return "faiss" if faiss_available() else "exact"
    return kind  # type: ignore[return-value]


def build_index(kind: Literal["exact", "faiss"], dim: int, vecs: np.ndarray,
                labels: np.ndarray) -> VectorIndex:
    """A fresh index over (labels, vecs), of the kind asked for."""
    if kind == "faiss":
        return FaissIndex(dim, vecs, labels, ivf_min=IVF_MIN)  # read now: tests lower it
    index = ExactIndex(dim)
    if len(labels):
        index.add(labels, vecs)
    index.built_size = len(labels)
    return index
