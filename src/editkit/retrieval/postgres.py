"""Edit memory in PostgreSQL + pgvector: one memory that every replica of a server shares.

    mem = PostgresEditMemory("postgresql://editkit@db.internal/editkit")
    lm = EditableLM.from_pretrained(memory="postgresql://editkit@db.internal/editkit")

Consistency: every call reads or writes the database itself and nothing is cached here, so an
add that returned is visible to every replica's next retrieve, and a forget or clear that
returned is never served again by any replica.

- One row per edit (table `editkit_edits`), its embedding from editkit's embedder in a pgvector
  `vector(dim)` column. Retrieval runs in the database by cosine distance, always filtered by
  the namespace column, so tenants never see each other's edits.
- Small namespaces are searched exactly (the namespace's rows, sorted by distance). A namespace
  that reaches `ann_min_edits` edits gets its own partial HNSW index (built by editkit in the
  background, `CREATE INDEX CONCURRENTLY ... WHERE namespace = ...`); the planner then searches
  it approximately. docs/benchmarks.md has the measurements behind the default.
- The schema is created and versioned by editkit (`editkit.pg_schema`); a database written by
  a newer editkit is refused, and so is an embedder other than the one that wrote the memory.
- Writes are single transactions: a multi-fact add is stored whole or not at all.
- Connections come from a `psycopg_pool` pool, checked before use. While the database is down
  a call raises `MemoryUnavailableError` (not acknowledged); the next call after it is back
  reconnects.

Needs `pip install 'editkit[postgres]'` (psycopg, psycopg-pool, pgvector) and a server with the
pgvector extension (created here when the user may, else by an administrator).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..embedder import Embedder, shared_embedder
from ..errors import (
    EditMemoryError,
    EditNotFoundError,
    InvalidInputError,
    MemoryUnavailableError,
)
from ..records import (
    DEFAULT_NAMESPACE,
    MAX_QUESTION_CHARS,
    Edit,
    RetrievedEdit,
    check_namespace,
    clean_text,
)
from .pg_schema import LOCK_KEY, SCHEMA_VERSION, first_line, migrate, one, redact
from .settings import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from .store import EDIT_COLUMNS as _COLS
from .store import ClosesOnExit, check_k, edit_from_row, new_edits, unit_vectors

__all__ = ["ANN_MIN_EDITS", "DEFAULT_EF_SEARCH", "SCHEMA_VERSION", "PostgresEditMemory",
           "redact"]
log = logging.getLogger(__name__)

ANN_MIN_EDITS = 10_000  # a namespace this large gets an HNSW index (docs/benchmarks.md)
# HNSW candidates per query (pgvector's default is 40): recall@10 0.994 on 10k real facts,
# 0.963 at 100k (docs/benchmarks.md); 400 buys 0.986 at 100k for ~3 ms more
DEFAULT_EF_SEARCH = 200
_BUILD_LOCK_KEY = LOCK_KEY + 1  # pg_try_advisory_lock key: one HNSW build at a time


class _Settings(BaseModel):
    """The constructor's tuning options, validated together."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    pool_size: int = Field(ge=1, le=200)
    timeout_s: float = Field(gt=0, le=600)
    ef_search: int = Field(ge=1, le=1000)  # pgvector's range
    ann_min_edits: int = Field(ge=0)


