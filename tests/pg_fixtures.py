"""A real PostgreSQL 16 + pgvector for the tests (the `pgserver` wheel's binaries, in editkit's
dev extra), started once per session in a temporary folder on 127.0.0.1 and a unix socket there,
stopped by the process id it started, and deleted. Each test gets a fresh database.

Imported by conftest.py, so the fixtures are available to every test module.
"""
from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from editkit import EditMemory
from editkit.retrieval import EditStore


def new_local_pg(prefix: str = "editkit-pg-") -> Any:
    """A started LocalPostgres in a new folder under the system temp dir (short enough for the
    unix socket's path); skips the test where the dev extra is missing."""
    pytest.importorskip("psycopg", reason="needs editkit[postgres] (dev extra)")
    pytest.importorskip("pgserver", reason="needs the pgserver wheel (dev extra)")
    from editkit.retrieval.pg_local import LocalPostgres

    # fsync off: a server shutdown or restart still loses nothing (what the tests do to it),
    # only an OS crash could; with it on, stopping after a session's databases takes ~20 s
    pg = LocalPostgres(Path(tempfile.mkdtemp(prefix=prefix)), settings={"fsync": "off"})
    try:
        pg.start()
    except BaseException:
        pg.destroy()
        raise
    return pg


@pytest.fixture(scope="session")
def local_pg() -> Iterator[Any]:
    """The session's PostgreSQL server (a `editkit.retrieval.pg_local.LocalPostgres`)."""
    pg = new_local_pg()
    yield pg
    pg.destroy()


@pytest.fixture
def pg_url(local_pg: Any) -> str:
    """The URL of a new, empty database on the session's server."""
    return local_pg.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[..., EditStore]]:
    """Opens an empty memory of each backend: `make_store(path)` is `EditMemory(path)` on
    SQLite (a file, or None for RAM, as the test asks) and a `PostgresEditMemory` on a fresh
    database of the session's server (the path is then unused)."""
    opened: list[Any] = []

    def make(path: str | Path | None = None) -> EditStore:
        if request.param == "sqlite":
            mem: Any = EditMemory(path)
        else:
            from editkit.retrieval.postgres import PostgresEditMemory

            mem = PostgresEditMemory(request.getfixturevalue("pg_url"))
        opened.append(mem)
        return mem

    yield make
    for mem in opened:
        mem.close()
