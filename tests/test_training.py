"""P-Token training: the KL loss, the teacher cache and its key, a small real run, round-trip
and resume. Plumbing (cache, loss terms, teacher choice) runs on the tiny random model; the
training run and the effect of training run on the real default model."""
from __future__ import annotations

import json
import random

import pytest
import torch
from pydantic import ValidationError

from editkit.datasets import load_counterfact
from editkit.errors import InvalidInputError
from editkit.ike import default_train_file
from editkit.ptokens import PTokens
from editkit.train import TrainConfig, Trainer
from editkit.train.config import DEMO_FIELDS, PAIR_FIELDS, STUDENT_FIELDS, TEACHER_FIELDS
from editkit.train.objective import kl_topk
from editkit.train.pairs import build_pairs, load_training_records
from editkit.train.teacher import TeacherCache, teacher_cache_key, topk_with_rest


def test_topk_kl_is_exact_when_k_covers_the_vocabulary_and_a_bound_otherwise():
    torch.manual_seed(0)
    t = torch.log_softmax(torch.randn(4, 50) * 3, -1)
    s = torch.log_softmax(torch.randn(4, 50), -1)
    exact = (t.exp() * (t - s)).sum(-1)
    v, ix, rest = topk_with_rest(t, 50)
    assert torch.allclose(kl_topk(v, ix, rest, s), exact, atol=1e-4)
    v, ix, rest = topk_with_rest(t, 5)
    approx = kl_topk(v, ix, rest, s)
    assert (approx <= exact + 1e-5).all() and (approx >= -1e-6).all()
    assert torch.allclose(kl_topk(v, ix, rest, t), torch.zeros(4), atol=1e-5)


def test_five_pair_kinds_per_record_with_foreign_distractors():
    recs = load_counterfact(default_train_file())[:3]
    pool = load_counterfact(default_train_file())[:50]
    pairs = build_pairs(recs, TrainConfig(max_distractors=5), pool, random.Random(0))
    assert [p.kind for p in pairs[:5]] == ["edit", "paraphrase", "neighbour", "distractor",
                                           "empty"]
    for p in pairs:
        if p.kind == "distractor":
            assert 1 <= len(p.distractors) <= 5 and recs[p.record].fact not in p.distractors
        assert (p.fact is None) == (p.kind == "empty")


@pytest.fixture
def small_cfg(small_demo_file):
    return TrainConfig(m=2, n_train=3, n_val=2, epochs=2, topk=32, batch_size=2, lr=1e-2,
                       demos=small_demo_file)


def test_teacher_is_computed_once_and_read_back_from_disk(tiny_model, small_cfg, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    tr = Trainer(tiny_model.model, tiny_model.tokenizer, tiny_model.name, small_cfg)
    first = tr.teacher(tr.val_pairs)
    [path] = list((tmp_path / "teacher").glob("*.safetensors"))
    stamp = path.stat().st_mtime_ns
    again = tr.teacher(tr.val_pairs)
    assert path.stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(first.values, again.values))
    assert TeacherCache.load(path, len(tr.val_pairs) + 1) is None  # wrong size → recompute


def test_a_teacher_read_back_from_disk_sits_on_the_models_device(tiny_model, small_cfg, tmp_path,
                                                                 monkeypatch):
    # On a GPU, a cache read from disk came back on the CPU and the loss's gather failed
    # ("index is on cpu"); every run after the first crashed. `meta` stands in for the GPU here.
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    tr = Trainer(tiny_model.model, tiny_model.tokenizer, tiny_model.name, small_cfg)
    tr.teacher(tr.val_pairs)  # computed and written
    tr.device = torch.device("meta")
    again = tr.teacher(tr.val_pairs)  # read back
    tensors = [*again.values, *again.indices, *again.rest, *again.margins]
    assert tensors and all(t.device.type == "meta" for t in tensors)


def test_small_run_lowers_val_kl_and_round_trips_the_artifact(default_model, small_cfg,
                                                              tmp_path):
    rows = []
    tr = Trainer(default_model.model, default_model.tokenizer, default_model.name, small_cfg,
                 log=rows.append)
    pt = tr.run(tmp_path / "pt")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert min(r["val_kl"] for r in rows[1:]) < rows[0]["val_kl"]
    cfg = json.loads((tmp_path / "pt" / "ptokens_config.json").read_text())
    assert cfg["trained"] and cfg["training"]["train_pairs"] == 15
    back = PTokens.from_pretrained(tmp_path / "pt", default_model.model,
                                   default_model.tokenizer, name=default_model.name)
    assert torch.equal(back.layer.weight, pt.layer.weight)
    assert all(not p.requires_grad for p in default_model.model.parameters())


