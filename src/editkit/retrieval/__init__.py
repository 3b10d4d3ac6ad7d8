"""Retrieval: which stored edits a question is about. Everything between `edit()` and the prompt.

- `store.py`: the `EditStore` protocol (add, forget, list, clear, search) and the validation every
  backend shares; backends `sqlite.py` (`EditMemory`, the default), `postgres.py`
  (`PostgresEditMemory`: replicas share it; `pg_schema.py`, `pg_local.py`), and LangChain's
  vector-store memory (`editkit.integrations.langchain`); `urls.open_memory` turns a path or a
  `postgresql://` URL into one.
- `index.py`: the SQLite memory's in-RAM vector index (exact, or FAISS at scale).
- `policy.py`: `select`, the one answer to "which edits apply" (candidates, relevance, placement),
  called by `EditableLM` (ask, stream, score, retrieve), evaluation, MQuAKE and LangChain.
- `gate.py`: the relevance step at question time: the `Judge` protocol and the shipped
  `RelevanceGate` (its training is `editkit.train.gate`).
- `settings.py`: `RetrievalSettings` and the defaults, once.

Imports flow store/index → sqlite/postgres → urls, and gate → settings → policy; nothing here
imports the model or the runtime.
"""
from .gate import (
    Candidate,
    GateArtifact,
    Judge,
    RelevanceGate,
    load_gate,
    question_views,
    shipped_gate,
)
from .policy import Judged, Selection, candidates, gate_for, judge_texts, select
from .settings import (
    DEFAULT_CANDIDATES,
    DEFAULT_GATE,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    Gate,
    RetrievalSettings,
)
from .sqlite import EditMemory
from .store import EditStore
from .urls import open_memory, url_scheme

__all__ = [
    "DEFAULT_CANDIDATES", "DEFAULT_GATE", "DEFAULT_THRESHOLD", "DEFAULT_TOP_K", "Candidate",
    "EditMemory", "EditStore", "Gate", "GateArtifact", "Judge", "Judged", "RelevanceGate",
    "RetrievalSettings", "Selection", "candidates", "gate_for", "judge_texts", "load_gate",
    "open_memory", "question_views", "select", "shipped_gate", "url_scheme",
]
