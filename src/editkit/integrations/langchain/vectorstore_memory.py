"""An edit memory that keeps its index in any LangChain `VectorStore`.

`VectorStoreEditMemory` implements `editkit.retrieval.EditStore`, so it drops into
`EditableLM(..., memory=...)` or `EditableLM.from_pretrained(memory=...)` in place of the SQLite
memory:

    store = InMemoryVectorStore(EditkitEmbeddings())
    lm = EditableLM.from_pretrained(memory=VectorStoreEditMemory(store))

The vector store finds candidate edits; scores are then recomputed as the cosine similarity of
editkit's own embedder (the one `EditMemory` uses), whatever distance or relevance function the
store uses, so `threshold` means the same thing for every backend.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore

from ...embedder import Embedder, shared_embedder
from ...errors import EditNotFoundError, InvalidInputError
from ...records import DEFAULT_NAMESPACE, Edit, FactInput, RetrievedEdit, check_namespace
from ...retrieval import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from ...retrieval.store import check_k, new_edits
from ...retrieval.updates import (
    DEFAULT_ON_UPDATE,
    SLOT_CANDIDATES,
    Lookup,
    OnUpdate,
    SlotJudgeSetting,
    check_as_of,
    plan_updates,
    slot_judge_for,
    slot_of,
    with_supersedes,
)

FilterStyle = Literal["callable", "dict", "post"]
EDIT_MARK = "editkit_edit"


def documents_to_facts(documents: Iterable[Any]) -> list[FactInput]:
    """Turn LangChain Documents into validated facts: page_content is the fact text, and string
    `subject`/`relation`/`object` metadata (if present) fill the triple.

    A document longer than a fact may be (1,000 characters) raises `FactTooLongError`: split the
    corpus with a text splitter first, one statement per document.
    """
    docs = list(documents) if not isinstance(documents, Document) else [documents]
    if not docs:
        raise InvalidInputError("add_documents() got no documents.")
    facts = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise InvalidInputError(f"add_documents() takes LangChain Documents; item {i} is a "
                                    f"{type(doc).__name__}.")
        meta = doc.metadata or {}
        triple = {k: meta[k] for k in ("subject", "relation", "object")
                  if isinstance(meta.get(k), str) and meta[k].strip()}
        facts.append(FactInput.parse({"text": doc.page_content, **triple}))
    return facts


def add_documents(memory: Any, documents: Iterable[Document],
                  namespace: str = DEFAULT_NAMESPACE) -> list[Edit]:
    """Store Documents as edits in any `EditStore` (the SQLite `EditMemory` included), one
    transaction where the store supports it. Returns the stored edits."""
    facts = documents_to_facts(documents)
    return memory.add([f.model_dump() for f in facts], namespace=namespace)


def edit_to_document(edit: Edit, score: float | None = None) -> Document:
    """A stored edit as a Document: id = edit id; namespace, triple and score in metadata."""
    meta: dict[str, Any] = {"id": edit.id, "namespace": edit.namespace,
                            "created_at": edit.created_at, EDIT_MARK: True}
    for k in ("subject", "relation", "object"):
        if getattr(edit, k) is not None:
            meta[k] = getattr(edit, k)
    if score is not None:
        meta["score"] = score
    return Document(page_content=edit.text, metadata=meta, id=edit.id)


class VectorStoreEditMemory:
    """`EditStore` whose index is a LangChain VectorStore (InMemoryVectorStore, FAISS, ...).

    vectorstore: the index; edits are added to it as Documents with `id` = edit id and the
      namespace in metadata. It should be empty of other documents, or at least not hold
      documents marked `editkit_edit` that this object did not add.
    filter_style: how to restrict a search to one namespace. "callable" passes
      `filter=lambda doc: ...` (InMemoryVectorStore, FAISS), "dict" passes
      `filter={"namespace": ns}` (FAISS, Chroma, PGVector, ...), "post" searches without a
      filter and drops other namespaces afterwards (any store; fetches `fetch_k` candidates).
    embedder: the embedder that scores candidates (default: editkit's shared MiniLM).

    The catalog of edits (what `edits()` lists) lives in this object, in RAM: a vector store has
    no portable way to list its contents. Use the SQLite `EditMemory` when edits must persist.
    Updates work as in `EditMemory` (`retrieval.updates`): a superseded edit stays in the catalog
    as history and leaves the vector store; forgetting its successor puts it back.
    """

    def __init__(self, vectorstore: VectorStore, *, filter_style: FilterStyle = "callable",
                 fetch_k: int = 20, embedder: Embedder | None = None,
                 slot_judge: SlotJudgeSetting = "learned") -> None:
        if not isinstance(vectorstore, VectorStore):
            raise InvalidInputError(f"vectorstore must be a LangChain VectorStore, got "
                                    f"{type(vectorstore).__name__}.")
        if filter_style not in ("callable", "dict", "post"):
            raise InvalidInputError("filter_style must be 'callable', 'dict' or 'post'.")
        if not isinstance(fetch_k, int) or fetch_k < 1:
            raise InvalidInputError("fetch_k must be an int ≥ 1.")
        self.vectorstore = vectorstore
        self.filter_style = filter_style
        self.fetch_k = fetch_k
        self.path = f"langchain:{type(vectorstore).__name__}"
        self._embedder = embedder
        self._lock = threading.RLock()
        self._edits: dict[str, Edit] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self.slot_judge_setting = slot_judge

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder

    # ---- writes ---------------------------------------------------------------------------
    def add(self, facts: Any, namespace: str = DEFAULT_NAMESPACE, *,
            on_update: OnUpdate = DEFAULT_ON_UPDATE) -> list[Edit]:
        """Store one fact or a list of facts (str, dict or FactInput); all are validated first.
        A new value of a stored slot supersedes it under `on_update` (`retrieval.updates`)."""
        edits = new_edits(facts, namespace)
        vecs = self.embedder.encode([e.text for e in edits])
        judge = slot_judge_for(self.embedder, self.slot_judge_setting)
        with self._lock:
            plan = plan_updates(edits, vecs, on_update, judge, self._lookup)
            self.vectorstore.add_documents([edit_to_document(e) for e in plan.edits],
                                           ids=[e.id for e in plan.edits])
            for e, v in zip(plan.edits, vecs):
                self._edits[e.id] = e
                self._vectors[e.id] = np.asarray(v, dtype=np.float32)
            if plan.retire:
                self.vectorstore.delete([old for old, _, _ in plan.retire])
            for old, new, at in plan.retire:
                self._edits[old] = self._edits[old].model_copy(
                    update={"superseded_by": new, "superseded_at": at})
        return plan.edits

    def _live(self, ns: str) -> list[Edit]:
        return [e for e in self._edits.values() if e.namespace == ns and e.live]

    def _lookup(self, e: Edit, vec: np.ndarray, near: bool) -> Lookup:
        live, slot = self._live(e.namespace), slot_of(e)
        found = Lookup(slot_matches=[o for o in live if slot is not None and slot_of(o) == slot])
        if near and live:
            sims = [(o, float(self._vectors[o.id] @ vec)) for o in live]
            found.near = sorted(sims, key=lambda t: -t[1])[:SLOT_CANDIDATES]
        return found

    def add_documents(self, documents: Iterable[Document],
                      namespace: str = DEFAULT_NAMESPACE) -> list[Edit]:
        """Store LangChain Documents as edits (see `documents_to_facts`)."""
        return self.add([f.model_dump() for f in documents_to_facts(documents)],
                        namespace=namespace)

    def forget(self, edit_id: str, namespace: str | None = None) -> Edit:
        """Delete one edit by id (from the catalog and the vector store) and return it; with
        `namespace`, only an edit of that namespace (another's id is not found)."""
        if not isinstance(edit_id, str) or not edit_id:
            raise InvalidInputError("forget() needs an edit id (a non-empty string).")
        ns = None if namespace is None else check_namespace(namespace)
        with self._lock:
            edit = self._edits.get(edit_id)
            if edit is None or (ns is not None and edit.namespace != ns):
                where = self.path if ns is None else f"namespace {ns!r} of {self.path}"
                raise EditNotFoundError(f"No edit with id {edit_id!r} in {where}.")
            if edit.live:
                self.vectorstore.delete([edit_id])
            del self._edits[edit_id]
            retired = [o for o in self._edits.values() if o.superseded_by == edit_id]
            for o in retired:  # live again, or passed on to the forgotten edit's successor
                self._edits[o.id] = o.model_copy(update={
                    "superseded_by": edit.superseded_by, "superseded_at": edit.superseded_at})
            back = [self._edits[o.id] for o in retired if edit.live]
            if back:
                self.vectorstore.add_documents([edit_to_document(o) for o in back],
                                               ids=[o.id for o in back])
            self._vectors.pop(edit_id, None)
        return edit.model_copy(update={"supersedes": tuple(o.id for o in retired)})

    def clear(self, namespace: str | None = None) -> int:
        """Delete every edit (of one namespace if given); return how many were deleted."""
        ns = None if namespace is None else check_namespace(namespace)
        with self._lock:
            ids = [i for i, e in self._edits.items() if ns is None or e.namespace == ns]
            live = [i for i in ids if self._edits[i].live]
            if live:
                self.vectorstore.delete(live)
            for i in ids:
                del self._edits[i]
                self._vectors.pop(i, None)
        return len(ids)

    # ---- reads ----------------------------------------------------------------------------
    def edits(self, namespace: str | None = None, *, history: bool = False) -> list[Edit]:
        """The live edits, oldest first (one namespace if given); history=True: all."""
        ns = None if namespace is None else check_namespace(namespace)
        with self._lock:
            found = [e for e in self._edits.values() if (ns is None or e.namespace == ns)
                     and (history or e.live)]
        return with_supersedes(found) if history else found

    def get(self, edit_id: str) -> Edit:
        with self._lock:
            if edit_id not in self._edits:
                raise EditNotFoundError(f"No edit with id {edit_id!r} in {self.path}.")
            return self._edits[edit_id]

    def __len__(self) -> int:
        return sum(e.live for e in self._edits.values())

    def _search(self, question: str, ns: str, n: int) -> list[Document]:
        def same_ns(doc: Document) -> bool:
            return doc.metadata.get("namespace") == ns

        if self.filter_style == "callable":
            return self.vectorstore.similarity_search(question, k=n, filter=same_ns)
        if self.filter_style == "dict":
            return self.vectorstore.similarity_search(question, k=n, filter={"namespace": ns})
        return [d for d in self.vectorstore.similarity_search(question, k=max(n, self.fetch_k))
                if same_ns(d)]

    def retrieve(self, question: str, *, k: int = DEFAULT_TOP_K,
                 threshold: float = DEFAULT_THRESHOLD, namespace: str = DEFAULT_NAMESPACE,
                 as_of: Any = None) -> list[RetrievedEdit]:
        """Live edits of `namespace` whose cosine similarity to `question` is ≥ threshold, best
        first; as_of: those live at that time (an exact scan of the catalog).

        The vector store proposes `max(k, fetch_k)` candidates; they are re-scored with editkit's
        embedder, so scores and the threshold match `EditMemory`'s.
        """
        check_k(k)
        ns = check_namespace(namespace)
        if as_of is not None:
            t = check_as_of(as_of)
            q = self.embedder.encode([question])[0]
            with self._lock:
                then = [(float(self._vectors[e.id] @ q), e) for e in self._edits.values()
                        if e.namespace == ns and e.live_at(t)]
            then.sort(key=lambda x: -x[0])
            return [RetrievedEdit(edit=e, score=s) for s, e in then[:k] if s >= threshold]
        with self._lock:
            if not any(e.namespace == ns for e in self._edits.values()):
                return []
        docs = self._search(question, ns, max(k, self.fetch_k))
        q = self.embedder.encode([question])[0]
        seen: set[str] = set()
        scored: list[tuple[float, Edit]] = []
        with self._lock:
            for d in docs:
                edit_id = d.id or d.metadata.get("id")
                edit = self._edits.get(edit_id) if edit_id else None
                if edit is None or edit.namespace != ns or edit_id in seen or not edit.live:
                    continue  # not ours, forgotten meanwhile, or a duplicate hit
                seen.add(edit_id)
                scored.append((float(self._vectors[edit_id] @ q), edit))
        scored.sort(key=lambda t: -t[0])
        return [RetrievedEdit(edit=e, score=s) for s, e in scored[:k] if s >= threshold]

    def __repr__(self) -> str:
        return (f"VectorStoreEditMemory({type(self.vectorstore).__name__}, "
                f"edits={len(self)}, filter_style={self.filter_style!r})")


__all__ = ["VectorStoreEditMemory", "add_documents", "documents_to_facts", "edit_to_document"]