def test_training_can_start_from_an_existing_artifacts_rows(tiny_model, small_cfg, tmp_path,
                                                            monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    args = (tiny_model.model, tiny_model.tokenizer, tiny_model.name)
    start = PTokens.create(*args[:2], name=tiny_model.name, m=2, init="random", seed=5)
    start.save_pretrained(tmp_path / "start")
    cfg = small_cfg.model_copy(update={"init_from": str(tmp_path / "start"), "epochs": 1,
                                       "lr": 1e-9})
    rows: list = []
    pt = Trainer(*args, cfg, log=rows.append).run(tmp_path / "tuned")
    # validation 0 measures the starting rows; a 1e-9 step barely moves them
    assert torch.allclose(pt.layer.weight, start.layer.weight, atol=1e-6)
    fresh = PTokens.create(*args[:2], name=tiny_model.name, m=2, init="text")
    assert not torch.allclose(pt.layer.weight, fresh.layer.weight, atol=1e-3)
    record = json.loads((tmp_path / "tuned" / "ptokens_config.json").read_text())["training"]
    assert record["init_from"] == str(tmp_path / "start")
    with pytest.raises(InvalidInputError, match="m=2"):
        Trainer(*args, cfg.model_copy(update={"m": 3})).run(tmp_path / "bad")


@pytest.mark.slow  # four small training runs: runs in CI's slow pass (`pytest -m slow`)
def test_resume_after_interruption_matches_an_uninterrupted_run(default_model, small_cfg,
                                                                tmp_path):
    args = (default_model.model, default_model.tokenizer, default_model.name)
    full = Trainer(*args, small_cfg).run(tmp_path / "full")
    one = small_cfg.model_copy(update={"epochs": 1})
    Trainer(*args, one).run(tmp_path / "cut")  # "killed" after epoch 1's checkpoint
    Trainer(*args, small_cfg).run(tmp_path / "cut", resume=True,
                                  stop_after_steps=1)  # resumed, then dies mid-epoch 2
    resumed = Trainer(*args, small_cfg).run(tmp_path / "cut", resume=True)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert state["epoch"] == 2
    last = PTokens.from_pretrained(tmp_path / "cut" / "checkpoint", *args[:2], name=args[2])
    full_last = PTokens.from_pretrained(tmp_path / "full" / "checkpoint", *args[:2],
                                        name=args[2])
    assert torch.allclose(last.layer.weight, full_last.layer.weight, atol=1e-5)
    assert torch.allclose(resumed.layer.weight, full.layer.weight, atol=1e-5)


def test_cross_entropy_term_adds_the_gold_answer_nll_only_to_its_kinds(tiny_model, small_cfg,
                                                                       tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    args = (tiny_model.model, tiny_model.tokenizer, tiny_model.name)
    plain = Trainer(*args, small_cfg)
    teacher = plain.teacher(plain.val_pairs)
    pt = PTokens.create(*args[:2], name=args[2], m=2)
    with_ce = Trainer(*args, small_cfg.model_copy(update={"ce_weight": 0.5,
                                                           "ce_kinds": ("edit",)}))
    kinds = [p.kind for p in plain.val_pairs]
    edit, neighbour = kinds.index("edit"), kinds.index("neighbour")
    with torch.no_grad():
        base_e, _ = plain.student_loss(pt, plain.val_pairs, teacher, [edit])
        ce_e, _ = with_ce.student_loss(pt, plain.val_pairs, teacher, [edit])
        base_n, _ = plain.student_loss(pt, plain.val_pairs, teacher, [neighbour])
        ce_n, _ = with_ce.student_loss(pt, plain.val_pairs, teacher, [neighbour])
        # the gold answer's mean NLL under the student, computed independently
        from editkit.layouts import Mode, PromptBuilder
        from editkit.runtime.scoring import score_packed

        p = plain.val_pairs[edit]
        lay = PromptBuilder(tiny_model.tokenizer, pt)
        ctx, _ = lay.context(Mode.PTOKENS, p.fact, [])
        item = plain._items(lay, Mode.PTOKENS, [p])
        [[gold]] = score_packed(tiny_model.model, pt, lay.bos + ctx, item)
    assert float(ce_e - base_e) == pytest.approx(-0.5 * gold.mean_logprob, rel=1e-4)
    assert float(ce_n) == pytest.approx(float(base_n), abs=1e-6)


def test_clean_distractor_teacher_ignores_the_distractors_and_ike_excludes_the_record(
        tiny_model, small_cfg, tmp_path, monkeypatch):
    from editkit.ike import DemoStore

    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    excluded = []
    real = DemoStore.retrieve

    def spy(self, fact, *a, exclude=(), **kw):
        excluded.append(list(exclude))
        return real(self, fact, *a, exclude=exclude, **kw)

    monkeypatch.setattr(DemoStore, "retrieve", spy)
    tr = Trainer(tiny_model.model, tiny_model.tokenizer, tiny_model.name, small_cfg)
    teacher = tr.teacher(tr.val_pairs)
    assert sorted(e[0] for e in excluded) == sorted({p.case_id for p in tr.val_pairs})
    for i, p in enumerate(tr.val_pairs):
        if p.kind != "distractor":
            continue
        [twin] = [j for j, q in enumerate(tr.val_pairs) if q.record == p.record
                  and q.kind in ("edit", "paraphrase", "neighbour") and q.question == p.question]
        # same branch content in the same packed pass; stored in fp16 (1 ulp ≈ 0.004 here)
        assert torch.allclose(teacher.values[i], teacher.values[twin], atol=1e-2)
        assert torch.equal(teacher.indices[i][:, :3], teacher.indices[twin][:, :3])


def test_validation_reports_rome_style_scores_each_epoch(default_model, small_cfg, tmp_path):
    rows = []
    tr = Trainer(default_model.model, default_model.tokenizer, default_model.name,
                 small_cfg.model_copy(update={"epochs": 1}), log=rows.append)
    tr.run(tmp_path / "pt")
    for row in rows:
        assert {"val_ES", "val_PS", "val_NS", "val_S"} <= row.keys()
        assert all(0 <= row[f"val_{k}"] <= 100 for k in ("ES", "PS", "NS", "S"))
    cfg = json.loads((tmp_path / "pt" / "ptokens_config.json").read_text())
    assert set(cfg["training"]["best_val_scores"]) == {"ES", "PS", "NS", "S"}


def test_two_process_data_parallel_training_matches_one_process(tiny_model_dir, small_demo_file,
                                                                tmp_path):
    """`torchrun --nproc_per_node 2 -m editkit.cli train` (gloo on CPU) = one process."""
    import os
    import subprocess
    import sys

    cfg = {"m": 2, "n_train": 6, "n_val": 2, "epochs": 2, "topk": 32, "batch_size": 4,
           "lr": 1e-2, "demos": str(small_demo_file), "neighbour_teacher": "unedited"}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "EDITKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    common = ["-m", "editkit.cli", "train", "--model", str(tiny_model_dir), "--config",
              str(tmp_path / "cfg.json")]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", *common, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "ptokens.safetensors"))
    b = load_file(str(tmp_path / "two" / "ptokens.safetensors"))
    [key] = a
    info = json.loads((tmp_path / "two" / "ptokens_config.json").read_text())["training"]
    assert info["best_epoch"] >= 1  # rows that took optimiser steps, not the init
    assert torch.allclose(a[key], b[key], atol=1e-4)
    shards = list((tmp_path / "cache" / "teacher").glob("*.safetensors"))
    assert len(shards) >= 4  # one: train + val; two: two train shards (+ the shared val)


def test_teacher_choice_per_question_kind_including_questions_inside_distractor_pairs():
    from types import SimpleNamespace

    from editkit.layouts import Mode
    from editkit.train.pairs import Pair

    def mode(cfg, **kw):
        p = Pair(record=0, fact=None if kw.get("kind") == "empty" else "F.", question="q",
                 answer="a", **kw)
        return Trainer._teacher_mode(SimpleNamespace(cfg=cfg), p)

    paper = TrainConfig()
    mixed = TrainConfig(edit_teacher="prompt", neighbour_teacher="unedited")
    assert [mode(paper, kind=k) for k in ("edit", "paraphrase", "neighbour", "empty")] == [
        Mode.IKE, Mode.IKE, Mode.IKE, Mode.NONE]
    assert [mode(mixed, kind=k) for k in ("edit", "paraphrase", "neighbour", "empty")] == [
        Mode.PROMPT, Mode.PROMPT, Mode.NONE, Mode.NONE]
    assert mode(mixed, kind="distractor", asks="neighbour") is Mode.NONE
    assert mode(mixed, kind="distractor", asks="paraphrase") is Mode.PROMPT
    assert mode(paper, kind="distractor", asks="neighbour") is Mode.IKE


def test_shipped_trained_ptokens_keep_neighbours_better_than_untrained_ones(default_model,
                                                                            default_ptokens):
    """The measured effect of training on real ROME records (m=3, first 20: NS 32.5 -> 42.5)."""
    from conftest import data_file
    from editkit import EditableLM, EditMemory, evaluate
    from editkit.building import shipped_ptokens_dir

    assert default_ptokens.m == 3 and not default_ptokens.config.trained
    shipped = PTokens.from_pretrained(shipped_ptokens_dir(default_model.name, 3),
                                      default_model.model, default_model.tokenizer,
                                      name=default_model.name)
    data = data_file("counterfact", "counterfact-rome-test.json")
    ns = {}
    for label, pt in (("untrained", default_ptokens), ("trained", shipped)):
        lm = EditableLM(default_model, pt, EditMemory(None))
        report = evaluate(lm, data=data, mode="ptokens", limit=20)
        ns[label] = report.metrics["NS"].value
        assert report.metrics["ES"].value >= 90  # training kept efficacy
    assert ns["trained"] >= ns["untrained"] + 5, ns


def _pairs(cfg: TrainConfig) -> list:
    recs = load_counterfact(default_train_file())[:4]
    return build_pairs(recs, cfg, recs, random.Random(0))


def test_every_train_config_field_says_how_it_reaches_the_teacher_cache():
    groups = [TEACHER_FIELDS, PAIR_FIELDS, DEMO_FIELDS, STUDENT_FIELDS]
    assert set().union(*groups) == set(TrainConfig.model_fields)  # a new field must be placed
    assert sum(len(g) for g in groups) == len(TrainConfig.model_fields)  # and placed once


def test_teacher_cache_key_follows_teacher_fields_demos_and_layout_but_not_the_student():
    cfg = TrainConfig(max_distractors=2)
    pairs = _pairs(cfg)
    args = {"base_model": "fp", "demos_digest": "d1", "embedder": "e", "layout_version": 1}
    key = teacher_cache_key(cfg, pairs, **args)
    assert teacher_cache_key(cfg, pairs, **args) == key  # deterministic
    for update in ({"lr": 0.5}, {"epochs": 1}, {"m": 2}, {"weights": {"neighbour": 4.0}},
                   {"ce_weight": 1.0}, {"batch_size": 1}, {"init": "random"}):
        assert set(update) <= STUDENT_FIELDS
        assert teacher_cache_key(cfg.model_copy(update=update), pairs, **args) == key, update
    for update in ({"edit_teacher": "prompt"}, {"neighbour_teacher": "unedited"},
                   {"distractor_teacher": "ike"}, {"topk": 8}):
        assert set(update) <= TEACHER_FIELDS
        assert teacher_cache_key(cfg.model_copy(update=update), pairs, **args) != key, update
    for name, value in (("demos_digest", "d2"), ("layout_version", 2), ("embedder", "other"),
                        ("base_model", "fp2")):
        assert teacher_cache_key(cfg, pairs, **{**args, name: value}) != key, name
    assert teacher_cache_key(cfg, pairs[:-1], **args) != key


def test_a_changed_demonstration_file_gets_a_new_teacher_cache(tiny_model, small_demo_file,
                                                               tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    other = tmp_path / "demos.json"
    records = json.loads(small_demo_file.read_text())
    other.write_text(json.dumps(records[:-1]))  # same path semantics, other content
    args = (tiny_model.model, tiny_model.tokenizer, tiny_model.name)
    cfg = TrainConfig(m=2, n_train=2, n_val=1, demos=small_demo_file)
    a = Trainer(*args, cfg)
    b = Trainer(*args, cfg.model_copy(update={"demos": other}))
    assert a._cache_path(a.val_pairs) != b._cache_path(b.val_pairs)
    same = Trainer(*args, cfg.model_copy(update={"lr": 0.5, "epochs": 1}))
    assert same._cache_path(same.val_pairs) == a._cache_path(a.val_pairs)


def test_a_misspelt_pair_kind_in_the_weights_is_an_error_not_ignored():
    with pytest.raises(ValidationError, match="neighbor"):
        TrainConfig(weights={"neighbor": 4.0})
    assert TrainConfig(weights={"neighbour": 4.0}).weights == {"neighbour": 4.0}


def test_more_records_than_the_data_file_holds_is_a_typed_error_that_says_what_to_do():
    n = len(load_training_records(TrainConfig(n_train=1, n_val=1)))  # one record per fact
    assert n <= len(load_counterfact(default_train_file()))
    with pytest.raises(InvalidInputError, match=f"hold\\(s\\) {n} records.*--n-train"):
        load_training_records(TrainConfig(n_train=n, n_val=1))
    assert len(load_training_records(TrainConfig(n_train=n - 1, n_val=1))) == n


def test_the_default_m_is_the_one_from_pretrained_loads():
    from editkit.editable import EditableLM
    from editkit.ptokens import DEFAULT_M

    assert TrainConfig().m == DEFAULT_M
    assert EditableLM.from_pretrained.__kwdefaults__["m"] == DEFAULT_M


def test_val_scores_are_the_eval_rome_scores_of_the_same_records(tiny_model_dir, small_cfg):
    """`Trainer.val_scores` = ES/PS/NS/S computed from the SDK's own `score()` of each probe
    (P(new) vs P(true)), aggregated as `editkit eval` does (the ROME task)."""
    from editkit import EditableLM, EditMemory, metrics
    from editkit.eval.tasks.counterfact_rome import CounterFactRomeTask
    from editkit.loading import load_model

    loaded = load_model(tiny_model_dir, device="cpu")
    pt = PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, m=2)
    tr = Trainer(loaded.model, loaded.tokenizer, loaded.name, small_cfg)
    got = tr.val_scores(pt)
    lm = EditableLM(loaded, pt, EditMemory(None), mode="ptokens")
    rows = []
    for r in tr.val_records:
        row = {}
        for p in CounterFactRomeTask.probes_from_easyedit(r):
            s = lm.score(p.question, p.targets, fact=r.fact, chat=False).scores  # as trained
            row[{"rewrite": "es", "paraphrase": "ps", "neighborhood": "ns"}[p.kind]] = (
                metrics.rome_success(-s[0].mean_logprob, -s[1].mean_logprob,
                                     neighbour=p.kind == "neighborhood"))
        rows.append({**row, "em": 0.0, "pm": 0.0, "nm": 0.0})
    want = metrics.rome_scores(rows)
    assert got == pytest.approx({k: want[k].value for k in ("ES", "PS", "NS", "S")}, abs=1e-9)


# ---- data mixes, extra pair kinds, margin term, mid-epoch validation ----------------------------

@pytest.fixture
def mixed_files(tmp_path):
    """12 real CounterFact train records and 8 real zsRE train records, as two files; the zsRE
    file repeats one subject (a second edit of the same fact)."""
    from editkit.ike import default_train_file as cf_file

    cf = json.loads(cf_file().read_text())[:12]
    zs = json.loads((cf_file().parent / "zsre-train.json").read_text())[:7]
    zs.append({**zs[0], "alt": "something else"})
    (tmp_path / "cf.json").write_text(json.dumps(cf))
    (tmp_path / "zs.json").write_text(json.dumps(zs))
    return tmp_path / "cf.json", tmp_path / "zs.json"


def test_training_files_take_turns_one_edit_per_fact_and_zsre_becomes_counterfact_shaped(
        mixed_files):
    cf, zs = mixed_files
    cfg = TrainConfig(data=[cf, zs], n_train=10, n_val=4)
    records = load_training_records(cfg)
    zs_subjects = {r["subject"] for r in json.loads(zs.read_text())}
    from_zsre = [r.subject in zs_subjects for r in records]
    assert from_zsre[:14] == [False, True] * 7  # the files take turns ...
    assert len(records) == 12 + 7  # ... and the second edit of one zsRE fact is left out
    zsre = next(r for r in records if r.subject in zs_subjects)
    raw = next(r for r in json.loads(zs.read_text()) if r["subject"] == zsre.subject)
    assert (zsre.prompt, zsre.rephrase_prompt, zsre.target_new, zsre.ground_truth) == (
        raw["src"], raw["rephrase"], raw["alt"], raw["answers"][0])
    assert TrainConfig(data=cf).data == [cf]  # one file is a list of one


def test_validation_records_do_not_change_with_the_number_of_training_records(tiny_model,
                                                                              mixed_files):
    args = (tiny_model.model, tiny_model.tokenizer, tiny_model.name)
    small = Trainer(*args, TrainConfig(data=list(mixed_files), n_train=2, n_val=4, m=2))
    large = Trainer(*args, TrainConfig(data=list(mixed_files), n_train=12, n_val=4, m=2))
    assert small.val_pairs == large.val_pairs
    assert large.train_records[:2] == small.train_records
    assert not {r.edit_key for r in large.val_records} & {r.edit_key
                                                          for r in large.train_records}


def test_a_file_in_another_format_is_refused_for_training(tmp_path):
    from conftest import data_file

    with pytest.raises(InvalidInputError, match="CounterFact or zsRE"):
        load_training_records(TrainConfig(
            data=data_file("counterfact", "counterfact-rome-test.json"), n_train=1,
            n_val=1))


def test_hard_neighbours_share_a_subject_word_and_absent_pairs_hold_only_other_facts():
    from editkit.train.pairs import _subject_words

    pool = load_counterfact(default_train_file())[:400]
    cfg = TrainConfig(hard_neighbours=True, absent_pairs=True, max_distractors=3)
    pairs = build_pairs(pool[:40], cfg, pool, random.Random(0))
    by_question = {r.prompt: r for r in pool}
    hard = [p for p in pairs if p.kind == "neighbour" and p.question in by_question
            and by_question[p.question].subject != pool[p.record].subject]
    assert len(hard) >= 5  # real subjects do share words ("Toyota ...", "... of France")
    for p in hard:
        other, mine = by_question[p.question], pool[p.record]
        assert _subject_words(other.subject) & _subject_words(mine.subject)
        assert p.answer == other.ground_truth and p.keeps_old_answer
    absent = [p for p in pairs if p.kind == "absent"]
    assert len(absent) == 40
    for p in absent:
        r = pool[p.record]
        assert r.fact not in [p.fact, *p.distractors] and 1 <= 1 + len(p.distractors) <= 3
        assert (p.question, p.answer, p.contrast) == (r.prompt, r.ground_truth, r.target_new)
    assert len(build_pairs(pool[:40], TrainConfig(), pool, random.Random(0))) == 5 * 40


def test_older_value_pairs_put_the_slots_older_value_among_distractors_and_answer_the_newer():
    pool = load_counterfact(default_train_file())[:400]
    cfg = TrainConfig(older_value_pairs=True, max_distractors=3)
    pairs = build_pairs(pool[:40], cfg, pool, random.Random(0))
    stale = [p for p in pairs if p.kind == "distractor"
             and f"{pool[p.record].prompt} {pool[p.record].ground_truth}" in p.distractors]
    assert len(stale) == 40 and len(pairs) == 6 * 40
    for p in stale:
        r = pool[p.record]
        assert p.fact == r.fact and 1 <= len(p.distractors) <= 3
        assert p.asks in ("edit", "paraphrase") and not p.keeps_old_answer
        assert (p.answer, p.contrast) == (r.target_new, r.ground_truth)


def test_margin_hinge_asks_edits_for_the_new_object_and_others_for_the_unedited_margin():
    from editkit.train.objective import margin_loss

    m = torch.tensor
    assert float(margin_loss(m(0.2), 1.0, m(float("nan")), keeps_old=False)) == pytest.approx(0.8)
    assert float(margin_loss(m(1.5), 1.0, m(float("nan")), keeps_old=False)) == 0.0
    # keep the unedited margin, capped at the margin ...
    assert float(margin_loss(m(0.5), 1.0, m(3.0), keeps_old=True)) == pytest.approx(0.5)
    # ... and where the unedited model preferred the edit's object, ask no more than it had
    assert float(margin_loss(m(-0.5), 1.0, m(-1.0), keeps_old=True)) == 0.0
    assert float(margin_loss(m(-1.5), 1.0, m(-1.0), keeps_old=True)) == pytest.approx(0.5)


def test_margin_term_uses_the_cached_unedited_margin_and_only_its_kinds(tiny_model, small_cfg,
                                                                        tmp_path, monkeypatch):
    from editkit.layouts import Mode, PromptBuilder
    from editkit.runtime.scoring import ScoreItem, score_packed
    from editkit.train.objective import margin_loss

    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    args = (tiny_model.model, tiny_model.tokenizer, tiny_model.name)
    plain = Trainer(*args, small_cfg)
    teacher = plain.teacher(plain.val_pairs)
    for p, margin in zip(plain.val_pairs, teacher.margins):  # cached for keep-old pairs only
        assert bool(torch.isfinite(margin)) == (p.keeps_old_answer and p.contrast is not None)
    i = next(j for j, p in enumerate(plain.val_pairs) if p.kind == "neighbour")
    p = plain.val_pairs[i]
    lay = PromptBuilder(tiny_model.tokenizer)
    q = lay.text_ids(lay.question_text(Mode.NONE, p.question, False))
    [[a, c]] = score_packed(tiny_model.model, None, lay.bos, [ScoreItem(
        question=q, targets=[lay.target_ids(p.answer), lay.target_ids(p.contrast)])])
    assert float(teacher.margins[i]) == pytest.approx(a.mean_logprob - c.mean_logprob, abs=1e-4)

    pt = PTokens.create(*args[:2], name=args[2], m=2)
    hinge = Trainer(*args, small_cfg.model_copy(update={"margin_weight": 2.0,
                                                         "margin_kinds": ("neighbour",)}))
    edit = next(j for j, q in enumerate(plain.val_pairs) if q.kind == "edit")
    with torch.no_grad():
        base, _ = plain.student_loss(pt, plain.val_pairs, teacher, [i])
        with_hinge, _ = hinge.student_loss(pt, plain.val_pairs, teacher, [i])
        assert float(hinge.student_loss(pt, plain.val_pairs, teacher, [edit])[0]) == \
            pytest.approx(float(plain.student_loss(pt, plain.val_pairs, teacher, [edit])[0]))
        slay = PromptBuilder(tiny_model.tokenizer, pt)
        ctx, _ = slay.context(Mode.PTOKENS, p.fact, [])
        [[sa, sc]] = score_packed(tiny_model.model, pt, slay.bos + ctx, [ScoreItem(
            question=slay.text_ids(slay.question_text(Mode.PTOKENS, p.question, True)),
            targets=[slay.target_ids(p.answer), slay.target_ids(p.contrast)])])
    want = margin_loss(torch.tensor(sa.mean_logprob - sc.mean_logprob), small_cfg.margin,
                       teacher.margins[i], keeps_old=True)
    assert float(with_hinge - base) == pytest.approx(2.0 * float(want), abs=1e-4)


def test_validation_every_n_records_checkpoints_mid_epoch_and_resume_continues_there(
        tiny_model, small_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    args = (tiny_model.model, tiny_model.tokenizer, tiny_model.name)
    cfg = small_cfg.model_copy(update={"n_train": 4, "batch_size": 1, "eval_every": 2,
                                       "epochs": 1, "patience": 10})
    rows = []
    full = Trainer(*args, cfg, log=rows.append).run(tmp_path / "full")
    assert [(r["epoch"], r["records_seen"]) for r in rows] == [(0, 0), (1, 2), (1, 4)]
    Trainer(*args, cfg).run(tmp_path / "cut", stop_after_steps=3)  # dies after step 3
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch"], state["records_seen"]) == (0, 2, 2)
    resumed = Trainer(*args, cfg).run(tmp_path / "cut", resume=True)
    last = PTokens.from_pretrained(tmp_path / "cut" / "checkpoint", *args[:2], name=args[2])
    full_last = PTokens.from_pretrained(tmp_path / "full" / "checkpoint", *args[:2],
                                        name=args[2])
    assert torch.allclose(last.layer.weight, full_last.layer.weight, atol=1e-5)
    assert torch.allclose(resumed.layer.weight, full.layer.weight, atol=1e-5)


@pytest.mark.parametrize("select_by, kept", [("val_s", 2), ("val_kl", 4), ("val_wild", 4)])
def test_the_saved_tokens_are_the_best_validation_by_the_chosen_measure(
        tiny_model, small_cfg, tmp_path, monkeypatch, select_by, kept):
    """Scripted validations: S peaks after 2 records while the KL keeps falling and the
    generated answers (val_wild) get better late."""
    from editkit.train.wild_val import WildValidation

    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    s_values, kl_values = iter([50.0, 80.0, 60.0]), iter([3.0, 2.0, 1.0])
    wild_values = iter([10.0, 20.0, 90.0])
    monkeypatch.setattr(Trainer, "val_scores", lambda self, pt: {
        "ES": 0.0, "PS": 0.0, "NS": 0.0, "S": next(s_values)})
    monkeypatch.setattr(Trainer, "validate", lambda self, pt, t: (next(kl_values), {}))
    monkeypatch.setattr(WildValidation, "scores", lambda self, pt: {"wild": next(wild_values)})
    cfg = small_cfg.model_copy(update={"n_train": 4, "batch_size": 1, "eval_every": 2,
                                       "epochs": 1, "select_by": select_by, "patience": 10,
                                       "chat_questions": select_by == "val_wild"})
    Trainer(tiny_model.model, tiny_model.tokenizer, tiny_model.name, cfg).run(tmp_path / "pt")
    info = json.loads((tmp_path / "pt" / "ptokens_config.json").read_text())["training"]
    assert (info["best_records_seen"], info["selected_by"]) == (kept, select_by)
    assert info["best_val_scores"]["S"] == {2: 80.0, 4: 60.0}[kept]
    assert ("wild" in info["best_val_scores"]) == (select_by == "val_wild")


def test_val_wild_judges_the_students_generated_answers_to_the_validation_questions(
        default_model, shipped_ptokens, mixed_files, tmp_path, monkeypatch):
    """select_by="val_wild" on the real default model and real records: the validation's chat
    questions are answered freely under the P-Token layout (the record's fact given) and judged
    as the wild task judges (the new object contained; a neighbour's answer unchanged)."""
    from editkit.eval.matching import matches, normalize
    from editkit.layouts import Mode
    from editkit.train.wild_val import generate, wild_scores

    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    with pytest.raises(ValidationError, match="chat_questions=True"):
        TrainConfig(data=list(mixed_files), select_by="val_wild")
    args = (default_model.model, default_model.tokenizer, default_model.name)
    cfg = TrainConfig(data=list(mixed_files), n_train=2, n_val=4, chat_questions=True,
                      answers="generated", answer_tokens=12, select_by="val_wild")
    tr = Trainer(*args, cfg)
    gold = {(p.kind, p.question, p.fact): p.answer
            for p in Trainer(*args, cfg.model_copy(update={"answers": "gold"})).val_pairs}
    wild = tr.wild_val.pairs
    assert {p.kind for p in wild} == {"edit", "paraphrase", "neighbour"}
    assert all(gold[(p.kind, p.question, p.fact)] == p.answer for p in wild)
    assert all(p.chat for p in wild if p.kind != "neighbour")
    assert len({p.chat for p in wild if p.kind == "neighbour"}) == 1  # all inline here
    pt = shipped_ptokens
    scores = tr.wild_val.scores(pt)
    answers = generate(*args[:2], pt, [(Mode.PTOKENS, p.question, p.fact, p.chat)
                                       for p in wild], 12)
    unedited = generate(*args[:2], None, [(Mode.NONE, p.question, None, p.chat) for p in wild],
                        12)
    assert all("\n" not in a.strip() for p, a in zip(wild, answers) if not p.chat)
    assert scores == wild_scores(wild, answers, {p.question: u for p, u in zip(wild, unedited)})
    edits = [matches(a, [p.answer]) for p, a in zip(wild, answers) if p.kind == "edit"]
    assert scores["wild_edit"] == pytest.approx(100 * sum(edits) / len(edits))
    kept = [normalize(a) == normalize(u) for p, a, u in zip(wild, answers, unedited)
            if p.kind == "neighbour"]
    assert scores["wild_unchanged"] == pytest.approx(100 * sum(kept) / len(kept))


def test_a_checkpoint_of_an_older_editkit_is_refused_with_what_to_do(tiny_model, small_cfg,
                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    args = (tiny_model.model, tiny_model.tokenizer, tiny_model.name)
    cfg = small_cfg.model_copy(update={"n_train": 2, "epochs": 1})
    Trainer(*args, cfg).run(tmp_path / "pt")
    path = tmp_path / "pt" / "checkpoint" / "trainer_state.json"
    old = json.loads(path.read_text())
    old.pop("bad_evals")
    path.write_text(json.dumps({**old, "best": 1.5, "bad_epochs": 0}))
    with pytest.raises(InvalidInputError, match="older editkit.*without --resume"):
        Trainer(*args, cfg).run(tmp_path / "pt", resume=True)


def test_chat_question_pairs_score_exactly_the_prompt_ask_sends_in_the_chat_template(
        default_model, shipped_ptokens, mixed_files):
    # The shipped tokens were trained inline and lose half their effect inside the chat template
    # that `ask` now uses for questions: `chat_questions` trains on the product's own prompt.
    from editkit.layouts import Mode, PromptBuilder, reads_as_question

    args = (default_model.model, default_model.tokenizer, default_model.name)
    cfg = TrainConfig(data=list(mixed_files), n_train=4, n_val=2, m=shipped_ptokens.m,
                      chat_questions=True, hard_neighbours=True, absent_pairs=True)
    tr = Trainer(*args, cfg)
    pairs = tr.train_pairs
    assert {p.chat for p in pairs} == {True, False}  # zsRE questions in chat, clozes inline
    assert all(p.chat == (reads_as_question(p.question) and bool(p.answer.strip()))
               for p in pairs)
    product = PromptBuilder(default_model.tokenizer, shipped_ptokens, chat=True)
    inline = PromptBuilder(default_model.tokenizer, shipped_ptokens, chat=False)
    checked = 0
    for prefix, items, chosen in tr.student_trees(shipped_ptokens, pairs, range(len(pairs))):
        for item, i in zip(items, chosen):
            p = pairs[i]
            lay = product if p.chat else inline
            sent = lay.build(Mode.PTOKENS, p.question, "" if p.fact is None else p.fact,
                             p.distractors)
            assert prefix + item.question == sent.ids
            assert item.targets[0] == lay.target_ids(p.answer, chat=p.chat)
            checked += p.chat
    assert checked >= 4
    plain = Trainer(*args, cfg.model_copy(update={"chat_questions": False}))
    assert not any(p.chat for p in plain.train_pairs)


def test_generated_targets_are_the_replies_a_user_reads_and_are_cached(
        default_model, mixed_files, tmp_path, monkeypatch):
    """answers="generated": a chat pair's target becomes the teacher's own greedy reply (the
    plain-prompt teacher's, kept only where it contains the new object; the unedited model's
    where the answer must stay), generated once and read from the cache after."""
    from editkit.eval.matching import matches
    from editkit.layouts import Mode, PromptBuilder
    from editkit.train import targets

    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path))
    args = (default_model.model, default_model.tokenizer, default_model.name)
    cfg = TrainConfig(data=list(mixed_files), n_train=3, n_val=1, chat_questions=True,
                      answers="generated", answer_tokens=24, margin_weight=1.0)
    tr = Trainer(*args, cfg)
    gold = Trainer(*args, cfg.model_copy(update={"answers": "gold"}))
    assert len(tr.train_pairs) == len(gold.train_pairs)
    changed = 0
    lay = PromptBuilder(default_model.tokenizer)
    for new, old in zip(tr.train_pairs, gold.train_pairs, strict=True):
        assert (new.kind, new.question, new.fact) == (old.kind, old.question, old.fact)
        if not old.chat:
            assert new == old  # inline pairs keep their gold targets
            continue
        if new.answer == old.answer:
            continue
        changed += 1
        assert new.contrast is None  # no competing reply: no margin for this pair
        if not old.keeps_old_answer:
            assert matches(new.answer, [old.answer])  # an edit reply names the new object
        if changed > 2:
            continue  # two replies checked against transformers' own greedy decoding
        mode = Mode.NONE if old.keeps_old_answer else Mode.PROMPT
        prompt = lay.build(mode, old.question, None if mode is Mode.NONE else old.fact,
                           chat=True)
        reply = default_model.model.generate(
            torch.tensor([prompt.ids]), max_new_tokens=24, do_sample=False,
            pad_token_id=default_model.tokenizer.eos_token_id)
        text = default_model.tokenizer.decode(reply[0, len(prompt.ids):],
                                              skip_special_tokens=True).strip()
        assert new.answer == text  # the teacher's own greedy reply, token for token
    assert changed >= 2
    files = list((tmp_path / "answers").glob("*.json"))
    assert len(files) == sum(any(p.chat for p in ps) for ps in (gold.val_pairs, gold.train_pairs))
    calls = []
    monkeypatch.setattr(targets.InProcessEngine, "generate_many",
                        lambda *a, **k: calls.append(1))
    again = Trainer(*args, cfg)  # from the cache: nothing is generated
    assert again.train_pairs == tr.train_pairs and calls == []
