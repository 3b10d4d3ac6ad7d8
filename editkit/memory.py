"""Edit memory: every edit, persisted in SQLite (WAL), retrieved per question by embedding similarity.

One row per edit with its all-MiniLM-L6-v2 vector. Writes are single transactions, so an edit for
which `add()` returned is on disk (synchronous=FULL) and a crash never leaves half of a batch.
Retrieval is exact cosine search over the namespace's vectors, cached in RAM and refreshed when any
connection (this process or another) commits a change.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .embedder import Embedder, shared_embedder
from .errors import EditNotFoundError, InvalidInputError, MemoryCorruptError
from .records import (
    DEFAULT_NAMESPACE,
    MAX_QUESTION_CHARS,
    Edit,
    FactInput,
    RetrievedEdit,
    check_namespace,
    clean_text,
)

SCHEMA_VERSION = 1
_APP_MARK = "editkit-memory"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS editkit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edits (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    subject TEXT, relation TEXT, object TEXT,
    namespace TEXT NOT NULL,
    created_at REAL NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS edits_namespace ON edits(namespace, created_at);
"""


@runtime_checkable
class EditStore(Protocol):
    """What EditableLM needs from a memory; `EditMemory` is the default, integrations add others."""

    path: str

    def add(self, facts: Any, namespace: str = DEFAULT_NAMESPACE) -> list[Edit]: ...
    def forget(self, edit_id: str) -> Edit: ...
    def edits(self, namespace: str | None = None) -> list[Edit]: ...
    def clear(self, namespace: str | None = None) -> int: ...
    def retrieve(self, question: str, *, k: int = 4, threshold: float = 0.5,
                 namespace: str = DEFAULT_NAMESPACE) -> list[RetrievedEdit]: ...


class EditMemory:
    """SQLite-backed store of edits. `path=None` or ':memory:' keeps it in RAM for this process."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 embedder: Embedder | None = None, busy_timeout_s: float = 30.0) -> None:
        self.path = ":memory:" if path in (None, ":memory:") else str(Path(path).expanduser())
        self._embedder = embedder
        self._lock = threading.RLock()
        self._writes = 0
        self._cache: dict[str, tuple[tuple[int, int], list[str], np.ndarray]] = {}
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
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                c.execute(stmt)  # idempotent (IF NOT EXISTS); executescript would COMMIT early
            meta = dict(c.execute("SELECT key, value FROM editkit_meta").fetchall())
            if not meta:
                c.executemany("INSERT INTO editkit_meta VALUES (?, ?)",
                              [("app", _APP_MARK), ("schema", str(SCHEMA_VERSION))])
            elif meta.get("app") != _APP_MARK or meta.get("schema") != str(SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unexpected editkit_meta {meta}")
        self._meta = dict(c.execute("SELECT key, value FROM editkit_meta").fetchall())

    class _Tx:
        def __init__(self, mem: EditMemory) -> None:
            self.mem = mem

        def __enter__(self) -> sqlite3.Connection:
            self.mem._lock.acquire()
            self.mem._conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrades
            return self.mem._conn

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            try:
                self.mem._conn.execute("ROLLBACK" if exc_type else "COMMIT")
                if not exc_type:
                    self.mem._writes += 1
            finally:
                self.mem._lock.release()

    def _tx(self) -> EditMemory._Tx:
        return EditMemory._Tx(self)

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
        items = facts if isinstance(facts, (list, tuple)) else [facts]
        if not items:
            raise InvalidInputError("edit() got an empty list of facts.")
        parsed = [FactInput.parse(f) for f in items]  # validate all before writing any
        ns = check_namespace(namespace)
        vecs = self.embedder.encode([p.text for p in parsed])
        now = time.time()
        edits = [Edit(id=uuid.uuid4().hex[:16], namespace=ns, created_at=now, **p.model_dump())
                 for p in parsed]
        with self._tx() as c:
            self._check_embedder(c)
            c.executemany(
                "INSERT INTO edits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.id, e.text, e.subject, e.relation, e.object, e.namespace, e.created_at,
                  v.astype(np.float32).tobytes()) for e, v in zip(edits, vecs)])
        return edits

    def forget(self, edit_id: str) -> Edit:
        """Delete one edit by id and return it."""
        if not isinstance(edit_id, str) or not edit_id:
            raise InvalidInputError("forget() needs an edit id (a non-empty string).")
        edit_id = clean_text(edit_id, "edit id", 200)  # also refuses lone surrogates
        with self._tx() as c:
            row = c.execute(f"SELECT {_COLS} FROM edits WHERE id = ?", (edit_id,)).fetchone()
            if row is None:
                raise EditNotFoundError(f"No edit with id {edit_id!r} in {self.path}.")
            c.execute("DELETE FROM edits WHERE id = ?", (edit_id,))
        return _edit(row)

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
            return [_edit(r) for r in rows.fetchall()]

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM edits").fetchone()[0])

    def get(self, edit_id: str) -> Edit:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLS} FROM edits WHERE id = ?",
                                     (edit_id,)).fetchone()
        if row is None:
            raise EditNotFoundError(f"No edit with id {edit_id!r} in {self.path}.")
        return _edit(row)

    def _vectors(self, namespace: str) -> tuple[list[str], np.ndarray]:
        """(ids, matrix) of one namespace; reloaded only after some connection wrote."""
        with self._lock:
            version = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
            hit = self._cache.get(namespace)
            if hit is not None and hit[0] == version:
                return hit[1], hit[2]
            rows = self._conn.execute("SELECT id, embedding FROM edits WHERE namespace = ?",
                                      (namespace,)).fetchall()
        ids = [r[0] for r in rows]
        mat = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
               if rows else np.zeros((0, 0), dtype=np.float32))
        with self._lock:
            self._cache[namespace] = (version, ids, mat)
        return ids, mat

    def retrieve(self, question: str, *, k: int = 4, threshold: float = 0.5,
                 namespace: str = DEFAULT_NAMESPACE) -> list[RetrievedEdit]:
        """Edits of `namespace` whose cosine similarity to `question` is ≥ threshold, best first."""
        if k < 1:
            raise InvalidInputError("k must be ≥ 1.")
        question = clean_text(question, "question", MAX_QUESTION_CHARS)
        ids, mat = self._vectors(check_namespace(namespace))
        if not ids:
            return []
        q = self.embedder.encode([question])[0]
        sims = mat @ q
        order = np.argsort(-sims, kind="stable")[:k]
        hits = [(ids[i], float(sims[i])) for i in order if sims[i] >= threshold]
        out = []
        for edit_id, score in hits:
            try:
                out.append(RetrievedEdit(edit=self.get(edit_id), score=score))
            except EditNotFoundError:  # forgotten by another connection since the cache loaded
                continue
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EditMemory:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EditMemory({self.path!r}, edits={len(self)})"


_COLS = "id, text, subject, relation, object, namespace, created_at"


def _edit(row: Iterable[Any]) -> Edit:
    r = list(row)
    return Edit(id=r[0], text=r[1], subject=r[2], relation=r[3], object=r[4], namespace=r[5],
                created_at=r[6])
