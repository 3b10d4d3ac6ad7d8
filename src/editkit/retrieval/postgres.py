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
- Writes are single transactions: a multi-fact add is stored whole or not at all. An add that
  supersedes older values of a slot (`updates.py`) and a forget that undoes it take a
  per-namespace advisory lock first, so two replicas updating one fact at once are serialised:
  the later supersedes the earlier, and exactly one value is live at every moment.
- Connections come from a `psycopg_pool` pool, checked before use. While the database is down
  a call raises `MemoryUnavailableError` (not acknowledged); the next call after it is back
  reconnects.

Needs `pip install 'editkit[postgres]'` (psycopg, psycopg-pool, pgvector) and a server with the
pgvector extension (created here when the user may, else by an administrator).
"""
from __future__ import annotations

import contextlib
import logging
import threading
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
from .pg_ann import AnnIndexMixin
from .pg_schema import SCHEMA_VERSION, WRITE_LOCK_KEY, first_line, migrate, one, redact
from .settings import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from .store import EDIT_COLUMNS as _COLS
from .store import N_EDIT_COLUMNS, ClosesOnExit, check_k, edit_from_row, new_edits, unit_vectors
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

__all__ = ["ANN_MIN_EDITS", "DEFAULT_EF_SEARCH", "SCHEMA_VERSION", "PostgresEditMemory",
           "redact"]
log = logging.getLogger(__name__)

ANN_MIN_EDITS = 10_000  # a namespace this large gets an HNSW index (docs/benchmarks.md)
# HNSW candidates per query (pgvector's default is 40): recall@10 0.994 on 10k real facts,
# 0.963 at 100k (docs/benchmarks.md); 400 buys 0.986 at 100k for ~3 ms more
DEFAULT_EF_SEARCH = 200
_LIVE = "superseded_by IS NULL"


class _Settings(BaseModel):
    """The constructor's tuning options, validated together."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    pool_size: int = Field(ge=1, le=200)
    timeout_s: float = Field(gt=0, le=600)
    ef_search: int = Field(ge=1, le=1000)  # pgvector's range
    ann_min_edits: int = Field(ge=0)


