"""The edit store protocol and what every backend shares.

`EditStore` is what `EditableLM`, the retrieval policy and evaluation need from a memory: add,
forget, list, clear and search by embedding similarity. Backends: `sqlite.EditMemory` (the
default: one file, or RAM), `postgres.PostgresEditMemory` (one memory shared by replicas) and
LangChain's `VectorStoreEditMemory`. The helpers here validate input the same way for each, so a
fact one backend refuses is refused by all.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..embedder import Embedder
from ..errors import InvalidInputError
from ..records import (
    DEFAULT_NAMESPACE,
    Edit,
    FactInput,
    RetrievedEdit,
    check_namespace,
)
from .settings import DEFAULT_THRESHOLD, DEFAULT_TOP_K

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

EDIT_COLUMNS = ("id, text, subject, relation, object, namespace, created_at, key, superseded_by, "
                "superseded_at")
"""The columns of an edit row, in `edit_from_row` order (both SQL backends)."""
N_EDIT_COLUMNS = len(EDIT_COLUMNS.split(","))


@runtime_checkable
class EditStore(Protocol):
    """What EditableLM needs from a memory; `EditMemory` is the default, integrations add others.

    path: where the edits live, for messages and `repr` (a file, or e.g. `langchain:FAISS`).
    Every backend keeps history: `add` supersedes older values of a slot under `on_update`
    (`updates.py`), `edits()` lists the live edits and `edits(history=True)` all, `retrieve`
    serves only live edits, or those live at `as_of`.
    embedder: the sentence embedder whose cosine similarities `retrieve` scores with; evaluation
    builds its scratch memories with the same one, so thresholds keep their meaning.
    """

    path: str

    @property
    def embedder(self) -> Embedder: ...
    def add(self, facts: Any, namespace: str = DEFAULT_NAMESPACE, *,
            on_update: str = "latest") -> list[Edit]: ...
    def forget(self, edit_id: str, namespace: str | None = None) -> Edit: ...
    def edits(self, namespace: str | None = None, *, history: bool = False) -> list[Edit]: ...
    def clear(self, namespace: str | None = None) -> int: ...
    def retrieve(self, question: str, *, k: int = DEFAULT_TOP_K,
                 threshold: float = DEFAULT_THRESHOLD,
                 namespace: str = DEFAULT_NAMESPACE, as_of: Any = None
                 ) -> list[RetrievedEdit]: ...


class ClosesOnExit:
    """`with memory:` closes it on the way out (both SQL backends)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def check_k(k: Any) -> int:
    """Validate a number of edits to retrieve: an int ≥ 1 (a bool is not a number of edits)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"k must be an int ≥ 1, got {k!r}.")
    return k


def new_edits(facts: Any, namespace: str) -> list[Edit]:
    """Validate one fact or a list of facts (str, dict or FactInput) and the namespace, all before
    anything is stored, and give each a fresh id and the current time."""
    items = facts if isinstance(facts, (list, tuple)) else [facts]
    if not items:
        raise InvalidInputError("edit() got an empty list of facts.")
    parsed = [FactInput.parse(f) for f in items]
    ns = check_namespace(namespace)
    now = time.time()
    return [Edit(id=uuid.uuid4().hex[:16], namespace=ns, created_at=now, **p.model_dump())
            for p in parsed]


def unit_vectors(vectors: Any, n: int, dim: int) -> np.ndarray:
    """Validate `n` precomputed embeddings of dimension `dim` (finite, non-zero) and return them
    normalised, float32, so that cosine similarity stays a dot product."""
    vecs = np.asarray(vectors, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape != (n, dim):
        raise InvalidInputError(f"vectors must have shape ({n}, {dim}), got {vecs.shape}.")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    if not np.isfinite(vecs).all() or (norms == 0).any():
        raise InvalidInputError("vectors must be finite and non-zero.")
    return vecs / norms


def edit_from_row(row: Iterable[Any]) -> Edit:
    """An Edit from a row of EDIT_COLUMNS (both backends store them in this order)."""
    r = list(row)
    return Edit(id=r[0], text=r[1], subject=r[2], relation=r[3], object=r[4], namespace=r[5],
                created_at=r[6], key=r[7], superseded_by=r[8], superseded_at=r[9])


def top_k_rows(rows: Sequence[Sequence[Any]], mat: np.ndarray, query: np.ndarray, k: int,
               threshold: float) -> list[RetrievedEdit]:
    """An exact search over rows of EDIT_COLUMNS and their unit vectors `mat`: the k most
    similar to `query` at or above threshold, best first (what an `as_of` audit scans)."""
    if not len(rows):
        return []
    sims = mat @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-sims, kind="stable")[:k]
    return [RetrievedEdit(edit=edit_from_row(rows[i][:N_EDIT_COLUMNS]), score=float(sims[i]))
            for i in order if sims[i] >= threshold]
