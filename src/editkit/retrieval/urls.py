"""One resolver for "a memory named by the user" (`--memory`, `from_pretrained(memory=...)`).

- None: an in-RAM `EditMemory` for this process;
- a path: the SQLite `EditMemory` file (created if missing);
- `postgresql://` or `postgres://` URL: `PostgresEditMemory`, shared by every process that
  opens the same database (needs `editkit[postgres]`);
- any other `scheme://`: refused, naming the supported ones (a URL is never taken for a
  folder name).
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from ..errors import InvalidInputError, MemoryBackendMissingError
from .sqlite import EditMemory

if TYPE_CHECKING:
    from .postgres import PostgresEditMemory

POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")  # 2+ letters: C:// is a Windows path
_POSTGRES_PACKAGES = {"psycopg", "psycopg_pool", "pgvector", "psycopg_binary"}


def url_scheme(spec: str) -> str | None:
    """The lower-cased scheme of a `scheme://...` string, or None for a plain path."""
    m = _SCHEME.match(spec)
    return m.group(1).lower() if m else None


def open_memory(spec: str | os.PathLike[str] | None) -> EditMemory | PostgresEditMemory:
    """Open the memory `spec` names (see the module docstring)."""
    if spec is None or isinstance(spec, os.PathLike):
        return EditMemory(spec)
    if not isinstance(spec, str):
        raise InvalidInputError(f"memory must be a path, a postgresql:// URL or None; got "
                                f"{type(spec).__name__}.")
    scheme = url_scheme(spec)
    if scheme is None:
        return EditMemory(spec)
    if scheme not in POSTGRES_SCHEMES:
        raise InvalidInputError(
            f"memory {spec!r}: unsupported scheme {scheme}://. A memory is a file path "
            "(SQLite) or a postgresql:// (or postgres://) URL.")
    try:
        from .postgres import PostgresEditMemory
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _POSTGRES_PACKAGES:
            raise
        raise MemoryBackendMissingError(
            f"A {scheme}:// memory needs the PostgreSQL client packages ({exc.name} is "
            "missing): pip install 'editkit[postgres]'.") from exc
    return PostgresEditMemory(spec)