class PostgresEditMemory(AnnIndexMixin, ClosesOnExit):
    """`EditStore` on PostgreSQL + pgvector; behaves as `EditMemory` does, shared by processes."""

    def __init__(self, url: str, *, embedder: Embedder | None = None, pool_size: int = 8,
                 timeout_s: float = 5.0, ef_search: int = DEFAULT_EF_SEARCH,
                 ann_min_edits: int = ANN_MIN_EDITS,
                 slot_judge: SlotJudgeSetting = "learned") -> None:
        """url: postgresql://user[:password]@host[:port]/database (libpq's URL form).
        timeout_s: how long a call waits for a connection before MemoryUnavailableError.
        ann_min_edits: namespace size from which an HNSW index is built (0: never).
        slot_judge: what decides that a keyless fact updates a stored one (as `EditMemory`).

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
        self.slot_judge_setting = slot_judge
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
    def add(self, facts: Any | Sequence[Any], namespace: str = DEFAULT_NAMESPACE, *,
            on_update: OnUpdate = DEFAULT_ON_UPDATE) -> list[Edit]:
        """Store one fact or a list of facts (str, dict or FactInput) in one transaction; an
        edit that gives a new value for a stored slot supersedes it (`updates.py`)."""
        edits = new_edits(facts, namespace)  # validate all before writing any
        return self._insert(edits, self.embedder.encode([e.text for e in edits]), on_update)

    def add_embedded(self, facts: Any | Sequence[Any], vectors: np.ndarray,
                     namespace: str = DEFAULT_NAMESPACE, *,
                     on_update: OnUpdate = DEFAULT_ON_UPDATE) -> list[Edit]:
        """Store facts with vectors computed elsewhere by this memory's embedder (bulk loads;
        on_update='keep-both' skips the update checks for facts known to be distinct)."""
        edits = new_edits(facts, namespace)
        return self._insert(edits, unit_vectors(vectors, len(edits), self.embedder.dim),
                            on_update)

    def _insert(self, edits: list[Edit], vecs: np.ndarray, on_update: OnUpdate) -> list[Edit]:
        judge = slot_judge_for(self.embedder, self.slot_judge_setting)
        ns = edits[0].namespace
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            if on_update != "keep-both":
                self._lock_namespace(conn, ns)
            plan = plan_updates(edits, vecs, on_update, judge,
                                lambda e, v, near: self._lookup(conn, e, v, near))
            with cur.copy("COPY editkit_edits (id, text, subject, relation, object, namespace, "
                          "created_at, key, slot, embedding) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text"] * 6 + ["float8"] + ["text"] * 2 + ["vector"])
                for e, v in zip(plan.edits, vecs):
                    copy.write_row((e.id, e.text, e.subject, e.relation, e.object,
                                    e.namespace, e.created_at, e.key, slot_of(e),
                                    np.asarray(v, np.float32)))
            if plan.retire:
                cur.executemany(f"UPDATE editkit_edits SET superseded_by = %s, superseded_at = %s "
                                f"WHERE id = %s AND {_LIVE}",
                                [(new, at, old) for old, new, at in plan.retire])
        self._after_add(ns, len(edits))
        return plan.edits

    @staticmethod
    def _lock_namespace(conn: psycopg.Connection[Any], ns: str) -> None:
        """Serialise this transaction with every other replica's update or forget in `ns`
        (released at commit or rollback)."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (WRITE_LOCK_KEY, ns))

    def _lookup(self, conn: psycopg.Connection[Any], e: Edit, vec: np.ndarray,
                near: bool) -> Lookup:
        """The live edits of `e`'s slot and, if asked, the live edits nearest to it (read after
        the namespace lock: READ COMMITTED sees every update committed before it)."""
        slot = slot_of(e)
        found = Lookup()
        if slot is not None:
            found.slot_matches = [edit_from_row(r) for r in conn.execute(
                f"SELECT {_COLS} FROM editkit_edits WHERE namespace = %s AND slot = %s AND "
                f"{_LIVE}", (e.namespace, slot)).fetchall()]
        if near:
            found.near = [(h.edit, h.score) for h in self._search(
                conn, vec, SLOT_CANDIDATES, -1.0, e.namespace, None, False)]
        return found

    def forget(self, edit_id: str, namespace: str | None = None) -> Edit:
        """Delete one edit by id and return it (its `supersedes`: the edits it had retired);
        with `namespace`, only an edit of that namespace (another namespace's id is not found).
        In the same transaction the edits it had superseded are live again, or pass to its
        successor when it was itself superseded (`EditMemory.forget`)."""
        if not isinstance(edit_id, str) or not edit_id:
            raise InvalidInputError("forget() needs an edit id (a non-empty string).")
        edit_id = clean_text(edit_id, "edit id", 200)
        ns = None if namespace is None else check_namespace(namespace)
        with self._conn() as conn, conn.transaction():
            row = conn.execute(f"SELECT {_COLS} FROM editkit_edits WHERE id = %s",
                               (edit_id,)).fetchone()
            if row is not None:
                self._lock_namespace(conn, edit_from_row(row).namespace)
                row = conn.execute(f"DELETE FROM editkit_edits WHERE id = %s RETURNING {_COLS}",
                                   (edit_id,)).fetchone()  # as of after the lock
            if row is None or (ns is not None and edit_from_row(row).namespace != ns):
                place = self.path if ns is None else f"namespace {ns!r} of {self.path}"
                raise EditNotFoundError(f"No edit with id {edit_id!r} in {place}.")  # rolls back
            gone = edit_from_row(row)
            retired = [r[0] for r in conn.execute(
                "UPDATE editkit_edits SET superseded_by = %s, superseded_at = %s "
                "WHERE superseded_by = %s RETURNING id",
                (gone.superseded_by, gone.superseded_at, edit_id)).fetchall()]
        return gone.model_copy(update={"supersedes": tuple(retired)})

    def clear(self, namespace: str | None = None) -> int:
        """Delete every edit, history included (of one namespace if given); return how many
        rows were deleted."""
        ns = None if namespace is None else check_namespace(namespace)
        with self._conn() as conn:
            cur = conn.execute("DELETE FROM editkit_edits" if ns is None else
                               "DELETE FROM editkit_edits WHERE namespace = %s",
                               () if ns is None else (ns,))
            return int(cur.rowcount)

    # ---- reads ------------------------------------------------------------------------------
    def edits(self, namespace: str | None = None, *, history: bool = False) -> list[Edit]:
        """The live edits, oldest first (one namespace if given); history=True: every edit
        kept, superseded ones included, each with `supersedes` filled."""
        ns = None if namespace is None else check_namespace(namespace)
        where = ([] if ns is None else ["namespace = %s"]) + ([] if history else [_LIVE])
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_COLS} FROM editkit_edits "
                                f"{'WHERE ' if where else ''}{' AND '.join(where)} "
                                "ORDER BY created_at, seq", () if ns is None else (ns,)
                                ).fetchall()
        found = [edit_from_row(r) for r in rows]
        return with_supersedes(found) if history else found

    def __len__(self) -> int:
        """The number of live edits (history left out)."""
        with self._conn() as conn:
            return one(conn, f"SELECT COUNT(*) FROM editkit_edits WHERE {_LIVE}")

    def get(self, edit_id: str) -> Edit:
        """One edit by id, live or superseded."""
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM editkit_edits WHERE id = %s",
                               (edit_id,)).fetchone()
        if row is None:
            raise EditNotFoundError(f"No edit with id {edit_id!r} in {self.path}.")
        return edit_from_row(row)

    def retrieve(self, question: str, *, k: int = DEFAULT_TOP_K,
                 threshold: float = DEFAULT_THRESHOLD, namespace: str = DEFAULT_NAMESPACE,
                 as_of: Any = None) -> list[RetrievedEdit]:
        """Live edits of `namespace` whose cosine similarity to `question` is ≥ threshold, best
        first; as_of (a datetime or epoch seconds): the edits that were live then instead."""
        check_k(k)
        question = clean_text(question, "question", MAX_QUESTION_CHARS)
        ns = check_namespace(namespace)
        with self._conn() as conn:  # an empty namespace needs no question embedding
            if not one(conn, "SELECT EXISTS (SELECT 1 FROM editkit_edits WHERE namespace = %s)"
                              "::int", (ns,)):
                return []
        return self.retrieve_vector(self.embedder.encode([question])[0], k=k,
                                    threshold=threshold, namespace=ns, as_of=as_of)

    def retrieve_vector(self, query: np.ndarray, *, k: int = DEFAULT_TOP_K,
                        threshold: float = DEFAULT_THRESHOLD,
                        namespace: str = DEFAULT_NAMESPACE,
                        exact: bool = False, as_of: Any = None) -> list[RetrievedEdit]:
        """`retrieve` for an already embedded (unit-norm) question. exact=True scans the
        namespace even where an HNSW index exists (as do k > ef_search and as_of)."""
        check_k(k)
        ns = check_namespace(namespace)
        t = None if as_of is None else check_as_of(as_of)
        with self._conn() as conn:
            return self._search(conn, query, k, threshold, ns, t, exact)

    def _search(self, conn: psycopg.Connection[Any], query: np.ndarray, k: int,
                threshold: float, ns: str, t: float | None, exact: bool
                ) -> list[RetrievedEdit]:
        # The namespace is a literal, not a parameter: the planner can then match it against
        # the partial HNSW index of that namespace (a generic plan could not).
        live = (sql.SQL(_LIVE) if t is None else sql.SQL(
            "created_at <= {t} AND (superseded_at IS NULL OR superseded_at > {t})").format(
                t=sql.Literal(t)))
        inner = sql.SQL("SELECT {cols}, embedding <=> %(q)s AS d FROM editkit_edits "
                        "WHERE namespace = {ns} AND {live}").format(
                            cols=sql.SQL(_COLS), ns=sql.Literal(ns), live=live)
        if exact or t is not None or k > self.ef_search:  # OFFSET 0 fences the index off
            stmt = sql.SQL("SELECT * FROM ({} OFFSET 0) s ORDER BY d LIMIT %(k)s").format(inner)
        else:
            stmt = sql.SQL("{} ORDER BY embedding <=> %(q)s LIMIT %(k)s").format(inner)
        rows = conn.execute(stmt, {"q": np.asarray(query, dtype=np.float32), "k": k}).fetchall()
        hits = [RetrievedEdit(edit=edit_from_row(r), score=1.0 - float(r[N_EDIT_COLUMNS]))
                for r in rows]
        return [h for h in hits if h.score >= threshold]

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
