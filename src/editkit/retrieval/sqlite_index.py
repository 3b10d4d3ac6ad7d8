"""The SQLite memory's per-namespace vector index and the change log that keeps it current.

Triggers on the `edits` table log every change that alters what retrieval may serve (an insert,
a delete, an edit superseded or live again) in `changes`; `NamespaceIndex.apply` replays just
those entries when any connection commits, instead of re-reading every row.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from .index import ExactIndex, VectorIndex, build_index

MAX_PARAMS = 500  # bound parameters per query: SQLite caps them (999 in older builds)
SCHEMA_VERSION = 3  # 2 added the change log, 3 keys and supersession; older files are upgraded
# Columns added after version 1, in order: an upgraded table gets them by ALTER TABLE, at the end,
# so old and new files have the same column order.
LATER_COLUMNS = (("key", "TEXT"), ("slot", "TEXT"), ("superseded_by", "TEXT"),
                 ("superseded_at", "REAL"))

# A list, not one script: trigger bodies contain ';'. Run after LATER_COLUMNS exist.
SCHEMA = [
    "CREATE INDEX IF NOT EXISTS edits_namespace ON edits(namespace, created_at)",
    # the live edits of one slot (what a new edit of that slot supersedes)
    "CREATE INDEX IF NOT EXISTS edits_live_slot ON edits(namespace, slot) "
    "WHERE superseded_by IS NULL AND slot IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS edits_superseded_by ON edits(superseded_by) "
    "WHERE superseded_by IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL, id TEXT NOT NULL, namespace TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS edits_logged_insert AFTER INSERT ON edits BEGIN
        INSERT INTO changes (op, id, namespace) VALUES ('add', NEW.id, NEW.namespace); END""",
    """CREATE TRIGGER IF NOT EXISTS edits_logged_delete AFTER DELETE ON edits BEGIN
        INSERT INTO changes (op, id, namespace) VALUES ('del', OLD.id, OLD.namespace); END""",
    # superseded: retrieval drops it; live again (its successor forgotten): retrieval serves it
    """CREATE TRIGGER IF NOT EXISTS edits_logged_superseded AFTER UPDATE OF superseded_by ON edits
        WHEN OLD.superseded_by IS NULL AND NEW.superseded_by IS NOT NULL BEGIN
        INSERT INTO changes (op, id, namespace) VALUES ('del', NEW.id, NEW.namespace); END""",
    """CREATE TRIGGER IF NOT EXISTS edits_logged_restored AFTER UPDATE OF superseded_by ON edits
        WHEN OLD.superseded_by IS NOT NULL AND NEW.superseded_by IS NULL BEGIN
        INSERT INTO changes (op, id, namespace) VALUES ('add', NEW.id, NEW.namespace); END""",
]


def add_later_columns(c: sqlite3.Connection) -> None:
    """Give a table written by an older editkit the columns added since (idempotent)."""
    have = {r[1] for r in c.execute("PRAGMA table_info(edits)")}
    for name, kind in LATER_COLUMNS:
        if name not in have:
            c.execute(f"ALTER TABLE edits ADD COLUMN {name} {kind}")


CHANGE_LOG_KEEP = 200_000  # changes kept for readers that lag; one further behind reloads fully


def prune_log(c: sqlite3.Connection) -> None:
    """Keep the change log bounded: drop entries more than CHANGE_LOG_KEEP behind the newest.

    A range delete on the primary key, so it costs only what it removes."""
    top = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    if top:
        c.execute("DELETE FROM changes WHERE seq <= ?", (top[0] - CHANGE_LOG_KEEP,))


def matrix(rows: Sequence[tuple[str, bytes]]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)


class NamespaceIndex:
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
              mat: np.ndarray) -> NamespaceIndex:
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
        mat = matrix(rows)
        labels = np.arange(self.next_label, self.next_label + len(rows), dtype=np.int64)
        self.next_label += len(rows)
        for lab, (edit_id, _) in zip(labels, rows):
            self.ids[int(lab)], self.labels[edit_id] = edit_id, int(lab)
        if len(self.index) == 0 and self.index.built_size == 0:
            self.index = build_index(self.kind, mat.shape[1], mat, labels)
        else:
            self.index.add(labels, mat)
