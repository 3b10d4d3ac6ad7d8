"""PostgresEditMemory on a real PostgreSQL 16 + pgvector (tests/pg_fixtures.py): what SQLite
does not cover. The EditStore behaviour both backends share is tested in test_memory.py.

Two `editkit serve` replicas on one database: test_pg_replicas.py (slow)."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("psycopg", reason="needs editkit[postgres] (dev extra)")
import psycopg  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from editkit import (  # noqa: E402
    EditMemory,
    EditMemoryError,
    EditNotFoundError,
    InvalidInputError,
    MemoryBackendMissingError,
    MemorySchemaError,
    MemoryUnavailableError,
)
from editkit.retrieval.postgres import SCHEMA_VERSION, PostgresEditMemory, redact  # noqa: E402
from editkit.retrieval.urls import open_memory  # noqa: E402
from pg_fixtures import new_local_pg  # noqa: E402

EIFFEL = "The Eiffel Tower is located in Rome."
PIANO = "Toko Yasuda plays the piano."


def unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_tenants_never_see_or_change_each_others_edits(pg_url):
    mem = PostgresEditMemory(pg_url)
    [a] = mem.add(EIFFEL, namespace="alice")
    [b] = mem.add(EIFFEL, namespace="bob")  # the same fact, stored twice
    q = "Where is the Eiffel Tower?"
    assert [h.edit for h in mem.retrieve(q, namespace="alice")] == [a]
    assert [h.edit for h in mem.retrieve(q, namespace="bob")] == [b]
    assert mem.retrieve(q, namespace="carol") == [] and mem.edits("carol") == []
    with pytest.raises(EditNotFoundError, match="namespace 'bob'"):
        mem.forget(a.id, "bob")
    assert mem.clear("bob") == 1 and mem.edits("alice") == [a]
    assert [h.edit for h in mem.retrieve(q, namespace="alice")] == [a]


def test_two_replicas_see_each_others_adds_and_forgets_at_once(pg_url):
    """No cache: an acknowledged add is in the other replica's next retrieve, an acknowledged
    forget or clear never comes back from it."""
    one, two = PostgresEditMemory(pg_url), PostgresEditMemory(pg_url)
    q = "Where is the Eiffel Tower?"
    assert two.retrieve(q) == []
    [e] = one.add(EIFFEL)
    assert [h.edit for h in two.retrieve(q)] == [e]
    assert two.forget(e.id) == e
    assert one.retrieve(q) == [] and one.edits() == []
    two.add([EIFFEL, PIANO])
    assert one.clear() == 2 and two.retrieve(q) == [] and len(two) == 0


def test_a_memory_written_with_another_embedder_is_refused(pg_url):
    from editkit.embedder import Embedder, default_embedder_path

    PostgresEditMemory(pg_url).add(EIFFEL)
    other = Embedder(default_embedder_path())  # same weights, another fingerprint (its path)
    assert other.name != "all-MiniLM-L6-v2"
    with pytest.raises(InvalidInputError, match="was built with embedder 'all-MiniLM-L6-v2'"):
        PostgresEditMemory(pg_url, embedder=other)
    assert [e.text for e in PostgresEditMemory(pg_url).edits()] == [EIFFEL]


def test_a_newer_schema_version_is_refused_and_the_database_left_untouched(pg_url):
    mem = PostgresEditMemory(pg_url)
    [e] = mem.add(EIFFEL)
    mem.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        versions = conn.execute("SELECT version FROM editkit_schema ORDER BY 1").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        conn.execute("INSERT INTO editkit_schema (version, description) VALUES (%s, 'future')",
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(MemorySchemaError, match=f"version {SCHEMA_VERSION + 1}, newer") as exc:
        PostgresEditMemory(pg_url)
    assert "Upgrade editkit" in str(exc.value)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT id FROM editkit_edits").fetchall() == [(e.id,)]
        assert conn.execute("SELECT COUNT(*) FROM editkit_schema").fetchone()[0] == \
            SCHEMA_VERSION + 1


def test_a_multi_fact_add_that_fails_midway_stores_nothing(pg_url):
    """A trigger in the database refuses the second row of three: nothing of the three is
    stored, the error is typed, and the memory goes on working."""
    mem = PostgresEditMemory(pg_url)
    [kept] = mem.add(EIFFEL)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN
            IF NEW.text LIKE 'Poison%' THEN RAISE EXCEPTION 'refused by a trigger'; END IF;
            RETURN NEW; END $$ LANGUAGE plpgsql""")
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON editkit_edits FOR EACH ROW "
                     "EXECUTE FUNCTION refuse_poison()")
    with pytest.raises(EditMemoryError, match="refused by a trigger"):
        mem.add([PIANO, "Poison is stored second.", "Danielle Darrieux speaks English."])
    assert mem.edits() == [kept]
    assert [e.text for e in mem.add([PIANO, "Danielle Darrieux speaks English."])] == [
        PIANO, "Danielle Darrieux speaks English."]


