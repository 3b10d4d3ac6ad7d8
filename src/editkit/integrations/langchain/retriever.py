"""`EditMemoryRetriever`: an edit memory (any `EditStore`) as a LangChain retriever.

    retriever = EditMemoryRetriever.from_lm(lm)            # lm.memory with lm's settings
    retriever.invoke("The mother tongue of Danielle Darrieux is")   # -> [Document, ...]

Documents come from the same retrieval policy as `EditableLM.ask` (`editkit.retrieval`): with the
default learned relevance gate, only edits about the query's subject are returned (the one the
LM would place as the fact first, then its distractors); `gate="threshold"` returns the top `k`
above the cosine threshold. Each Document is one stored edit: `page_content` is the fact, `id` the
edit id, and metadata holds `score` (best cosine over the query's views), `relevance` (the gate's
probability, learned gate only), `id`, `namespace`, `created_at` and the (subject, relation,
object) triple where one was given.
"""
from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, ValidationError, field_validator

from ...editable import EditableLM
from ...errors import InvalidInputError
from ...records import DEFAULT_NAMESPACE, MAX_QUESTION_CHARS, check_namespace, clean_text
from ...retrieval import (
    DEFAULT_CANDIDATES,
    DEFAULT_GATE,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    EditStore,
    Gate,
    RetrievalSettings,
    select,
)
from ...retrieval.store import check_k
from .vectorstore_memory import edit_to_document


class EditMemoryRetriever(BaseRetriever):
    """Up to `k` edits of one namespace that the retrieval policy finds about the query.

    `k`, `threshold`, `namespace` and `gate` can also be given per call:
    `retriever.invoke(query, k=1, namespace="alice")`. No relevant edit gives `[]`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: Any = Field(description="an editkit EditStore (EditMemory, VectorStoreEditMemory...)")
    k: int = Field(DEFAULT_TOP_K, ge=1, le=200)
    threshold: float = Field(DEFAULT_THRESHOLD, ge=-1.0, le=1.0)
    namespace: str = DEFAULT_NAMESPACE
    gate: Gate = Field(DEFAULT_GATE, description="learned: the relevance gate decides; "
                                                 "threshold: the cosine threshold alone")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid EditMemoryRetriever settings: {exc}") from exc

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: Any) -> Any:
        if not isinstance(value, EditStore):
            # ValueError (not TypeError): pydantic turns it into the ValidationError that
            # __init__ reports as InvalidInputError.
            raise ValueError(f"memory must implement editkit.retrieval.EditStore (add, "  # noqa: TRY004
                             f"forget, edits, clear, retrieve, path, embedder); got "
                             f"{type(value).__name__}.")
        return value

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: Any) -> str:
        return check_namespace(value)

    @classmethod
    def from_lm(cls, lm: EditableLM, **overrides: Any) -> EditMemoryRetriever:
        """A retriever over `lm.memory` with the LM's retrieval settings (overridable)."""
        r = lm.retrieval
        params: dict[str, Any] = {"memory": lm.memory, "k": r.top_k, "threshold": r.threshold,
                                  "namespace": r.namespace, "gate": r.gate}
        return cls(**{**params, **overrides})

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        unknown = set(kwargs) - {"k", "threshold", "namespace", "gate"}
        if unknown:
            raise InvalidInputError(f"Unknown retriever argument(s) {sorted(unknown)}; "
                                    "use k, threshold, namespace or gate.")
        k = kwargs.get("k", self.k)
        threshold = kwargs.get("threshold", self.threshold)
        check_k(k)
        if not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
            raise InvalidInputError("threshold must be a number between -1 and 1.")
        ns = check_namespace(kwargs.get("namespace", self.namespace))
        q = clean_text(query, "query", MAX_QUESTION_CHARS)
        try:
            settings = RetrievalSettings(top_k=k, threshold=float(threshold), namespace=ns,
                                         gate=kwargs.get("gate", self.gate),
                                         candidates=max(k, DEFAULT_CANDIDATES))
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid retriever arguments: {exc}") from exc
        sel = select(self.memory, q, settings)
        relevance = {j.hit.edit.id: j.relevance for j in sel.judged}
        docs = []
        for h in ([sel.edit] if sel.edit is not None else []) + sel.distractors:
            doc = edit_to_document(h.edit, h.score)
            if relevance.get(h.edit.id) is not None:
                doc.metadata["relevance"] = relevance[h.edit.id]
            docs.append(doc)
        return docs
