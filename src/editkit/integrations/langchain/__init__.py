"""LangChain integration (`pip install 'editkit[langchain]'`).

- `EditableChatModel`: an EditableLM as a chat model (invoke/stream/batch, async, stop, usage).
- `EditMemoryRetriever`: stored edits as Documents (score, id, namespace in metadata).
- `EditkitEmbeddings`: the default MiniLM embedder as LangChain `Embeddings`.
- `VectorStoreEditMemory`: the edit memory on any LangChain `VectorStore`; `FaissVectorStore`
  is a small FAISS store for `editkit[scale]`.
- `create_edit_rag_chain`: RAG where retrieved documents reach the model as P-Token edits.
"""
from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("editkit.integrations.langchain needs langchain-core: "
                      "pip install 'editkit[langchain]'.") from exc

from .chat_model import EditableChatModel, to_turns
from .embeddings import EditkitEmbeddings
from .rag import EditRAGInput, create_edit_rag_chain, docs_to_edit_kwargs
from .retriever import EditMemoryRetriever
from .vectorstore_memory import (
    VectorStoreEditMemory,
    add_documents,
    documents_to_facts,
    edit_to_document,
)


def __getattr__(name: str) -> object:
    if name == "FaissVectorStore":  # imported lazily: faiss is optional (`editkit[scale]`)
        from .faiss_store import FaissVectorStore

        return FaissVectorStore
    raise AttributeError(name)


__all__ = [
    "EditMemoryRetriever", "EditRAGInput", "EditableChatModel", "EditkitEmbeddings",
    "FaissVectorStore", "VectorStoreEditMemory", "add_documents", "create_edit_rag_chain",
    "docs_to_edit_kwargs", "documents_to_facts", "edit_to_document", "to_turns",
]