def test_an_unreachable_database_or_a_bad_url_fails_at_open_with_an_actionable_error():
    from editkit.retrieval.pg_local import free_port

    t = time.perf_counter()
    with pytest.raises(MemoryUnavailableError, match="is unavailable") as exc:
        PostgresEditMemory(f"postgresql://editkit:s3cret@127.0.0.1:{free_port()}/edits")
    assert time.perf_counter() - t < 10
    assert "Check that PostgreSQL is running" in str(exc.value)
    assert "s3cret" not in str(exc.value)
    with pytest.raises(InvalidInputError, match="not a PostgreSQL URL"):
        PostgresEditMemory("postgresql://u@127.0.0.1/db?nonsense=1")
    for bad in ({"ef_search": 0}, {"pool_size": True}, {"timeout_s": -1.0}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):  # before connecting
            PostgresEditMemory("postgresql://u@127.0.0.1/db", **bad)


def test_the_password_never_shows_in_the_path_or_messages():
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgres://h/db?sslmode=require&password=pw") == \
        "postgres://h/db?sslmode=require&password=***"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_large_namespace_gets_an_hnsw_index_and_small_ones_stay_exact(pg_url):
    mem = PostgresEditMemory(pg_url, ann_min_edits=1000)
    vecs = unit(1200)
    mem.add_embedded([f"Fact number {i}." for i in range(1200)], vecs, namespace="big")
    mem.add_embedded([f"Small fact {i}." for i in range(50)], unit(50, 1), namespace="small")
    deadline = time.monotonic() + 60
    while "big" not in mem._ann_ready and time.monotonic() < deadline:
        time.sleep(0.1)  # built in the background after the add crossed the size
    assert mem._ann_ready == {"big"}

    def plan(ns: str) -> str:
        from psycopg import sql
        stmt = sql.SQL("EXPLAIN SELECT id FROM editkit_edits WHERE namespace = {} "
                       "ORDER BY embedding <=> %s LIMIT 4").format(sql.Literal(ns))
        with mem._conn() as conn:
            return "\n".join(r[0] for r in conn.execute(stmt, (vecs[0],)).fetchall())

    assert "editkit_edits_ann_" in plan("big") and "editkit_edits_ann_" not in plan("small")
    for i in (0, 7, 1199):  # a stored vector finds itself first, by either search
        for exact in (False, True):
            [top] = mem.retrieve_vector(vecs[i], k=1, threshold=0.99, namespace="big",
                                        exact=exact)
            assert top.edit.text == f"Fact number {i}." and top.score == pytest.approx(1, 1e-5)
    assert mem.retrieve_vector(vecs[0], k=4, namespace="small", threshold=0.99) == []
    assert mem.ensure_ann_index("big") == mem.ensure_ann_index("big")  # idempotent


