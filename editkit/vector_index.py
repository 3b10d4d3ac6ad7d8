"""In-RAM vector indexes behind the edit memory: exact (numpy) or FAISS (IVF once it is large).

SQLite stays the source of truth; an index is a per-process cache of one namespace's vectors that
the memory keeps in step with the database. Vectors are unit-norm, so inner product = cosine.

Why two: exact search reads every vector per query, which is memory-bound (~14 GB/s here, i.e.
~11 ms per query at 100k facts of dim 384). An IVF index reads only `nprobe` of its `nlist`
clusters, so it stays in the low milliseconds at a million facts, at the price of being approximate
(docs/benchmarks.md measures its recall@10 against exact search).
"""
from __future__ import annotations

import math
from typing import Literal, Protocol

import numpy as np

from .errors import InvalidInputError

IndexKind = Literal["auto", "exact", "faiss"]

# Below this many vectors, FAISS also searches exactly (a flat index): an IVF index needs enough
# points to train its clusters, and exact search is already fast at this size.
IVF_MIN = 20_000


class VectorIndex(Protocol):
    """What the memory needs: add and remove labelled vectors, top-k inner-product search."""

    built_size: int

    def __len__(self) -> int: ...
    def add(self, labels: np.ndarray, vecs: np.ndarray) -> None: ...
    def remove(self, labels: np.ndarray) -> None: ...
    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def wants_rebuild(self) -> bool: ...


class ExactIndex:
    """Brute-force search over a growable float32 matrix (amortised O(1) appends)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._mat = np.zeros((0, dim), dtype=np.float32)
        self._labels = np.zeros(0, dtype=np.int64)
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
        self._n = need

    def remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self._labels[:self._n], labels)
        n = int(keep.sum())
        self._mat[:n] = self._mat[:self._n][keep]
        self._labels[:n] = self._labels[:self._n][keep]
        self._n = n

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._n == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        sims = self._mat[:self._n] @ query
        k = min(k, self._n)
        top = np.argpartition(-sims, k - 1)[:k] if k < self._n else np.arange(self._n)
        top = top[np.argsort(-sims[top], kind="stable")]
        return sims[top], self._labels[:self._n][top]

    def wants_rebuild(self) -> bool:
        return False


class FaissIndex:
    """FAISS: a flat (exact) index while small, an IVF-Flat index from IVF_MIN vectors on.

    nlist = sqrt(n) clusters trained on a 40-per-cluster sample (seconds at 1M on 2 cores);
    nprobe = max(nprobe_min, nprobe_frac * nlist) clusters are read per query. Questions sit far
    from the facts they ask about (cosine ~0.5), so their neighbours spread over many clusters:
    on real CounterFact questions recall@10 reaches 0.95 only near a third of the clusters
    (docs/benchmarks.md has the curve). The memory rebuilds the index from the database when it
    has grown 4x since it was trained, so clusters stay balanced.
    """

    def __init__(self, dim: int, vecs: np.ndarray, labels: np.ndarray, *,
                 ivf_min: int = IVF_MIN, nprobe_min: int = 16, nprobe_frac: float = 0.33,
                 seed: int = 0) -> None:
        import faiss

        self.dim = dim
        self.ivf_min = ivf_min
        self.built_size = len(labels)
        n = len(labels)
        if n < ivf_min:
            self.kind = "flat"
            self.nlist = self.nprobe = 0
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        else:
            self.kind = "ivf"
            self.nlist = max(16, int(math.sqrt(n)))
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = vecs[rng.choice(n, size=min(n, 40 * self.nlist), replace=False)]
            ivf.cp.seed = seed
            ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
            self.nprobe = min(self.nlist, max(nprobe_min, int(nprobe_frac * self.nlist)))
            ivf.nprobe = self.nprobe
            self._index = ivf
        if n:
            self.add(labels, vecs)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        self._index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32),
                                 np.ascontiguousarray(labels, dtype=np.int64))

    def remove(self, labels: np.ndarray) -> None:
        self._index.remove_ids(np.ascontiguousarray(labels, dtype=np.int64))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        sims, labels = self._index.search(np.ascontiguousarray(query[None], dtype=np.float32),
                                          min(k, len(self)))
        ok = labels[0] >= 0  # IVF pads with -1 when the probed clusters hold fewer than k
        return sims[0][ok], labels[0][ok]

    def set_nprobe(self, nprobe: int) -> None:
        """Clusters read per query (IVF only): the speed/recall knob."""
        if self.kind == "ivf":
            self.nprobe = min(self.nlist, max(1, nprobe))
            self._index.nprobe = self.nprobe

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
        return FaissIndex(dim, vecs, labels)
    index = ExactIndex(dim)
    if len(labels):
        index.add(labels, vecs)
    index.built_size = len(labels)
    return index
