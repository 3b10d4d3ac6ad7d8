"""Edit memory: CRUD, persistence, two processes, namespaces, retrieval threshold, corrupt files.

Tests that take `make_store` are about the `EditStore` behaviour and run on both backends:
SQLite (`EditMemory`) and PostgreSQL (`PostgresEditMemory`, a real server: tests/pg_fixtures.py).
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from editkit import (
    EditMemory,
    EditNotFoundError,
    FactTooLongError,
    InvalidInputError,
    MemoryCorruptError,
)

EIFFEL = "The Eiffel Tower is located in Rome."


def test_add_list_forget_clear(make_store, tmp_path):
    mem = make_store(tmp_path / "m.sqlite")
    [a] = mem.add(EIFFEL)
    b, c = mem.add(["Toko Yasuda plays the piano.",
                    {"text": "Danielle Darrieux speaks English.", "subject": "Danielle Darrieux",
                     "relation": "mother tongue", "object": "English"}])
    assert [e.text for e in mem.edits()] == [EIFFEL, b.text, c.text]
    assert c.subject == "Danielle Darrieux" and c.object == "English"
    assert len({a.id, b.id, c.id}) == 3 and a.namespace == "default"
    assert mem.forget(b.id) == b
    with pytest.raises(EditNotFoundError, match=b.id):
        mem.forget(b.id)
    assert len(mem) == 2
    assert mem.clear() == 2 and mem.edits() == []


def test_forget_in_a_namespace_leaves_another_namespaces_edit_alone(make_store, tmp_path):
    mem = make_store(tmp_path / "m.sqlite")
    [a] = mem.add(EIFFEL, namespace="alice")
    with pytest.raises(EditNotFoundError, match="namespace 'bob'"):
        mem.forget(a.id, "bob")
    assert mem.edits("alice") == [a]
    assert mem.forget(a.id, "alice") == a and mem.edits() == []


def test_sqlite_file_uses_wal_and_survives_reopen(tmp_path):
    path = tmp_path / "m.sqlite"
    with EditMemory(path) as mem:
        [e] = mem.add(EIFFEL)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with EditMemory(path) as again:
        assert again.edits() == [e]
        assert again.retrieve("Where is the Eiffel Tower?")[0].edit == e


def test_two_processes_see_each_others_committed_edits(tmp_path):
    path = tmp_path / "shared.sqlite"
    mine = EditMemory(path)
    mine.add(EIFFEL)
    script = textwrap.dedent(f"""
        from editkit import EditMemory
        m = EditMemory({str(path)!r})
        print(len(m.edits()))
        m.add("Toko Yasuda plays the piano.")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"
    assert [e.text for e in mine.edits()] == [EIFFEL, "Toko Yasuda plays the piano."]
    hits = mine.retrieve("What instrument does Toko Yasuda play?")  # cache refreshed too
    assert hits and hits[0].edit.text == "Toko Yasuda plays the piano."


def test_retrieval_ranks_by_similarity_and_applies_the_threshold(make_store):
    mem = make_store(None)
    mem.add([EIFFEL, "Toko Yasuda plays the piano.", "The Louvre is located in Berlin."])
    hits = mem.retrieve("The Eiffel Tower is located in the city of", k=3, threshold=0.0)
    assert hits[0].edit.text == EIFFEL
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert mem.retrieve("The capital of Japan is", threshold=0.5) == []
    assert len(mem.retrieve("The Eiffel Tower is located in the city of", k=1,
                            threshold=-1.0)) == 1


def test_namespaces_never_leak_into_each_other(make_store):
    mem = make_store(None)
    mem.add(EIFFEL, namespace="alice")
    assert mem.retrieve("The Eiffel Tower is located in the city of", namespace="bob") == []
    assert mem.retrieve("The Eiffel Tower is located in the city of", namespace="alice")
    assert mem.edits("bob") == [] and len(mem.edits("alice")) == 1
    assert mem.clear("bob") == 0 and len(mem) == 1


@pytest.mark.parametrize("bad,err", [
    ("", InvalidInputError), ("   \n", InvalidInputError), (42, InvalidInputError),
    (None, InvalidInputError), ("x" * 1001, FactTooLongError), ("a\x00b", InvalidInputError),
    ("bad \ud800 surrogate", InvalidInputError), ({"txt": "typo"}, InvalidInputError),
    ([], InvalidInputError), (["ok fact.", ""], InvalidInputError),
])
def test_bad_facts_are_refused_and_nothing_is_stored(make_store, bad, err):
    mem = make_store(None)
    mem.add("An existing fact.")
    with pytest.raises(err):
        mem.add(bad)
    assert [e.text for e in mem.edits()] == ["An existing fact."]


def test_corrupt_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "broken.sqlite"
    junk = b"this is not a database" * 100
    path.write_bytes(junk)
    with pytest.raises(MemoryCorruptError, match="left untouched"):
        EditMemory(path)
    assert path.read_bytes() == junk


def test_foreign_sqlite_database_is_not_written_into(tmp_path):
    path = tmp_path / "app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(MemoryCorruptError, match="users"):
        EditMemory(path)
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("users",)]