def test_the_database_restarted_mid_load_gives_typed_errors_then_full_service():
    """Writers and a reader run while the server stops and starts again: during the outage
    every failure is a MemoryUnavailableError, after it every call works, and every add that
    was acknowledged is stored."""
    pg = new_local_pg()
    try:
        mem = PostgresEditMemory(pg.url, timeout_s=2.0)
        vecs = unit(1)
        acked: list[str] = []
        typed: list[str] = []
        other: list[BaseException] = []
        stop = threading.Event()

        def guarded(work) -> None:
            n = 0
            while not stop.is_set():
                try:
                    work(n)
                except MemoryUnavailableError as exc:
                    typed.append(str(exc))
                    time.sleep(0.05)
                except BaseException as exc:  # noqa: BLE001 - any other kind fails the test
                    other.append(exc)
                n += 1

        def write(n: int) -> None:
            name = threading.current_thread().name
            acked.extend(e.id for e in mem.add_embedded(f"Fact {n} of {name}.", vecs))

        def read(n: int) -> None:
            mem.retrieve_vector(vecs[0], k=3)
            mem.edits()

        threads = [threading.Thread(target=guarded, args=(w,)) for w in (write, write, read)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = len(acked)
        pg.stop()
        time.sleep(3.0)
        pg.start()
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not other, other
        assert typed and all("is unavailable" in m and "reconnects" in m for m in typed)
        assert len(acked) > before  # adds were acknowledged again after the restart
        stored = {e.id for e in mem.edits(history=True)}  # live or superseded: none lost
        assert set(acked) <= stored
        [e] = mem.add(EIFFEL)
        assert mem.retrieve("Where is the Eiffel Tower?")[0].edit == e
    finally:
        pg.destroy()


def test_open_memory_takes_none_a_path_or_a_postgres_url_and_refuses_other_schemes(
        pg_url, tmp_path, monkeypatch):
    assert isinstance(open_memory(None), EditMemory)
    assert isinstance(open_memory(tmp_path / "a.sqlite"), EditMemory)
    assert isinstance(open_memory(str(tmp_path / "b.sqlite")), EditMemory)
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        mem = open_memory(url)
        assert isinstance(mem, PostgresEditMemory) and mem.path == url
    monkeypatch.chdir(tmp_path)
    for bad in ("mysql://u@h/db", "sqlite:///x.db", "file:///tmp/x"):
        with pytest.raises(InvalidInputError, match="postgresql://"):
            open_memory(bad)
    assert not [p.name for p in tmp_path.iterdir() if ":" in p.name]  # no URL became a folder


def test_a_postgres_url_without_the_extra_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    monkeypatch.delitem(sys.modules, "editkit.retrieval.postgres", raising=False)
    with pytest.raises(MemoryBackendMissingError, match=r"pip install 'editkit\[postgres\]'"):
        open_memory("postgresql://u@127.0.0.1/db")


def test_the_cli_lists_a_postgres_memory_and_refuses_a_url_it_cannot_open(
        pg_url, tmp_path, monkeypatch, tiny_model_dir):
    from editkit.cli import app

    mem = PostgresEditMemory(pg_url)
    mem.add(EIFFEL, namespace="alice")
    mem.add(EIFFEL)
    runner = CliRunner()
    res = runner.invoke(app, ["edits", pg_url])
    assert res.exit_code == 0 and "Eiffel Tower" in res.output and "alice" in res.output
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["ask", "Where is the Eiffel Tower?", "--mode", "prompt",
                              "--memory", "mysql://u@h/db", "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "unsupported scheme mysql://" in res.output
    res = runner.invoke(app, ["ask", "Where is the Eiffel Tower?", "--mode", "prompt",
                              "--memory", pg_url, "--max-new-tokens", "2", "--json",
                              "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    assert EIFFEL in res.output  # the answer's edit, retrieved through PostgreSQL
    res = runner.invoke(app, ["serve", "--model", str(tiny_model_dir), "--memory",
                              "postgresql://u@127.0.0.1:1/db"])  # nothing listens on port 1
    assert res.exit_code == 2 and "is unavailable" in res.output
    assert list(tmp_path.iterdir()) == []  # no folder named after a URL
