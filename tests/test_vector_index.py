"""The memory's vector indexes and the change log that keeps them in step with SQLite."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from editkit.errors import InvalidInputError
from editkit.retrieval import EditMemory
from editkit.retrieval import sqlite_index as memory_mod
from editkit.retrieval.index import ExactIndex, FaissIndex, build_index


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, dim: int = 32, centers: int = 50, seed: int = 0) -> np.ndarray:
    """Vectors around a few centres, like sentence embeddings of related facts."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    return _unit(c[rng.integers(0, centers, n)] + 0.5 * rng.normal(size=(n, dim)))


def _brute(mat: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(-(mat @ q), kind="stable")[:k])


def test_exact_index_equals_brute_force_through_adds_and_removes() -> None:
    vecs = _clustered(500)
    idx = ExactIndex(32)
    for start in range(0, 500, 7):  # many small appends exercise the growth path
        idx.add(np.arange(start, min(start + 7, 500)), vecs[start:start + 7])
    idx.remove(np.arange(0, 500, 3))
    alive = np.array([i for i in range(500) if i % 3])
    for q in _clustered(20, seed=1):
        sims, labels = idx.search(q, 10)
        assert list(labels) == list(alive[_brute(vecs[alive], q, 10)])
        assert np.all(np.diff(sims) <= 1e-7)


def test_exact_index_keeps_rows_and_labels_paired_when_removes_and_adds_interleave() -> None:
    vecs = _clustered(300, seed=4)
    idx, alive = ExactIndex(32), set()
    rng = np.random.default_rng(5)
    for step in range(30):  # removes move the last row into the hole; adds reuse the space
        new = np.arange(10 * step, 10 * step + 10)
        idx.add(new, vecs[new])
        alive |= set(new.tolist())
        gone = rng.choice(sorted(alive), size=4, replace=False)
        idx.remove(np.concatenate([gone, [10_000]]))  # an unknown label is ignored
        alive -= set(gone.tolist())
    ids = np.array(sorted(alive))
    assert len(idx) == len(ids)
    np.testing.assert_array_equal(idx.vectors(ids), vecs[ids])
    for q in _clustered(5, seed=6):
        assert list(idx.search(q, 10)[1]) == list(ids[_brute(vecs[ids], q, 10)])


def test_faiss_is_flat_while_small_and_ivf_with_high_recall_when_large() -> None:
    pytest.importorskip("faiss")
    vecs = _clustered(6000)
    small = FaissIndex(32, vecs[:100], np.arange(100), ivf_min=1000)
    assert small.kind == "flat"
    big = FaissIndex(32, vecs, np.arange(6000), ivf_min=1000)
    assert big.kind == "ivf" and big.nlist == int(np.sqrt(6000)) and big.nprobe >= 16
    queries = _clustered(100, seed=2)
    recall = np.mean([len(set(big.search(q, 10)[1]) & set(_brute(vecs, q, 10))) / 10
                      for q in queries])
    assert recall >= 0.95
    sims, labels = big.search(queries[0], 10)  # PQ candidates come back with exact similarities
    np.testing.assert_allclose(sims, vecs[labels] @ queries[0], rtol=1e-5, atol=1e-6)
    big.remove(np.arange(0, 6000, 2))
    assert len(big) == 3000 and all(lab % 2 for lab in big.search(queries[0], 10)[1])
    grown = FaissIndex(32, vecs[:200], np.arange(200), ivf_min=1000)
    grown.add(np.arange(200, 1200), vecs[200:1200])
    assert grown.wants_rebuild()  # a flat index past ivf_min asks to become IVF


def test_build_index_of_either_kind_finds_the_same_neighbours_when_small() -> None:
    pytest.importorskip("faiss")
    vecs = _clustered(300)
    a, b = build_index("exact", 32, vecs, np.arange(300)), build_index("faiss", 32, vecs,
                                                                           np.arange(300))
    for q in _clustered(10, seed=3):
        assert list(a.search(q, 5)[1]) == list(b.search(q, 5)[1])


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_changes_from_another_connection_are_applied_without_reloading_all_rows(
        tmp_path, kind: str, monkeypatch) -> None:
    if kind == "faiss":
        pytest.importorskip("faiss")
    path = tmp_path / "m.sqlite"
    writer, reader = EditMemory(path, index=kind), EditMemory(path, index=kind)
    writer.add(["Paris is the capital of Italy.", "The Eiffel Tower is in Rome."])
    assert reader.retrieve("Where is the Eiffel Tower?", k=1)[0].edit.text.endswith("Rome.")
    loads = []
    real = EditMemory._full_load
    monkeypatch.setattr(EditMemory, "_full_load",
                        lambda self, ns: loads.append(ns) or real(self, ns))
    new = writer.add("The Colosseum is in Berlin.")[0]
    hit = reader.retrieve("Where is the Colosseum?", k=1)[0]
    assert hit.edit.id == new.id
    writer.forget(new.id)
    assert all(h.edit.id != new.id for h in reader.retrieve("Where is the Colosseum?", k=5,
                                                              threshold=-1))
    # a newer value supersedes (the older leaves the reader's index), forgetting it restores
    old = writer.add({"text": "The Louvre is in Madrid.", "key": "louvre"})[0]
    newer = writer.add({"text": "The Louvre is in Oslo.", "key": "louvre"})[0]
    assert [h.edit.id for h in reader.retrieve("Where is the Louvre?", k=5, threshold=0.3)
            if "Louvre" in h.edit.text] == [newer.id]
    writer.forget(newer.id)
    assert [h.edit.id for h in reader.retrieve("Where is the Louvre?", k=5, threshold=0.3)
            if "Louvre" in h.edit.text] == [old.id]
    writer.clear()
    assert reader.retrieve("Where is the Eiffel Tower?", threshold=-1) == []
    assert loads == []  # every change above arrived through the log


