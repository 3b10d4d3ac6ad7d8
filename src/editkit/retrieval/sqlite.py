"""Edit memory: every edit, persisted in SQLite (WAL), retrieved per question by embedding
similarity.

One row per edit with its all-MiniLM-L6-v2 vector. Writes are single transactions, so an edit for
which `add()` returned is on disk (synchronous=FULL) and a crash never leaves half of a batch.
Retrieval searches an in-RAM index of the namespace's vectors (exact, or FAISS IVF-PQ with exact
re-ranking at scale: `index.py`). Triggers log every insert and delete in a `changes`
table, so when any connection (this process or another) commits, the index applies just those
changes instead of re-reading every row.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..embedder import Embedder, shared_embedder
from ..errors import EditNotFoundError, InvalidInputError, MemoryCorruptError
from ..records import (
    DEFAULT_NAMESPACE,
    MAX_QUESTION_CHARS,
    Edit,
    RetrievedEdit,
    check_namespace,
    clean_text,
)
from .index import ExactIndex, IndexKind, VectorIndex, build_index, resolve_kind
from .settings import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from .store import EDIT_COLUMNS as _COLS
from .store import ClosesOnExit, check_k, edit_from_row, new_edits, unit_vectors

SCHEMA_VERSION = 2  # 2 added the change log; version-1 files are upgraded in place on open
_APP_MARK = "editkit-memory"
CHANGE_LOG_KEEP = 200_000  # changes kept for readers that lag; one further behind reloads fully

# A list, not one script: trigger bodies contain ';'.
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS editkit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS edits (
        id TEXT PRIMARY KEY,
        text TEXT NOT NULL,
        subject TEXT, relation TEXT, object TEXT,
        namespace TEXT NOT NULL,
        created_at REAL NOT NULL,
        embedding BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS edits_namespace ON edits(namespace, created_at)",
    """CREATE TABLE IF NOT EXISTS changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL, id TEXT NOT NULL, namespace TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS edits_logged_insert AFTER INSERT ON edits BEGIN
        INSERT INTO changes (op, id, namespace) VALUES ('add', NEW.id, NEW.namespace); END""",
    """CREATE TRIGGER IF NOT EXISTS edits_logged_delete AFTER DELETE ON edits BEGIN
        INSERT INTO changes (op, id, namespace) VALUES ('del', OLD.id, OLD.namespace); END""",
]


class EditMemory(ClosesOnExit):
    """SQLite-backed store of edits. `path=None` or ':memory:' keeps it in RAM for this process."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 embedder: Embedder | None = None, busy_timeout_s: float = 30.0,
                 index: IndexKind = "auto") -> None:
        """index: 'exact' (numpy), 'faiss' (exact, then IVF-PQ + exact re-rank from 20k
        edits; `editkit[scale]`), or 'auto' (FAISS when installed)."""
        self.path = ":memory:" if path in (None, ":memory:") else str(Path(path).expanduser())
        self.index_kind = resolve_kind(index)
        self._embedder = embedder
        self._lock = threading.RLock()
        self._writes = 0
        self._indexes: dict[str, _NamespaceIndex] = {}
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                         check_same_thread=False, isolation_level=None)
            self._open()
        except sqlite3.DatabaseError as exc:
            raise MemoryCorruptError(
                f"{self.path} is not a readable editkit memory ({exc}). It was left untouched; "
                "move it aside or pass another path.") from exc

    # ---- setup ----------------------------------------------------------------------------
    def _open(self) -> None:
        c = self._conn
        c.execute("PRAGMA busy_timeout = 30000")
        if self.path != ":memory:":
            c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = FULL")
        ok = c.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {ok}")
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "editkit_meta" not in tables:
            raise sqlite3.DatabaseError(
                f"it is an SQLite file with other tables ({', '.join(sorted(tables))})")
        with self._tx():
            meta = ({} if "editkit_meta" not in tables else
                    dict(c.execute("SELECT key, value FROM editkit_meta").fetchall()))
            if meta and (meta.get("app") != _APP_MARK
                         or meta.get("schema") not in {"1", str(SCHEMA_VERSION)}):
                raise sqlite3.DatabaseError(f"unexpected editkit_meta {meta}")
            for stmt in _SCHEMA:
                c.execute(stmt)  # idempotent (IF NOT EXISTS); executescript would COMMIT early
            if not meta:
                c.executemany("INSERT INTO editkit_meta VALUES (?, ?)",
                              [("app", _APP_MARK), ("schema", str(SCHEMA_VERSION))])
            elif meta["schema"] == "1":  # upgrade: the change log starts empty; readers that
                # find no log position reload fully, so nothing written before is missed
                c.execute("UPDATE editkit_meta SET value = ? WHERE key = 'schema'",
                          (str(SCHEMA_VERSION),))
        self._meta = dict(c.execute("SELECT key, value FROM editkit_meta").fetchall())

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed with the change-log prune, or rolled back whole.

        Whatever fails (the body, the prune or the COMMIT itself), the transaction is rolled back
        before the error propagates, so the connection is never left inside an open one.
        """
        c = self._conn
        with self._lock:
            c.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrades
            try:
                yield c
                _prune_log(c)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            self._writes += 1

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder

    def _check_embedder(self, c: sqlite3.Connection) -> None:
        """Vectors of different embedders are not comparable: pin the first one used."""
        name, dim = self.embedder.name, str(self.embedder.dim)
        have = self._meta.get("embedder")
        if have is None:
            c.executemany("INSERT OR REPLACE INTO editkit_meta VALUES (?, ?)",
                          [("embedder", name), ("dim", dim)])
            self._meta.update(embedder=name, dim=dim)
        elif (have, self._meta.get("dim")) != (name, dim):
            raise InvalidInputError(f"This memory was built with embedder {have!r} "
                                    f"(dim {self._meta.get('dim')}); the current one is {name!r}.")

    # ---- writes ---------------------------------------------------------------------------
    def add(self, facts: Any | Sequence[Any], namespace: str = DEFAULT_NAMESPACE) -> list[Edit]:
        """Store one fact or a list of facts (str, dict or FactInput) in one transaction."""
        edits = new_edits(facts, namespace)  # validate all before writing any
        return self._insert(edits, self.embedder.encode([e.text for e in edits]))

    def add_embedded(self, facts: Any | Sequence[Any], vectors: np.ndarray,
                     namespace: str = DEFAULT_NAMESPACE) -> list[Edit]:
        """Store facts with vectors computed elsewhere (bulk loads, e.g. embedded on a GPU).

        The vectors must come from this memory's embedder: one row per fact, its dimension,
        finite; they are normalised here so cosine stays a dot product.
        """
        edits = new_edits(facts, namespace)
        return self._insert(edits, unit_vectors(vectors, len(edits), self.embedder.dim))

    def _insert(self, edits: list[Edit], vecs: np.ndarray) -> list[Edit]:
        with self._tx() as c:
            self._check_embedder(c)
            c.executemany(
                "INSERT INTO edits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.id, e.text, e.subject, e.relation, e.object, e.namespace, e.created_at,
                  v.astype(np.float32).tobytes()) for e, v in zip(edits, vecs)])
        return edits

    def forget(self, edit_id: str, namespace: str | None = None) -> Edit:
        """Delete one edit by id and return it; with `namespace`, only an edit of that
        namespace (another namespace's id is not found: a server tenant cannot delete
        another's edit, in one transaction)."""
        if not isinstance(edit_id, str) or not edit_id:
            raise InvalidInputError("forget() needs an edit id (a non-empty string).")
        edit_id = clean_text(edit_id, "edit id", 200)  # also refuses lone surrogates
        ns = None if namespace is None else check_namespace(namespace)
        with self._tx() as c:
            row = c.execute(f"SELECT {_COLS} FROM edits WHERE id = ?", (edit_id,)).fetchone()
            if row is None or (ns is not None and edit_from_row(row).namespace != ns):
                where = self.path if ns is None else f"namespace {ns!r} of {self.path}"
                raise EditNotFoundError(f"No edit with id {edit_id!r} in {where}.")
            c.execute("DELETE FROM edits WHERE id = ?", (edit_id,))
        return edit_from_row(row)

    def clear(self, namespace: str | None = None) -> int:
        """Delete every edit (of one namespace if given); return how many were deleted."""
        with self._tx() as c:
            if namespace is None:
                cur = c.execute("DELETE FROM edits")
            else:
                cur = c.execute("DELETE FROM edits WHERE namespace = ?",
                                (check_namespace(namespace),))
        return int(cur.rowcount)

    # ---- reads ----------------------------------------------------------------------------
    def edits(self, namespace: str | None = None) -> list[Edit]:
        """All stored edits, oldest first (one namespace if given)."""
        with self._lock:
            if namespace is None:
                rows = self._conn.execute(f"SELECT {_COLS} FROM edits ORDER BY created_at, rowid")
            else:
                rows = self._conn.execute(
                    f"SELECT {_COLS} FROM edits WHERE namespace = ? ORDER BY created_at, rowid",
                    (check_namespace(namespace),))
            return [edit_from_row(r) for r in rows.fetchall()]

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM edits").fetchone()[0])

    def get(self, edit_id: str) -> Edit:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLS} FROM edits WHERE id = ?",
                                     (edit_id,)).fetchone()
        if row is None:
            raise EditNotFoundError(f"No edit with id {edit_id!r} in {self.path}.")
        return edit_from_row(row)

    def _edits_by_id(self, ids: Sequence[str]) -> dict[str, Edit]:
        """The stored edits among `ids` (missing ones are left out), in one query per 500."""
        out: dict[str, Edit] = {}
        with self._lock:
            for i in range(0, len(ids), _MAX_PARAMS):
                chunk = list(ids[i:i + _MAX_PARAMS])
                rows = self._conn.execute(
                    f"SELECT {_COLS} FROM edits WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()
                out.update((r[0], edit_from_row(r)) for r in rows)
        return out

    def _index(self, namespace: str) -> _NamespaceIndex:
        """The namespace's index, brought up to date with every committed change."""
        with self._lock:
            version = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
            state = self._indexes.get(namespace)
            if state is not None and state.version == version:
                return state
            c = self._conn
            c.execute("BEGIN")  # one snapshot for the log position and the rows read with it
            try:
                top = c.execute("SELECT COALESCE(MAX(seq), 0), COALESCE(MIN(seq), 0) "
                                "FROM changes").fetchone()
                if state is None or state.needs_full_reload(top[1]):
                    state = self._full_load(namespace)
                else:
                    state.apply(c, namespace, self._rows_by_id)
                    if state.index.wants_rebuild():
                        state = self._full_load(namespace)
                state.seq, state.version = top[0], version
            finally:
                c.execute("COMMIT")
            self._indexes[namespace] = state
            return state

    def _full_load(self, namespace: str) -> _NamespaceIndex:
        rows = self._conn.execute("SELECT id, embedding FROM edits WHERE namespace = ?",
                                  (namespace,)).fetchall()
        return _NamespaceIndex.build(self.index_kind, [r[0] for r in rows], _matrix(rows))

    def _rows_by_id(self, ids: Sequence[str]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for i in range(0, len(ids), _MAX_PARAMS):
            chunk = ids[i:i + _MAX_PARAMS]
            out += self._conn.execute(
                f"SELECT id, embedding FROM edits WHERE id IN ({','.join('?' * len(chunk))})",
                chunk).fetchall()
        return out

    def retrieve(self, question: str, *, k: int = DEFAULT_TOP_K,
                 threshold: float = DEFAULT_THRESHOLD,
                 namespace: str = DEFAULT_NAMESPACE) -> list[RetrievedEdit]:
        """Edits of `namespace` whose cosine similarity to `question` is ≥ threshold, best first."""
        check_k(k)
        question = clean_text(question, "question", MAX_QUESTION_CHARS)
        state = self._index(check_namespace(namespace))
        if not len(state.index):  # no need to embed the question
            return []
        return self._search(state, self.embedder.encode([question])[0], k, threshold)

    def retrieve_vector(self, query: np.ndarray, *, k: int = DEFAULT_TOP_K,
                        threshold: float = DEFAULT_THRESHOLD,
                        namespace: str = DEFAULT_NAMESPACE) -> list[RetrievedEdit]:
        """`retrieve` for an already embedded (unit-norm) question."""
        check_k(k)
        return self._search(self._index(check_namespace(namespace)), query, k, threshold)

    def _search(self, state: _NamespaceIndex, query: np.ndarray, k: int,
                threshold: float) -> list[RetrievedEdit]:
        with self._lock:
            sims, labels = state.index.search(np.asarray(query, dtype=np.float32), k)
            hits = [(state.ids[int(lab)], float(s)) for s, lab in zip(sims, labels)
                    if s >= threshold]
            found = self._edits_by_id([edit_id for edit_id, _ in hits])
        # best first, as the index ranked them; an id missing from `found` was forgotten by
        # another connection since the index synced
        return [RetrievedEdit(edit=found[edit_id], score=score) for edit_id, score in hits
                if edit_id in found]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"EditMemory({self.path!r}, edits={len(self)})"


_MAX_PARAMS = 500  # bound parameters per query: SQLite caps them (999 in older builds)


def _prune_log(c: sqlite3.Connection) -> None:
    """Keep the change log bounded: drop entries more than CHANGE_LOG_KEEP behind the newest.

    A range delete on the primary key, so it costs only what it removes."""
    top = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    if top:
        c.execute("DELETE FROM changes WHERE seq <= ?", (top[0] - CHANGE_LOG_KEEP,))


def _matrix(rows: Sequence[tuple[str, bytes]]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)


class _NamespaceIndex:
    """One namespace's vector index plus the int label <-> edit id mapping and log position."""

    def __init__(self, kind: Literal["exact", "faiss"], index: VectorIndex | None) -> None:
        self.kind = kind
        self.index: VectorIndex = index if index is not None else ExactIndex(0)
        self.ids: dict[int, str] = {}
        self.labels: dict[str, int] = {}
        self.next_label = 0
        self.seq = 0
        self.version: tuple[int, int] = (-1, -1)

    @classmethod
    def build(cls, kind: Literal["exact", "faiss"], ids: list[str],
              mat: np.ndarray) -> _NamespaceIndex:
        state = cls(kind, None)
        labels = np.arange(len(ids), dtype=np.int64)
        state.ids = dict(enumerate(ids))
        state.labels = {i: n for n, i in enumerate(ids)}
        state.next_label = len(ids)
        if len(ids):
            state.index = build_index(kind, mat.shape[1], mat, labels)
        return state

    def needs_full_reload(self, min_seq: int) -> bool:
        """True when changes this index has not seen were pruned from the log."""
        return min_seq > self.seq + 1

    def apply(self, c: sqlite3.Connection, namespace: str,
              rows_by_id: Callable[[Sequence[str]], list[tuple[str, bytes]]]) -> None:
        """Apply the logged inserts and deletes after `self.seq`, in order."""
        added: dict[str, None] = {}
        removed: set[str] = set()
        for op, edit_id in c.execute("SELECT op, id FROM changes WHERE seq > ? AND namespace = ? "
                                     "ORDER BY seq", (self.seq, namespace)):
            if op == "add":
                added[edit_id] = None
            elif edit_id in added:
                del added[edit_id]
            else:
                removed.add(edit_id)
        gone = [self.labels.pop(i) for i in removed if i in self.labels]
        if gone:
            self.index.remove(np.asarray(gone, dtype=np.int64))
            for lab in gone:
                del self.ids[lab]
        rows = [r for r in rows_by_id(list(added)) if r[0] not in self.labels]
        if not rows:
            return
        mat = _matrix(rows)
        labels = np.arange(self.next_label, self.next_label + len(rows), dtype=np.int64)
        self.next_label += len(rows)
        for lab, (edit_id, _) in zip(labels, rows):
            self.ids[int(lab)], self.labels[edit_id] = edit_id, int(lab)
        if len(self.index) == 0 and self.index.built_size == 0:
            self.index = build_index(self.kind, mat.shape[1], mat, labels)
        else:
            self.index.add(labels, mat)
