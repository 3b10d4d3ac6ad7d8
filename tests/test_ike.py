"""IKE demonstration store on real CounterFact records."""
from __future__ import annotations

import json

import pytest

from editkit import DatasetError
from editkit.datasets import load_counterfact
from editkit.ike import DemoStore, default_train_file, kind_schedule


def test_kind_schedule_has_4_copy_12_update_16_retain():
    kinds = kind_schedule(32)
    assert (kinds.count("copy"), kinds.count("update"), kinds.count("retain")) == (4, 12, 16)
    assert kinds == kind_schedule(32) and kinds != sorted(kinds)


def test_kinds_are_shuffled_per_record_and_reproducibly():
    """As IKE's per-record random.shuffle: another fact, another order; the same fact, the same
    order (in any process: string seeds do not depend on hash randomisation)."""
    facts = [f"Fact number {i} is about Paris" for i in range(20)]
    orders = [tuple(kind_schedule(32, f)) for f in facts]
    assert len(set(orders)) == 20
    assert orders == [tuple(kind_schedule(32, f)) for f in facts]
    # the nearest demonstration (last) is not always a copy, as it was with one fixed order
    assert {o[0] for o in orders} > {"copy"}


def _kinds(store, demos):
    """The kind of each demonstration, read back from its text."""
    by_id = {r.case_id: r for r in store.records}
    out = []
    for cid, blk in zip(demos.case_ids, demos.text.split("\n\n")[:-1], strict=True):
        r, asked = by_id[cid], blk.split("\nPrompt: ", 1)[1]
        out.append("copy" if asked == f"{r.prompt} {r.target_new}" else
                   "update" if asked == f"{r.rephrase_prompt} {r.target_new}" else "retain")
    return out


def test_retrieve_seeds_the_shuffle_with_the_fact(small_demo_file):
    store = DemoStore.from_file(small_demo_file)
    a, b = store.records[5].fact, store.records[9].fact
    assert store.retrieve(a).text == store.retrieve(a).text == store.retrieve(a, seed=a).text
    for f in (a, b):  # most similar last: the schedule, reversed
        assert _kinds(store, store.retrieve(f)) == kind_schedule(32, f)[::-1]
    assert kind_schedule(32, a) != kind_schedule(32, b)


def test_self_copy_variant_adds_exactly_one_demonstration_of_the_fact(small_demo_file):
    store = DemoStore.from_file(small_demo_file)
    fact = store.records[5].fact
    plain, copy = store.retrieve(fact), store.retrieve(fact, self_copy=True)
    assert (plain.count, copy.count) == (32, 33) and copy.case_ids == plain.case_ids
    assert copy.text == plain.text + f"New Fact: {fact}\nPrompt: {fact}\n\n"
    assert len(copy.text.strip().split("\n\n")) == 33


def test_exclusion_by_prompt_drops_every_record_with_that_question(small_demo_file):
    store = DemoStore.from_file(small_demo_file)
    rec = store.records[5]
    demos = store.retrieve(rec.fact, exclude_prompts=[rec.prompt])
    assert rec.case_id not in demos.case_ids and len(demos.case_ids) == 32


def test_demos_are_the_most_similar_records_most_similar_last(small_demo_file):
    store = DemoStore.from_file(small_demo_file)
    rec = store.records[5]
    demos = store.retrieve(rec.fact, k=32)
    assert len(demos.case_ids) == 32
    assert demos.case_ids[-1] == rec.case_id  # its own key is the nearest
    blocks = demos.text.strip().split("\n\n")
    assert len(blocks) == 32 and all(b.startswith("New Fact: ") for b in blocks)
    assert blocks[-1].startswith(f"New Fact: {rec.prompt} {rec.target_new}\nPrompt: ")


def test_the_record_under_test_is_never_its_own_demonstration(small_demo_file):
    store = DemoStore.from_file(small_demo_file)
    rec = store.records[5]
    demos = store.retrieve(rec.fact, exclude=[rec.case_id])
    assert rec.case_id not in demos.case_ids and len(demos.case_ids) == 32


def test_key_embeddings_are_cached_on_disk(small_demo_file, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    DemoStore.from_file(small_demo_file)
    files = list((tmp_path / "ike").glob("keys-*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    DemoStore.from_file(small_demo_file)
    assert files[0].stat().st_mtime_ns == stamp


def test_vendored_training_file_is_the_published_split():
    records = load_counterfact(default_train_file())
    assert len(records) == 9784 and records[0].case_id == 2


def test_bad_dataset_file_names_the_field(tmp_path):
    raw = json.loads(default_train_file().read_text())[:3]
    del raw[1]["rephrase_prompt"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match="record 1 .*rephrase_prompt"):
        load_counterfact(path)
    path.write_text("{]")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_counterfact(path)
