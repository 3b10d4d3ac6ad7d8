"""Facts that change, in the memory itself, on both backends (SQLite and a real PostgreSQL):
a newer value of a slot supersedes the older one, which stays in history and is never served;
forgetting undoes it; `refuse` and `keep-both`; `as_of`; two writers updating one fact at once."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from editkit import EditMemory
from editkit.errors import EditConflictError, InvalidInputError
from editkit.retrieval import RetrievalSettings, select

GHENT = "How fast does the Ghent warehouse ship orders?"


def ghent(days: int) -> dict[str, str]:
    return {"text": f"Our warehouse in Ghent ships orders within {days} days.",
            "key": "warehouse/ghent/shipping"}


def served(mem, question: str = GHENT, **kw) -> list[str]:
    """Every edit text retrieval can return for the question (no threshold, many candidates)."""
    return [h.edit.text for h in mem.retrieve(question, k=50, threshold=-1.0, **kw)]


def test_a_newer_value_of_a_key_supersedes_the_older_which_stays_in_history(make_store):
    mem = make_store()
    old, = mem.add(ghent(2))
    other, = mem.add("The Antwerp office opens at 9 am.")
    new, = mem.add(ghent(5))
    assert new.supersedes == (old.id,)
    assert [e.id for e in mem.edits()] == [other.id, new.id] and len(mem) == 2
    history = {e.id: e for e in mem.edits(history=True)}
    assert history[old.id].superseded_by == new.id
    assert history[old.id].superseded_at == pytest.approx(new.created_at)
    assert history[new.id].supersedes == (old.id,) and history[new.id].live
    # never served again: not as the fact, not as a distractor, not as a candidate
    assert "2 days" not in " ".join(served(mem))
    sel = select(mem, GHENT, RetrievalSettings(gate="threshold", threshold=0.0, top_k=5))
    placed = [sel.edit] + sel.distractors
    assert [h.edit.id for h in placed if h is not None].count(old.id) == 0
    assert sel.edit is not None and sel.edit.edit.id == new.id


def test_forgetting_the_newest_brings_the_previous_value_back(make_store):
    mem = make_store()
    a, = mem.add(ghent(2))
    b, = mem.add(ghent(5))
    gone = mem.forget(b.id)
    assert gone.supersedes == (a.id,)
    assert [e.id for e in mem.edits()] == [a.id]
    assert mem.edits(history=True)[0].superseded_by is None
    assert any("2 days" in t for t in served(mem))


def test_forgetting_a_superseded_edit_removes_it_from_history_and_relinks_the_chain(make_store):
    mem = make_store()
    a, = mem.add(ghent(2))
    b, = mem.add(ghent(5))
    c, = mem.add(ghent(7))
    mem.forget(b.id)  # a was replaced by b, which never happened now: a passes to c
    history = {e.id: e for e in mem.edits(history=True)}
    assert set(history) == {a.id, c.id}
    assert history[a.id].superseded_by == c.id
    assert history[c.id].supersedes == (a.id,) and history[c.id].live
    mem.forget(c.id)
    assert [e.id for e in mem.edits()] == [a.id]


def test_refuse_raises_naming_the_stored_edit_and_stores_nothing_of_the_call(make_store):
    mem = make_store()
    a, = mem.add(ghent(2))
    with pytest.raises(EditConflictError, match=a.id) as info:
        mem.add(["The Antwerp office opens at 9 am.", ghent(5)], on_update="refuse")
    assert [e.id for e in info.value.conflicts] == [a.id]
    assert [e.id for e in mem.edits(history=True)] == [a.id]  # the whole call rolled back


def test_keep_both_stores_the_new_value_beside_the_old(make_store):
    mem = make_store()
    a, = mem.add(ghent(2))
    b, = mem.add(ghent(5), on_update="keep-both")
    assert b.supersedes == () and {e.id for e in mem.edits()} == {a.id, b.id}


def test_an_unknown_update_policy_is_refused_before_anything_is_stored(make_store):
    mem = make_store()
    with pytest.raises(InvalidInputError, match="on_update"):
        mem.add(ghent(2), on_update="newest")
    assert mem.edits(history=True) == []


def test_subject_and_relation_decide_the_slot_without_a_key(make_store):
    mem = make_store()
    a, = mem.add({"text": "The Nimbus X2 phone costs 799 dollars.", "subject": "Nimbus X2",
                  "relation": "price"})
    x3, = mem.add({"text": "The Nimbus X3 phone costs 899 dollars.", "subject": "Nimbus X3",
                   "relation": "price"})
    b, = mem.add({"text": "The Nimbus X2 phone now costs 699 dollars.",
                  "subject": "nimbus  x2", "relation": "Price"})
    assert b.supersedes == (a.id,)
    assert {e.id for e in mem.edits()} == {x3.id, b.id}


def test_keys_only_match_keys_and_stay_in_their_namespace(make_store):
    mem = make_store()
    plain, = mem.add("Our warehouse in Ghent ships orders within 2 days.")
    keyed, = mem.add(ghent(5))
    assert keyed.supersedes == ()  # a key never retires an unkeyed edit
    elsewhere, = mem.add(ghent(9), namespace="tenant-b")
    assert elsewhere.supersedes == ()
    assert {e.id for e in mem.edits("default")} == {plain.id, keyed.id}


def test_a_later_fact_of_one_call_supersedes_an_earlier_one_of_the_same_key(make_store):
    mem = make_store()
    first, second = mem.add([ghent(2), ghent(5)])
    assert second.supersedes == (first.id,)
    assert [e.id for e in mem.edits()] == [second.id]


def test_as_of_serves_the_edits_that_were_live_then(make_store):
    mem = make_store()
    a, = mem.add(ghent(2))
    time.sleep(0.02)
    b, = mem.add(ghent(5))
    before, between, now = a.created_at - 1, (a.created_at + b.created_at) / 2, time.time()
    assert served(mem, as_of=before) == []
    assert ["2 days" in t for t in served(mem, as_of=between)] == [True]
    assert ["5 days" in t for t in served(mem, as_of=now)] == [True]
    with pytest.raises(InvalidInputError, match="as_of"):
        mem.retrieve(GHENT, as_of="yesterday")


def test_two_writers_updating_one_fact_at_once_leave_exactly_one_live_value(make_store, tmp_path):
    """Two memories on one store (two replicas): 100 rounds of simultaneous updates of one key;
    after each, both see exactly one live value, and every acknowledged edit is in history."""
    first = make_store(tmp_path / "shared.db")
    second = (EditMemory(tmp_path / "shared.db") if isinstance(first, EditMemory)
              else type(first)(first._url))
    acked: list[str] = []
    try:
        for round_ in range(100):
            barrier = threading.Barrier(2)

            def write(mem, value: int, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                acked.append(mem.add(ghent(value))[0].id)

            threads = [threading.Thread(target=write, args=(m, 2 * round_ + i))
                       for i, m in enumerate((first, second))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for mem in (first, second):
                assert len(mem.edits()) == 1, f"round {round_}"
                assert len(served(mem)) == 1, f"round {round_}"
        assert sorted(e.id for e in first.edits(history=True)) == sorted(acked)
    finally:
        second.close()


def test_a_memory_file_of_schema_2_is_upgraded_in_place_and_keeps_its_edits(tmp_path):
    path = tmp_path / "old.db"
    mem = EditMemory(path)
    old, = mem.add("The Antwerp office opens at 9 am.")
    mem.close()
    c = sqlite3.connect(path)  # make it a version-2 file: no key or supersession columns
    for name in ("edits_logged_superseded", "edits_logged_restored"):
        c.execute(f"DROP TRIGGER {name}")
    c.execute("DROP INDEX edits_live_slot")
    c.execute("DROP INDEX edits_superseded_by")
    for col in ("key", "slot", "superseded_by", "superseded_at"):
        c.execute(f"ALTER TABLE edits DROP COLUMN {col}")
    c.execute("UPDATE editkit_meta SET value = '2' WHERE key = 'schema'")
    c.commit()
    c.close()
    mem = EditMemory(path)
    assert [e.id for e in mem.edits()] == [old.id]
    a, = mem.add(ghent(2))
    b, = mem.add(ghent(5))
    assert b.supersedes == (a.id,) and len(mem) == 2
    mem.close()


def test_a_postgres_memory_of_schema_1_is_migrated_and_keeps_its_edits(pg_url, monkeypatch):
    psycopg = pytest.importorskip("psycopg")
    from pgvector.psycopg import register_vector

    from editkit.embedder import shared_embedder
    from editkit.retrieval import pg_schema
    from editkit.retrieval.postgres import PostgresEditMemory

    emb = shared_embedder()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # what editkit 1 wrote
        monkeypatch.setattr(pg_schema, "SCHEMA_VERSION", 1)
        pg_schema.migrate(conn, emb, "test")
        monkeypatch.undo()
        register_vector(conn)
        conn.execute("INSERT INTO editkit_edits (id, text, namespace, created_at, embedding) "
                     "VALUES ('old1', 'The Antwerp office opens at 9 am.', 'default', 1.0, %s)",
                     (emb.encode(["The Antwerp office opens at 9 am."])[0],))
    with PostgresEditMemory(pg_url) as mem:
        assert [e.id for e in mem.edits()] == ["old1"]
        a, = mem.add(ghent(2))
        b, = mem.add(ghent(5))
        assert b.supersedes == (a.id,) and len(mem) == 2
