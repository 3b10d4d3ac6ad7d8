"""The PostgreSQL edit memory's schema: created and versioned by editkit (`editkit.pg_memory`).

`editkit_schema` holds one row per applied migration. Opening a memory applies the missing
ones in one transaction, under an advisory lock, so replicas starting together do not race; a
database whose schema is newer than this editkit's is refused before anything is written. The
first embedder used is pinned in `editkit_meta` (the vector column has its dimension); a memory
opened with another one is refused, as the SQLite memory does.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from ..embedder import Embedder
from ..errors import InvalidInputError, MemorySchemaError

SCHEMA_VERSION = 2
LOCK_KEY = 0x6564_6B74  # pg_advisory_xact_lock key for schema changes ("edkt")
WRITE_LOCK_KEY = 0x6564  # with hashtext(namespace): one namespace's updates, one at a time

# version -> (description, statements); {dim} is the embedder's dimension. Append only: a
# released migration never changes, a new one gets the next version.
MIGRATIONS: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("edits with pgvector embeddings; embedder pinned in editkit_meta", (
        "CREATE TABLE editkit_meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE editkit_edits (
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            id text PRIMARY KEY,
            text text NOT NULL, subject text, relation text, object text,
            namespace text NOT NULL,
            created_at double precision NOT NULL,
            embedding vector({dim}) NOT NULL)""",
        "CREATE INDEX editkit_edits_namespace ON editkit_edits (namespace, created_at, seq)",
    )),
    2: ("slot keys and supersession: a newer value of a slot keeps the older as history", (
        "ALTER TABLE editkit_edits ADD COLUMN key text, ADD COLUMN slot text, "
        "ADD COLUMN superseded_by text, ADD COLUMN superseded_at double precision",
        "CREATE INDEX editkit_edits_live_slot ON editkit_edits (namespace, slot) "
        "WHERE superseded_by IS NULL AND slot IS NOT NULL",
        "CREATE INDEX editkit_edits_superseded_by ON editkit_edits (superseded_by) "
        "WHERE superseded_by IS NOT NULL",
    )),
}
_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS editkit_schema (
    version integer PRIMARY KEY, description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


def migrate(conn: psycopg.Connection[Any], embedder: Embedder, where: str) -> None:
    """Create or upgrade the schema to SCHEMA_VERSION in one transaction, then pin or check the
    embedder. `where` names the database in messages (a URL without its password)."""
    name, dim = embedder.name, str(embedder.dim)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(_VERSION_TABLE)
            have = one(conn, "SELECT COALESCE(MAX(version), 0) FROM editkit_schema")
            if have > SCHEMA_VERSION:
                raise MemorySchemaError(
                    f"{where} holds editkit schema version {have}, newer than this editkit "
                    f"supports ({SCHEMA_VERSION}): a newer editkit wrote it. Upgrade editkit "
                    "(pip install -U editkit) on every replica; the database was left "
                    "untouched.")
            for version in range(have + 1, SCHEMA_VERSION + 1):
                description, statements = MIGRATIONS[version]
                for stmt in statements:
                    conn.execute(stmt.format(dim=dim))  # type: ignore[arg-type]
                conn.execute("INSERT INTO editkit_schema (version, description) VALUES (%s, %s)",
                             (version, description))
            conn.execute("INSERT INTO editkit_meta VALUES ('embedder', %s), ('dim', %s) "
                         "ON CONFLICT (key) DO NOTHING", (name, dim))
            meta = dict(conn.execute("SELECT key, value FROM editkit_meta").fetchall())
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFile,
            psycopg.errors.DuplicateTable) as exc:
        raise MemorySchemaError(
            f"{where}: editkit cannot set up its tables ({first_line(exc)}). The server needs "
            "the pgvector extension installed, `CREATE EXTENSION vector;` run once by a "
            "privileged user, and a user who may create tables; no table named editkit_* may "
            "exist from another application.") from exc
    if (meta.get("embedder"), meta.get("dim")) != (name, dim):
        raise InvalidInputError(
            f"This memory ({where}) was built with embedder {meta.get('embedder')!r} (dim "
            f"{meta.get('dim')}); the current one is {name!r} (dim {dim}). Open it with that "
            "embedder, or use another database.")


def one(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] = ()) -> int:
    """The first column of the first row, as an int (0 for no row)."""
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row is not None else 0


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (libpq adds hints on further lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(url: str) -> str:
    """The URL without its password (for `path`, messages and logs)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    return re.sub(r"(password=)[^&]*", r"\1***", urlunsplit(parts))
