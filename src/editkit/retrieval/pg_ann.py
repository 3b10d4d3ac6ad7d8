"""The HNSW index of a large namespace in the PostgreSQL edit memory (`postgres.py`).

Small namespaces are searched exactly. One that reaches `ann_min_edits` edits gets its own partial
HNSW index, built in the background (`CREATE INDEX CONCURRENTLY ... WHERE namespace = ...`), one
build at a time over all replicas; the planner then searches it approximately.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from ..records import check_namespace
from .pg_schema import LOCK_KEY, one

log = logging.getLogger("editkit.retrieval.postgres")
_BUILD_LOCK_KEY = LOCK_KEY + 1  # pg_try_advisory_lock key: one HNSW build at a time


class AnnIndexMixin:
    """`PostgresEditMemory`'s HNSW upkeep; uses its `_conn`, `_lock`, `_url`, `_unavailable`,
    `ann_min_edits` and the `_ann_*` sets it initialises."""

    _url: str
    _lock: threading.Lock
    _closed: bool
    ann_min_edits: int
    _ann_ready: set[str]
    _ann_due: dict[str, int]
    _ann_busy: set[str]
    _conn: Any
    _unavailable: Any

    # ---- the HNSW index of a large namespace ---------------------------------------------
    def _after_add(self, namespace: str, n: int) -> None:
        """Now and then (the first add, then every ~1% of ann_min_edits), check in the
        background whether the namespace has grown large enough for its own HNSW index."""
        if self.ann_min_edits <= 0 or namespace in self._ann_ready:
            return
        with self._lock:
            seen = self._ann_due.get(namespace)
            self._ann_due[namespace] = (seen or 0) + n
            if (seen is not None and self._ann_due[namespace] < max(1, self.ann_min_edits // 100)
                    or namespace in self._ann_busy):
                return
            self._ann_due[namespace] = 0
            self._ann_busy.add(namespace)
        threading.Thread(target=self._ann_check, args=(namespace,), daemon=True,
                         name="editkit-ann-index").start()

    def _ann_check(self, namespace: str) -> None:
        try:
            with self._conn() as conn:
                size = one(conn, "SELECT COUNT(*) FROM (SELECT 1 FROM editkit_edits WHERE "
                                  "namespace = %s LIMIT %s) t", (namespace, self.ann_min_edits))
            # another replica's build holds the lock: wait for it, then build this one
            while size >= self.ann_min_edits and not self._closed \
                    and self.ensure_ann_index(namespace) is None:
                time.sleep(2.0)
        except Exception as exc:  # noqa: BLE001 - a background job: retrieval stays exact
            log.warning("editkit: HNSW index for namespace %r not built: %s", namespace, exc)
        finally:
            with self._lock:
                self._ann_busy.discard(namespace)

    def ensure_ann_index(self, namespace: str, *, build_mem: str = "1GB") -> str | None:
        """Build the namespace's HNSW index (cosine) unless a valid one exists; return its name,
        or None when another process is building an index right now (it is tried again later).

        CREATE INDEX CONCURRENTLY: writers and readers go on while it builds, on a connection of
        its own (minutes at a million edits). One build at a time over all replicas (two
        concurrent builds on one table deadlock), under a session advisory lock taken without
        waiting. An index that a killed build left invalid is dropped and built again."""
        ns = check_namespace(namespace)
        name = "editkit_edits_ann_" + hashlib.sha1(ns.encode()).hexdigest()[:16]
        valid = ("SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                 "WHERE c.relname = %s")
        try:
            with psycopg.connect(self._url, autocommit=True) as conn:
                row = conn.execute(valid, (name,)).fetchone()
                if row is None or not row[0]:
                    if not one(conn, "SELECT pg_try_advisory_lock(%s)::int", (_BUILD_LOCK_KEY,)):
                        return None  # the lock goes with the connection
                    ident = sql.Identifier(name)
                    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(ident))
                    conn.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                                 (build_mem,))
                    conn.execute(sql.SQL(
                        "CREATE INDEX CONCURRENTLY {} ON editkit_edits USING hnsw "
                        "(embedding vector_cosine_ops) WHERE namespace = {}").format(
                            ident, sql.Literal(ns)))
                    conn.execute("ANALYZE editkit_edits")  # row counts for the planner's choice
                    row = conn.execute(valid, (name,)).fetchone()
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        if row is not None and row[0]:
            self._ann_ready.add(ns)
        return name
