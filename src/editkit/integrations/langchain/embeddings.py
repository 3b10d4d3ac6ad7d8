"""LangChain `Embeddings` over editkit's sentence embedder (all-MiniLM-L6-v2, shipped offline).

Use it for any LangChain vector store so that documents, edits and questions live in the same
space as editkit's own edit memory:

    store = InMemoryVectorStore(EditkitEmbeddings())
"""
from __future__ import annotations

from langchain_core.embeddings import Embeddings

from ...embedder import DEFAULT_EMBEDDER, Embedder, shared_embedder
from ...errors import InvalidInputError


class EditkitEmbeddings(Embeddings):
    """Unit-norm MiniLM vectors (cosine similarity = dot product), loaded without the Hub.

    model: None for the embedded all-MiniLM-L6-v2, or a local sentence-transformers directory.
    The underlying model is shared per process (`editkit.embedder.shared_embedder`).
    """

    def __init__(self, model: str | None = None, *, embedder: Embedder | None = None,
                 batch_size: int = 64) -> None:
        if model is not None and not isinstance(model, str):
            raise InvalidInputError(f"model must be a path string or None, got "
                                    f"{type(model).__name__}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size must be an int ≥ 1.")
        self.model = model
        self.batch_size = batch_size
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        """The editkit embedder (loaded on first use, then shared)."""
        if self._embedder is None:
            self._embedder = shared_embedder(self.model)
        return self._embedder

    @property
    def name(self) -> str:
        return self._embedder.name if self._embedder is not None else (self.model
                                                                         or DEFAULT_EMBEDDER)

    @staticmethod
    def _check(texts: list[str]) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidInputError("embed_documents() takes a list of strings.")
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInputError(f"Can only embed strings, got {type(t).__name__}.")
        return list(texts)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text (an empty list for no texts)."""
        texts = self._check(texts)
        if not texts:
            return []
        return self.embedder.encode(texts, batch_size=self.batch_size).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query."""
        if not isinstance(text, str):
            raise InvalidInputError(f"embed_query() takes a string, got {type(text).__name__}.")
        return self.embedder.encode([text])[0].tolist()

    def __repr__(self) -> str:
        return f"EditkitEmbeddings(model={self.name!r})"