class PostgresEditMemory(ClosesOnExit):
    """`EditStore` on PostgreSQL + pgvector; behaves as `EditMemory` does, shared by processes."""

    def __init__(self, url: str, *, embedder: Embedder | None = None, pool_size: int = 8,
                 timeout_s: float = 5.0, ef_search: int = DEFAULT_EF_SEARCH,
                 ann_min_edits: int = ANN_MIN_EDITS) -> None:
        """url: postgresql://user[:password]@host[:port]/database (libpq's URL form).
        timeout_s: how long a call waits for a connection before MemoryUnavailableError.
        ann_min_edits: namespace size from which an HNSW index is built (0: never).

        Connects, creates or upgrades the schema and checks the embedder now, so a wrong URL,
        an unreachable server or a foreign embedder fails here rather than at the first edit.
        """
        if not isinstance(url, str):
            raise InvalidInputError(f"url must be a postgresql:// URL string, got "
                                    f"{type(url).__name__}.")
        try:
            settings = _Settings(pool_size=pool_size, timeout_s=timeout_s, ef_search=ef_search,
                                 ann_min_edits=ann_min_edits)
        except ValidationError as exc:
            raise InvalidInputError(f"Invalid PostgreSQL memory settings: {exc}") from exc
        self._url = url
        self.path = redact(url)
        self._embedder = embedder
        self.pool_size, self.timeout_s = settings.pool_size, settings.timeout_s
        self.ef_search, self.ann_min_edits = settings.ef_search, settings.ann_min_edits
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._closed = False
        self._ann_ready: set[str] = set()  # namespaces whose HNSW index was seen valid
        self._ann_due: dict[str, int] = {}  # edits added per namespace since its size check
        self._ann_busy: set[str] = set()
        self._open_pool()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder

    # ---- connections ------------------------------------------------------------------------
    def _open_pool(self) -> ConnectionPool:
        """The pool, opened (with the schema checked) on first use and after an outage."""
        with self._lock:
            if self._pool is not None:
                return self._pool
            if self._closed:
                raise EditMemoryError(f"{self.path}: this memory was closed; open a new one.")
            try:
                with psycopg.connect(self._url, autocommit=True,
                                     connect_timeout=max(2, round(self.timeout_s))) as conn:
                    migrate(conn, self.embedder, self.path)
                pool = ConnectionPool(
                    self._url, min_size=1, max_size=self.pool_size, open=False,
                    timeout=self.timeout_s, check=ConnectionPool.check_connection,
                    configure=self._configure, name="editkit-memory",
                    kwargs={"autocommit": True, "application_name": "editkit",
                            "connect_timeout": max(2, round(self.timeout_s))})
                try:
                    pool.open(wait=True, timeout=self.timeout_s)
                except BaseException:
                    _close_aside(pool)
                    raise
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from exc
            except psycopg.ProgrammingError as exc:  # libpq could not parse the URL
                raise InvalidInputError(f"{self.path} is not a PostgreSQL URL libpq accepts "
                                        f"({first_line(exc)}).") from exc
            self._pool = pool
            return pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(self.ef_search),))

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; database failures become typed editkit errors. A lost
        connection also drops the pool, so the next call reconnects from scratch."""
        pool = self._open_pool()
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:  # connection lost, pool timeout, shutdown
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            _close_aside(pool)
            raise self._unavailable(exc) from exc
        except psycopg.Error as exc:
            raise EditMemoryError(f"PostgreSQL refused the operation on {self.path}: "
                                  f"{first_line(exc)}. Nothing was changed.") from exc

    def _unavailable(self, exc: BaseException) -> MemoryUnavailableError:
        return MemoryUnavailableError(
            f"The edit memory at {self.path} is unavailable ({first_line(exc)}). Check that "
            "PostgreSQL is running and reachable; this call was not acknowledged (retry it), "
            "and editkit reconnects by itself once the database answers.")

    # ---- writes -----------------------------------------------------------------------------
    def add(self, facts: Any | Sequence[Any], namespace: str = DEFAULT_NAMESPACE) -> list[Edit]:
        """Store one fact or a list of facts (str, dict or FactInput) in one transaction."""
        edits = new_edits(facts, namespace)  # validate all before writing any
        return self._insert(edits, self.embedder.encode([e.text for e in edits]))

    def add_embedded(self, facts: Any | Sequence[Any], vectors: np.ndarray,
                     namespace: str = DEFAULT_NAMESPACE) -> list[Edit]:
        """Store facts with vectors computed elsewhere by this memory's embedder (bulk loads)."""
        edits = new_edits(facts, namespace)
        return self._insert(edits, unit_vectors(vectors, len(edits), self.embedder.dim))

    def _insert(self, edits: list[Edit], vecs: np.ndarray) -> list[Edit]:
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY editkit_edits ({_COLS}, embedding) "
                          "FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text"] * 6 + ["float8", "vector"])
                for e, v in zip(edits, vecs):
                    copy.write_row((e.id, e.text, e.subject, e.relation, e.object,
                                    e.namespace, e.created_at, np.asarray(v, np.float32)))
        self._after_add(edits[0].namespace, len(edits))
        return edits

    def forget(self, edit_id: str, namespace: str | None = None) -> Edit:
        """Delete one edit by id and return it; with `namespace`, only an edit of that
        namespace (another namespace's id is not found)."""
        if not isinstance(edit_id, str) or not edit_id:
            raise InvalidInputError("forget() needs an edit id (a non-empty string).")
        edit_id = clean_text(edit_id, "edit id", 200)
        ns = None if namespace is None else check_namespace(namespace)
        where, params = ("id = %s", (edit_id,)) if ns is None else \
            ("id = %s AND namespace = %s", (edit_id, ns))
        with self._conn() as conn:
            row = conn.execute(f"DELETE FROM editkit_edits WHERE {where} RETURNING {_COLS}",
                               params).fetchone()
        if row is None:
            place = self.path if ns is None else f"namespace {ns!r} of {self.path}"
            raise EditNotFoundError(f"No edit with id {edit_id!r} in {place}.")
        return edit_from_row(row)

    def clear(self, namespace: str | None = None) -> int:
        """Delete every edit (of one namespace if given); return how many were deleted."""
        ns = None if namespace is None else check_namespace(namespace)
        with self._conn() as conn:
            cur = conn.execute("DELETE FROM editkit_edits" if ns is None else
                               "DELETE FROM editkit_edits WHERE namespace = %s",
                               () if ns is None else (ns,))
            return int(cur.rowcount)

    # ---- reads ------------------------------------------------------------------------------
    def edits(self, namespace: str | None = None) -> list[Edit]:
        """All stored edits, oldest first (one namespace if given)."""
        ns = None if namespace is None else check_namespace(namespace)
        where, params = ("", ()) if ns is None else ("WHERE namespace = %s", (ns,))
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_COLS} FROM editkit_edits {where} "
                                "ORDER BY created_at, seq", params).fetchall()
        return [edit_from_row(r) for r in rows]

    def __len__(self) -> int:
        with self._conn() as conn:
            return one(conn, "SELECT COUNT(*) FROM editkit_edits")

    def get(self, edit_id: str) -> Edit:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM editkit_edits WHERE id = %s",
                               (edit_id,)).fetchone()
        if row is None:
            raise EditNotFoundError(f"No edit with id {edit_id!r} in {self.path}.")
        return edit_from_row(row)

    def retrieve(self, question: str, *, k: int = DEFAULT_TOP_K,
                 threshold: float = DEFAULT_THRESHOLD,
                 namespace: str = DEFAULT_NAMESPACE) -> list[RetrievedEdit]:
        """Edits of `namespace` whose cosine similarity to `question` is ≥ threshold, best first."""
        check_k(k)
        question = clean_text(question, "question", MAX_QUESTION_CHARS)
        ns = check_namespace(namespace)
        with self._conn() as conn:  # an empty namespace needs no question embedding
            if not one(conn, "SELECT EXISTS (SELECT 1 FROM editkit_edits WHERE namespace = %s)"
                              "::int", (ns,)):
                return []
        return self.retrieve_vector(self.embedder.encode([question])[0], k=k,
                                    threshold=threshold, namespace=ns)

    def retrieve_vector(self, query: np.ndarray, *, k: int = DEFAULT_TOP_K,
                        threshold: float = DEFAULT_THRESHOLD,
                        namespace: str = DEFAULT_NAMESPACE,
                        exact: bool = False) -> list[RetrievedEdit]:
        """`retrieve` for an already embedded (unit-norm) question. exact=True scans the
        namespace even where an HNSW index exists (as does k > ef_search)."""
        check_k(k)
        ns = check_namespace(namespace)
        # The namespace is a literal, not a parameter: the planner can then match it against
        # the partial HNSW index of that namespace (a generic plan could not).
        inner = sql.SQL("SELECT {cols}, embedding <=> %(q)s AS d FROM editkit_edits "
                        "WHERE namespace = {ns}").format(cols=sql.SQL(_COLS), ns=sql.Literal(ns))
        if exact or k > self.ef_search:  # OFFSET 0 fences the index off: a scan and a sort
            stmt = sql.SQL("SELECT * FROM ({} OFFSET 0) s ORDER BY d LIMIT %(k)s").format(inner)
        else:
            stmt = sql.SQL("{} ORDER BY embedding <=> %(q)s LIMIT %(k)s").format(inner)
        q = np.asarray(query, dtype=np.float32)
        with self._conn() as conn:
            rows = conn.execute(stmt, {"q": q, "k": k}).fetchall()
        hits = [RetrievedEdit(edit=edit_from_row(r), score=1.0 - float(r[7])) for r in rows]
        return [h for h in hits if h.score >= threshold]

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

    # ---- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.close()

    def __repr__(self) -> str:
        return f"PostgresEditMemory({self.path!r})"


def _close_aside(pool: ConnectionPool) -> None:
    """Close a pool in a thread of its own: its workers may be asleep in a reconnect backoff."""
    threading.Thread(target=pool.close, daemon=True, name="editkit-pool-close").start()