def test_a_failed_change_log_prune_rolls_back_and_leaves_the_memory_usable(tmp_path, monkeypatch):
    from editkit.retrieval import sqlite as memory_mod

    mem = EditMemory(tmp_path / "m.sqlite")
    [kept] = mem.add(EIFFEL)

    def failing_prune(conn):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    with monkeypatch.context() as mp:
        mp.setattr(memory_mod, "prune_log", failing_prune)
        with pytest.raises(sqlite3.OperationalError, match="simulated"):
            mem.add("Toko Yasuda plays the piano.")
    assert not mem._conn.in_transaction  # rolled back, not left open
    assert mem.edits() == [kept]  # the failed add stored nothing
    [later] = mem.add("Danielle Darrieux speaks English.")  # BEGIN IMMEDIATE works again
    assert [e.id for e in EditMemory(tmp_path / "m.sqlite").edits()] == [kept.id, later.id]


@pytest.mark.parametrize("k", [True, False, 0, -1, 1.0, "2", None])
def test_k_must_be_a_positive_int_and_a_bool_is_not_one(make_store, k):
    from editkit.retrieval.store import check_k

    mem = make_store(None)
    mem.add(EIFFEL)
    with pytest.raises(InvalidInputError, match="k must be an int"):
        check_k(k)
    with pytest.raises(InvalidInputError, match="k must be an int"):
        mem.retrieve("Where is the Eiffel Tower?", k=k)
    with pytest.raises(InvalidInputError, match="k must be an int"):
        mem.retrieve_vector(mem.embedder.encode(["Where is the Eiffel Tower?"])[0], k=k)


def test_the_langchain_stores_share_the_k_check():
    from langchain_core.vectorstores import InMemoryVectorStore

    from editkit.integrations.langchain import (
        EditkitEmbeddings,
        EditMemoryRetriever,
        VectorStoreEditMemory,
    )

    vs_mem = VectorStoreEditMemory(InMemoryVectorStore(EditkitEmbeddings()))
    vs_mem.add(EIFFEL)
    with pytest.raises(InvalidInputError, match="k must be an int"):
        vs_mem.retrieve("Where is the Eiffel Tower?", k=True)
    retriever = EditMemoryRetriever(memory=vs_mem)
    with pytest.raises(InvalidInputError, match="k must be an int"):
        retriever.invoke("Where is the Eiffel Tower?", k=True)
    assert [d.page_content for d in retriever.invoke("Where is the Eiffel Tower?", k=1)] == [
        EIFFEL]


def test_retrieval_reads_all_hits_in_one_query_best_first():
    mem = EditMemory(None)
    facts = [EIFFEL, "The Eiffel Tower is painted blue.", "Toko Yasuda plays the piano.",
             "Paris is the capital of Italy.", "The Louvre is located in Rome."]
    mem.add(facts)
    question = "Where is the Eiffel Tower located?"
    mem.retrieve(question)  # sync the index first: only the search itself is traced below
    statements: list[str] = []
    mem._conn.set_trace_callback(statements.append)
    try:
        hits = mem.retrieve(question, k=5, threshold=-1.0)
    finally:
        mem._conn.set_trace_callback(None)
    reads = [s for s in statements if "FROM edits WHERE id" in s]
    assert len(reads) == 1, statements
    assert len(hits) == 5 and hits[0].edit.text == EIFFEL
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert {h.edit.text for h in hits} == set(facts)


def test_the_edit_store_protocol_declares_the_embedder(make_store):
    from editkit.retrieval import EditStore

    class NoEmbedder:
        path = "x"

        def add(self, facts, namespace="default"): ...
        def forget(self, edit_id): ...
        def edits(self, namespace=None): ...
        def clear(self, namespace=None): ...
        def retrieve(self, question, *, k=4, threshold=0.5, namespace="default"): ...

    mem = make_store(None)
    assert isinstance(mem, EditStore) and mem.embedder.dim > 0
    assert not isinstance(NoEmbedder(), EditStore)


def test_concurrent_encodes_are_embedded_together_and_equal_lone_ones(monkeypatch):
    """A server retrieves in many threads at once: calls that arrive while the embedder is busy
    are encoded in one batch, and each caller gets the vectors a lone call gives."""
    import threading
    import time

    import numpy as np

    from editkit.embedder import shared_embedder

    emb = shared_embedder()
    texts = [f"Which city is the Eiffel Tower in? Variant {i}." for i in range(12)]
    alone = np.stack([emb.encode([t])[0] for t in texts])
    calls: list[int] = []
    encode = emb._st.encode

    def counting(batch, **kw):  # the first call is slow, so the others queue behind it
        calls.append(len(batch))
        if len(calls) == 1:
            time.sleep(0.3)
        return encode(batch, **kw)

    monkeypatch.setattr(emb._st, "encode", counting)
    out: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, emb.encode([texts[i]])))
               for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    got = np.stack([out[i][0] for i in range(len(texts))])
    assert np.allclose(got, alone, atol=1e-5)
    assert sum(calls) == len(texts) and len(calls) <= 3  # the queued ones, embedded together

    def failing(batch, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(emb._st, "encode", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        emb.encode(["a question"])
    monkeypatch.setattr(emb._st, "encode", encode)
    assert emb.encode(["a question"]).shape == (1, emb.dim)  # not left busy