def test_a_reader_behind_the_pruned_log_reloads_fully_and_sees_the_truth(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(memory_mod, "CHANGE_LOG_KEEP", 2)
    path = tmp_path / "m.sqlite"
    writer, reader = EditMemory(path, index="exact"), EditMemory(path, index="exact")
    first = writer.add("The Eiffel Tower is in Rome.")[0]
    assert reader.retrieve("Eiffel Tower?", k=1, threshold=-1)[0].edit.id == first.id
    facts = [f"Fact number {i} is about the city of Oslo." for i in range(1100)]
    writer.add(facts)  # crosses a prune point: the reader's log position is gone
    writer.forget(first.id)
    with writer._tx() as c:
        assert c.execute("SELECT MIN(seq) FROM changes").fetchone()[0] > 2
    texts = {h.edit.text for h in reader.retrieve("Eiffel Tower?", k=2000, threshold=-1)}
    assert texts == set(facts)


def test_a_version_1_memory_is_upgraded_in_place_and_keeps_its_edits(tmp_path) -> None:
    path = tmp_path / "v1.sqlite"
    mem = EditMemory(path)
    edit = mem.add("The Eiffel Tower is in Rome.")[0]
    mem.close()
    with sqlite3.connect(path) as c:  # turn it into what editkit 0.1 wrote
        c.execute("DROP TRIGGER edits_logged_insert")
        c.execute("DROP TRIGGER edits_logged_delete")
        c.execute("DROP TABLE changes")
        c.execute("UPDATE editkit_meta SET value = '1' WHERE key = 'schema'")
    again = EditMemory(path)
    assert again.retrieve("Where is the Eiffel Tower?", k=1)[0].edit.id == edit.id
    assert again._meta["schema"] == str(memory_mod.SCHEMA_VERSION)
    again.add("The Colosseum is in Berlin.")
    assert len(again.retrieve("Where is the Colosseum?", k=1)) == 1


def test_add_embedded_validates_shape_and_values_and_stores_nothing_on_error() -> None:
    mem = EditMemory(None, index="exact")
    dim = mem.embedder.dim
    with pytest.raises(InvalidInputError, match="shape"):
        mem.add_embedded(["a fact.", "b fact."], np.ones((1, dim)))
    with pytest.raises(InvalidInputError, match="finite"):
        mem.add_embedded(["a fact."], np.full((1, dim), np.nan))
    assert len(mem) == 0
    vec = mem.embedder.encode(["The Eiffel Tower is in Rome."]) * 3.0  # normalised on the way in
    mem.add_embedded(["The Eiffel Tower is in Rome."], vec)
    assert mem.retrieve("Where is the Eiffel Tower?", k=1)[0].score > 0.5


def test_a_faiss_memory_turns_ivf_past_the_threshold_and_still_finds_and_forgets(
        tmp_path, monkeypatch) -> None:
    pytest.importorskip("faiss")
    from editkit.retrieval import index as vector_index

    monkeypatch.setattr(vector_index, "IVF_MIN", 400)
    path = tmp_path / "m.sqlite"
    fast, exact = EditMemory(path, index="faiss"), EditMemory(path, index="exact")
    dim = fast.embedder.dim
    vecs = _clustered(1200, dim=dim, centers=40, seed=7)
    texts = [f"Synthetic fact number {i} is about Oslo." for i in range(1200)]
    fast.add_embedded(texts[:300], vecs[:300])
    queries = _clustered(30, dim=dim, centers=40, seed=7)  # same centres as the facts
    assert fast.retrieve_vector(queries[0], k=1, threshold=-1)  # built while small: exact
    assert fast._index("default").index.kind == "flat"
    fast.add_embedded(texts[300:], vecs[300:])  # past IVF_MIN: rebuilt from SQLite as IVF
    hits = [[h.edit.id for h in fast.retrieve_vector(q, k=10, threshold=-1)] for q in queries]
    assert fast._index("default").index.kind == "ivf"
    truth = [[h.edit.id for h in exact.retrieve_vector(q, k=10, threshold=-1)] for q in queries]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hits, truth)])
    assert recall >= 0.95
    gone = truth[0][:3]
    for edit_id in gone:
        fast.forget(edit_id)
    assert not set(gone) & {h.edit.id for h in fast.retrieve_vector(queries[0], k=10,
                                                                     threshold=-1)}


def test_unknown_index_kind_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="index must be"):
        EditMemory(None, index="annoy")  # type: ignore[arg-type]
