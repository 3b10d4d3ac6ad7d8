"""Edit memory: every edit, persisted in SQLite (WAL), retrieved per question by embedding
similarity.

One row per edit with its all-MiniLM-L6-v2 vector; an edit superseded by a newer value of its
slot stays as history (`updates.py`) and is left out of the index. Writes are single
transactions, so an edit for which `add()` returned is on disk (synchronous=FULL) and a crash
never leaves half of a batch. Retrieval searches an in-RAM index of the namespace's live
vectors (exact, or FAISS IVF-PQ with exact re-ranking at scale: `index.py`). Triggers log every
insert, delete, supersession and restoration in a `changes` table (`sqlite_index.py`), so when
any connection (this process or another) commits, the index applies just those changes instead
of re-reading every row.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
from .index import IndexKind, resolve_kind
from .settings import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from .sqlite_index import (
    MAX_PARAMS,
    SCHEMA,
    SCHEMA_VERSION,
    NamespaceIndex,
    add_later_columns,
    matrix,
    prune_log,
)
from .store import EDIT_COLUMNS as _COLS
from .store import ClosesOnExit, check_k, edit_from_row, new_edits, top_k_rows, unit_vectors
from .updates import (
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

_APP_MARK = "editkit-memory"
_LIVE = "superseded_by IS NULL"
_EDITS_TABLE = """CREATE TABLE IF NOT EXISTS edits (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    subject TEXT, relation TEXT, object TEXT,
    namespace TEXT NOT NULL,
    created_at REAL NOT NULL,
    embedding BLOB NOT NULL,
    key TEXT, slot TEXT, superseded_by TEXT, superseded_at REAL)"""


class EditMemory(ClosesOnExit):
    """SQLite-backed store of edits. `path=None` or ':memory:' keeps it in RAM for this process."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 embedder: Embedder | None = None, busy_timeout_s: float = 30.0,
                 index: IndexKind = "auto", slot_judge: SlotJudgeSetting = "learned") -> None:
        """index: 'exact' (numpy), 'faiss' (exact, then IVF-PQ + exact re-rank from 20k
        edits; `editkit[scale]`), or 'auto' (FAISS when installed). slot_judge: what decides
        that a keyless fact updates a stored one ('learned': the judge shipped for the
        embedder; 'off': keys and subject/relation only; or your own `SlotJudge`)."""
        self.path = ":memory:" if path in (None, ":memory:") else str(Path(path).expanduser())
        self.index_kind = resolve_kind(index)
        self._embedder = embedder
        self._lock = threading.RLock()
        self._writes = 0
        self._indexes: dict[str, NamespaceIndex] = {}
        self.slot_judge_setting = slot_judge
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
            known = {str(v) for v in range(1, SCHEMA_VERSION + 1)}
            if meta and (meta.get("app") != _APP_MARK or meta.get("schema") not in known):
                raise sqlite3.DatabaseError(f"unexpected editkit_meta {meta}")
            c.execute("CREATE TABLE IF NOT EXISTS editkit_meta "
                      "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            c.execute(_EDITS_TABLE)
            add_later_columns(c)  # version 1 and 2 files: key and supersession columns
            for stmt in SCHEMA:
                c.execute(stmt)  # idempotent (IF NOT EXISTS); executescript would COMMIT early
            if not meta:
                c.executemany("INSERT INTO editkit_meta VALUES (?, ?)",
                              [("app", _APP_MARK), ("schema", str(SCHEMA_VERSION))])
            elif meta["schema"] != str(SCHEMA_VERSION):  # upgrade: a new change log starts
                # empty; readers that find no log position reload fully, so nothing is missed
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
                prune_log(c)
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
    def add(self, facts: Any | Sequence[Any], namespace: str = DEFAULT_NAMESPACE, *,
            on_update: OnUpdate = DEFAULT_ON_UPDATE) -> list[Edit]:
        """Store one fact or a list of facts (str, dict or FactInput) in one transaction; an
        edit that gives a new value for a stored slot supersedes it (`updates.py`, `on_update`).
        Returns the stored edits, each with `supersedes` (the ids it retired)."""
        edits = new_edits(facts, namespace)  # validate all before writing any
        return self._insert(edits, self.embedder.encode([e.text for e in edits]), on_update)

    def add_embedded(self, facts: Any | Sequence[Any], vectors: np.ndarray,
                     namespace: str = DEFAULT_NAMESPACE, *,
                     on_update: OnUpdate = DEFAULT_ON_UPDATE) -> list[Edit]:
        """Store facts with vectors computed elsewhere (bulk loads, e.g. embedded on a GPU).

        The vectors must come from this memory's embedder: one row per fact, its dimension,
        finite; they are normalised here so cosine stays a dot product. A bulk load of facts
        known to be distinct skips the update checks with on_update='keep-both'.
        """
        edits = new_edits(facts, namespace)
        return self._insert(edits, unit_vectors(vectors, len(edits), self.embedder.dim),
                            on_update)

    def _insert(self, edits: list[Edit], vecs: np.ndarray, on_update: OnUpdate) -> list[Edit]:
        judge = slot_judge_for(self.embedder, self.slot_judge_setting)
        with self._tx() as c:
            self._check_embedder(c)
            # decided under the write lock (BEGIN IMMEDIATE): no other writer can store a value
            # of the same slot between this look and the insert
            plan = plan_updates(edits, vecs, on_update, judge,
                                lambda e, v, near: self._lookup(c, e, v, near))
            c.executemany(
                "INSERT INTO edits (id, text, subject, relation, object, namespace, created_at, "
                "embedding, key, slot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.id, e.text, e.subject, e.relation, e.object, e.namespace, e.created_at,
                  v.astype(np.float32).tobytes(), e.key, slot_of(e))
                 for e, v in zip(plan.edits, vecs)])
            c.executemany(f"UPDATE edits SET superseded_by = ?, superseded_at = ? "
                          f"WHERE id = ? AND {_LIVE}",
                          [(new, at, old) for old, new, at in plan.retire])
        return plan.edits

    def _lookup(self, c: sqlite3.Connection, e: Edit, vec: np.ndarray, near: bool) -> Lookup:
        """The live edits of `e`'s slot and, if asked, the live edits nearest to it."""
        slot = slot_of(e)
        found = Lookup()
        if slot is not None:
            found.slot_matches = [edit_from_row(r) for r in c.execute(
                f"SELECT {_COLS} FROM edits WHERE namespace = ? AND slot = ? AND {_LIVE}",
                (e.namespace, slot))]
        if near:
            state = self._index(e.namespace, in_tx=True)
            if len(state.index):
                found.near = [(h.edit, h.score) for h in
                              self._search(state, vec, SLOT_CANDIDATES, -1.0)]
        return found

    def forget(self, edit_id: str, namespace: str | None = None) -> Edit:
        """Delete one edit by id and return it (its `supersedes`: the edits it had retired);
        with `namespace`, only an edit of that namespace (another namespace's id is not found:
        a server tenant cannot delete another's edit). In the same transaction the edits it
        had superseded are live again, or, if it was itself superseded, pass to its successor:
        history reads as if it had never been made."""
        if not isinstance(edit_id, str) or not edit_id:
            raise InvalidInputError("forget() needs an edit id (a non-empty string).")
        edit_id = clean_text(edit_id, "edit id", 200)  # also refuses lone surrogates
        ns = None if namespace is None else check_namespace(namespace)
        with self._tx() as c:
            row = c.execute(f"SELECT {_COLS} FROM edits WHERE id = ?", (edit_id,)).fetchone()
            if row is None or (ns is not None and edit_from_row(row).namespace != ns):
                where = self.path if ns is None else f"namespace {ns!r} of {self.path}"
                raise EditNotFoundError(f"No edit with id {edit_id!r} in {where}.")
            gone = edit_from_row(row)
            retired = [r[0] for r in c.execute("SELECT id FROM edits WHERE superseded_by = ?",
                                               (edit_id,))]
            c.execute("UPDATE edits SET superseded_by = ?, superseded_at = ? "
                      "WHERE superseded_by = ?", (gone.superseded_by, gone.superseded_at, edit_id))
            c.execute("DELETE FROM edits WHERE id = ?", (edit_id,))
        return gone.model_copy(update={"supersedes": tuple(retired)})

    def clear(self, namespace: str | None = None) -> int:
        """Delete every edit, history included (of one namespace if given); return how many
        rows were deleted."""
        with self._tx() as c:
            if namespace is None:
                cur = c.execute("DELETE FROM edits")
            else:
                cur = c.execute("DELETE FROM edits WHERE namespace = ?",
                                (check_namespace(namespace),))
        return int(cur.rowcount)

    # ---- reads ----------------------------------------------------------------------------
    def edits(self, namespace: str | None = None, *, history: bool = False) -> list[Edit]:
        """The live edits, oldest first (one namespace if given); history=True: every edit
        kept, superseded ones included, each with `supersedes` filled."""
        where = ([] if namespace is None else ["namespace = ?"]) + ([] if history else [_LIVE])
        params = () if namespace is None else (check_namespace(namespace),)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLS} FROM edits {'WHERE ' if where else ''}{' AND '.join(where)} "
                "ORDER BY created_at, rowid", params).fetchall()
        found = [edit_from_row(r) for r in rows]
        return with_supersedes(found) if history else found

    def __len__(self) -> int:
        """The number of live edits (history left out)."""
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM edits WHERE {_LIVE}"
                                          ).fetchone()[0])

    def get(self, edit_id: str) -> Edit:
        """One edit by id, live or superseded."""
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLS} FROM edits WHERE id = ?",
                                     (edit_id,)).fetchone()
        if row is None:
            raise EditNotFoundError(f"No edit with id {edit_id!r} in {self.path}.")
        return edit_from_row(row)

    def _edits_by_id(self, ids: Sequence[str]) -> dict[str, Edit]:
        """The live stored edits among `ids` (others are left out), in one query per 500."""
        out: dict[str, Edit] = {}
        with self._lock:
            for i in range(0, len(ids), MAX_PARAMS):
                chunk = list(ids[i:i + MAX_PARAMS])
                rows = self._conn.execute(
                    f"SELECT {_COLS} FROM edits WHERE id IN ({','.join('?' * len(chunk))}) "
                    f"AND {_LIVE}", chunk).fetchall()
                out.update((r[0], edit_from_row(r)) for r in rows)
        return out

    def _index(self, namespace: str, *, in_tx: bool = False) -> NamespaceIndex:
        """The namespace's index of live edits, brought up to date with every committed change
        (in_tx: the caller holds the write transaction, whose snapshot is current)."""
        with self._lock:
            version = (int(self._conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
            state = self._indexes.get(namespace)
            if state is not None and state.version == version:
                return state
            c = self._conn
            if not in_tx:
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
                if not in_tx:
                    c.execute("COMMIT")
            self._indexes[namespace] = state
            return state

    def _full_load(self, namespace: str) -> NamespaceIndex:
        rows = self._conn.execute(f"SELECT id, embedding FROM edits WHERE namespace = ? AND "
                                  f"{_LIVE}", (namespace,)).fetchall()
        return NamespaceIndex.build(self.index_kind, [r[0] for r in rows], matrix(rows))

    def _rows_by_id(self, ids: Sequence[str]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for i in range(0, len(ids), MAX_PARAMS):
            chunk = ids[i:i + MAX_PARAMS]
            out += self._conn.execute(
                f"SELECT id, embedding FROM edits WHERE id IN ({','.join('?' * len(chunk))}) "
                f"AND {_LIVE}", chunk).fetchall()
        return out

    def retrieve(self, question: str, *, k: int = DEFAULT_TOP_K,
                 threshold: float = DEFAULT_THRESHOLD, namespace: str = DEFAULT_NAMESPACE,
                 as_of: Any = None) -> list[RetrievedEdit]:
        """Live edits of `namespace` whose cosine similarity to `question` is ≥ threshold, best
        first; as_of (a datetime or epoch seconds): the edits that were live then instead."""
        check_k(k)
        question = clean_text(question, "question", MAX_QUESTION_CHARS)
        ns = check_namespace(namespace)
        if as_of is None and not len(self._index(ns).index):  # no need to embed the question
            return []
        return self.retrieve_vector(self.embedder.encode([question])[0], k=k,
                                    threshold=threshold, namespace=ns, as_of=as_of)

    def retrieve_vector(self, query: np.ndarray, *, k: int = DEFAULT_TOP_K,
                        threshold: float = DEFAULT_THRESHOLD,
                        namespace: str = DEFAULT_NAMESPACE,
                        as_of: Any = None) -> list[RetrievedEdit]:
        """`retrieve` for an already embedded (unit-norm) question."""
        check_k(k)
        ns = check_namespace(namespace)
        if as_of is not None:  # audits: an exact scan of the rows live at that time
            t = check_as_of(as_of)
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT {_COLS}, embedding FROM edits WHERE namespace = ? AND "
                    "created_at <= ? AND (superseded_at IS NULL OR superseded_at > ?)",
                    (ns, t, t)).fetchall()
            return top_k_rows(rows, matrix([(r[0], r[-1]) for r in rows]), query, k, threshold)
        return self._search(self._index(ns), query, k, threshold)

    def _search(self, state: NamespaceIndex, query: np.ndarray, k: int,
                threshold: float) -> list[RetrievedEdit]:
        with self._lock:
            sims, labels = state.index.search(np.asarray(query, dtype=np.float32), k)
            hits = [(state.ids[int(lab)], float(s)) for s, lab in zip(sims, labels)
                    if s >= threshold]
            found = self._edits_by_id([edit_id for edit_id, _ in hits])
        # best first, as the index ranked them; an id missing from `found` was forgotten or
        # superseded by another connection since the index synced
        return [RetrievedEdit(edit=found[edit_id], score=score) for edit_id, score in hits
                if edit_id in found]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"EditMemory({self.path!r}, edits={len(self)})"


