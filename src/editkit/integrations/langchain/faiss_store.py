"""A small LangChain `VectorStore` on FAISS (exact inner-product search), for `editkit[scale]`.

It needs only `faiss-cpu` (the `scale` extra), not langchain-community. Vectors are L2-normalised,
so scores are cosine similarities (higher is better). Ids are strings, as everywhere in
LangChain; adding a document with an existing id replaces it.

    store = FaissVectorStore(EditkitEmbeddings())
    memory = VectorStoreEditMemory(store)        # editkit's edit memory on a FAISS index
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from ...errors import InvalidInputError
from ...retrieval.store import check_k

Filter = Callable[[Document], bool] | dict[str, Any] | None


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("FaissVectorStore needs faiss-cpu: pip install 'editkit[scale]'.") \
            from exc
    return faiss


def _matches(doc: Document, flt: Filter) -> bool:
    """A callable filter, or a dict of metadata key -> value (or list of accepted values)."""
    if flt is None:
        return True
    if callable(flt):
        return bool(flt(doc))
    if isinstance(flt, dict):
        for key, want in flt.items():
            have = doc.metadata.get(key)
            if isinstance(want, (list, tuple, set)):
                if have not in want:
                    return False
            elif have != want:
                return False
        return True
    raise InvalidInputError(f"filter must be a callable or a dict, got {type(flt).__name__}.")


class FaissVectorStore(VectorStore):
    """Documents in RAM, their vectors in a FAISS `IndexIDMap2(IndexFlatIP)`; exact search."""

    def __init__(self, embedding: Embeddings) -> None:
        if not isinstance(embedding, Embeddings):
            raise InvalidInputError("embedding must be a LangChain Embeddings object.")
        self._faiss = _import_faiss()
        self._embedding = embedding
        self._index: Any = None  # built on the first add, once the dimension is known
        self._docs: dict[str, Document] = {}
        self._int_of: dict[str, int] = {}
        self._str_of: dict[int, str] = {}
        self._next = 0
        self._lock = threading.RLock()

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    def __len__(self) -> int:
        return len(self._docs)

    def _vectors(self, texts: Sequence[str], query: bool = False) -> np.ndarray:
        raw = ([self._embedding.embed_query(texts[0])] if query
               else self._embedding.embed_documents(list(texts)))
        vecs = np.asarray(raw, dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.where(norms == 0, 1.0, norms)

    # ---- writes ---------------------------------------------------------------------------
    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Add or replace documents; ids come from `ids=` or `doc.id`, else new uuids."""
        docs = list(documents)
        ids = kwargs.get("ids")
        if ids is not None and len(ids) != len(docs):
            raise InvalidInputError(f"Got {len(ids)} ids for {len(docs)} documents.")
        ids = [str(i) if i else (d.id or uuid.uuid4().hex)
               for i, d in zip(ids or [None] * len(docs), docs)]
        if not docs:
            return []
        vecs = self._vectors([d.page_content for d in docs])
        with self._lock:
            if self._index is None:
                self._index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(vecs.shape[1]))
            elif vecs.shape[1] != self._index.d:
                raise InvalidInputError(f"Vectors of dimension {vecs.shape[1]} do not fit this "
                                        f"index (dimension {self._index.d}).")
            self._remove([i for i in ids if i in self._docs])
            nums = []
            for doc_id, doc in zip(ids, docs):
                n = self._next
                self._next += 1
                self._int_of[doc_id], self._str_of[n] = n, doc_id
                self._docs[doc_id] = Document(page_content=doc.page_content,
                                              metadata=dict(doc.metadata), id=doc_id)
                nums.append(n)
            self._index.add_with_ids(vecs, np.asarray(nums, dtype=np.int64))
        return ids

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None,
                  *, ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(f"Got {len(metadatas)} metadatas for {len(texts)} texts.")
        docs = [Document(page_content=t, metadata=(metadatas[i] if metadatas else {}))
                for i, t in enumerate(texts)]
        return self.add_documents(docs, ids=ids)

    def _remove(self, ids: Sequence[str]) -> None:
        nums = [self._int_of.pop(i) for i in ids if i in self._int_of]
        for i in ids:
            self._docs.pop(i, None)
        for n in nums:
            self._str_of.pop(n, None)
        if nums and self._index is not None:
            self._index.remove_ids(np.asarray(nums, dtype=np.int64))

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete by id (missing ids are ignored); `ids=None` deletes everything."""
        with self._lock:
            self._remove(list(self._docs) if ids is None else list(ids))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        with self._lock:
            return [self._docs[i] for i in dict.fromkeys(ids) if i in self._docs]

    # ---- search ---------------------------------------------------------------------------
    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4,
                                               filter: Filter = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """Best `k` documents passing `filter`, with cosine similarity; exact (searches wider
        until enough pass the filter or the whole index has been seen)."""
        check_k(k)
        q = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        with self._lock:
            if self._index is None or self._index.ntotal == 0:
                return []
            total = self._index.ntotal
            want = k if filter is None else max(4 * k, int(kwargs.get("fetch_k", 20)))
            while True:
                n = min(want, total)
                scores, nums = self._index.search(q, n)
                out = []
                for s, num in zip(scores[0], nums[0]):
                    doc_id = self._str_of.get(int(num))
                    if doc_id is None:
                        continue
                    doc = self._docs[doc_id]
                    if _matches(doc, filter):
                        out.append((doc, float(s)))
                if len(out) >= k or n >= total:
                    return out[:k]
                want *= 4

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Filter = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(
            self._vectors([query], query=True)[0].tolist(), k=k, filter=filter, **kwargs)

    def similarity_search(self, query: str, k: int = 4, filter: Filter = None,
                          **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    filter: Filter = None,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter,
                                                                          **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: score  # already a cosine similarity

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> FaissVectorStore:
        store = cls(embedding)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def __repr__(self) -> str:
        return f"FaissVectorStore(documents={len(self)})"
