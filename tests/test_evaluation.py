"""Evaluation as registered tasks: the registry, the metric formulas, MQuAKE's exact match, both
zsRE localities, recorded settings; plumbing on the tiny random model, end to end on the real
default model."""
from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import data_file
from editkit import DatasetError, EditableLM, EditMemory, InvalidInputError, evaluate, metrics
from editkit.cli import app
from editkit.data_files import describe, package_data_root
from editkit.datasets import detect_format, load_records
from editkit.eval import TASKS, EvalConfig, UnknownTaskError, get_task
from editkit.eval.matching import exact_match, extract_answer, normalize
from editkit.eval.registry import data_for, distractor_pool, sample_distractors
from editkit.loading import load_model
from editkit.ptokens import PTokens

ROME = data_file("counterfact", "counterfact-rome-test.json")
EASY = data_file("counterfact", "counterfact-test.json")
ZSRE = data_file("zsre", "zsre-test.json")
MQUAKE = data_file("mquake", "mquake-hard-test.json")


def test_s_is_zero_when_any_component_is_zero():
    assert metrics.harmonic_mean([100, 100, 0]) == 0
    assert math.isclose(metrics.harmonic_mean([100, 50, 100]), 75.0)


def test_rome_success_direction_for_edits_and_neighbours():
    assert metrics.rome_success(nll_new=0.5, nll_true=2.0, neighbour=False) == 1
    assert metrics.rome_success(nll_new=0.5, nll_true=2.0, neighbour=True) == 0
    assert metrics.rome_magnitude(0.0, math.inf, neighbour=False) == 1.0


def test_token_accuracy_and_unchanged_share():
    assert metrics.token_accuracy([1, 2, 3], [1, 9, 3]) == pytest.approx(2 / 3)
    assert metrics.unchanged_share([5, 6], [5, 7]) == 0.5
    assert metrics.contains_answer("It is Potosi, Missouri.", ["Potosi"])
    assert not metrics.contains_answer("Dublin", ["Potosi", "  "])


def test_one_registered_task_per_data_format_and_a_typed_error_naming_them():
    assert set(TASKS) == {"counterfact-rome", "counterfact", "counterfact-probes", "zsre",
                          "mquake", "mquake-multihop", "updates", "wild", "wild-questions"}
    assert {n for n, t in TASKS.items() if t.formats is None} == {
        "counterfact-rome", "counterfact", "zsre", "mquake"}  # one default task per format
    assert get_task("zsre").name == "zsre"
    with pytest.raises(UnknownTaskError, match="'knowedit'.*counterfact, counterfact-probes, "
                       "counterfact-rome, mquake, mquake-multihop, updates, wild, wild-questions, "
                       "zsre"):
        get_task("knowedit")
    with pytest.raises(UnknownTaskError,
                       match="does not read 'zsre'.*tasks that do: updates, wild, zsre"):
        get_task("counterfact-probes", "zsre")


def test_counterfact_probes_task_scores_easyedit_records_with_rome_metrics(tiny_lm):
    """Validation CounterFact ships in EasyEdit format; `task="counterfact-probes"` gives it
    ROME's ES/PS/NS/S (one paraphrase, one neighbour per record), the trainer's val scoring."""
    report = evaluate(tiny_lm, data=EASY, mode="prompt", limit=2, task="counterfact-probes")
    assert set(report.metrics) >= {"ES", "PS", "NS", "S"}
    _, recs = load_records(EASY)
    assert [(p["kind"], p["question"]) for p in report.records[1]["probes"]] == [
        ("rewrite", recs[1].prompt), ("paraphrase", recs[1].rephrase_prompt),
        ("neighborhood", recs[1].locality_prompt)]
    assert evaluate(tiny_lm, data=EASY, mode="prompt", limit=2).metrics.keys().isdisjoint({"S"})


@pytest.mark.parametrize("generation, answers", [
    ("Kyiv, Ukraine", ["UK"]),  # the audit's false positives of the substring check
    ("Indiana", ["India"]),
    ("not London, it is Paris", ["London"]),
    ("United Kingdom of Great Britain", ["United Kingdom"]),
])
def test_mquake_exact_match_rejects_what_the_substring_check_accepted(generation, answers):
    assert metrics.contains_answer(generation, answers)  # the legacy check says yes
    assert not exact_match(extract_answer(generation), answers)
    assert not exact_match(generation, answers)


@pytest.mark.parametrize("generation, answers", [
    ("USA", ["United States of America", "USA"]),  # an alias
    ("The answer is: Éire.\nMore text", ["Ireland", "Eire"]),  # extracted, accents folded
    ("united states of america", ["the United States of America"]),
])
def test_mquake_exact_match_accepts_the_answer_or_an_alias(generation, answers):
    assert exact_match(extract_answer(generation), answers)


def test_formats_are_detected_and_read_as_published():
    for path, fmt, n in ((ROME, "counterfact-rome", 300), (EASY, "counterfact", 8761),
                         (ZSRE, "zsre", 737), (MQUAKE, "mquake", 329)):
        got_fmt, records = load_records(path)
        assert (got_fmt, len(records)) == (fmt, n)
    with pytest.raises(DatasetError, match="Unknown data format"):
        detect_format({"question": "q", "answer": "a"})


def test_broken_record_error_names_the_field(tmp_path):
    raw = json.loads(ROME.read_text())[:2]
    del raw[1]["requested_rewrite"]["target_true"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match="record 1 .*requested_rewrite.target_true"):
        load_records(bad)


def test_rome_evaluation_matches_the_sdk_scorer(lm):
    report = evaluate(lm, data=ROME, mode="prompt", limit=2)
    assert set(report.metrics) >= {"ES", "PS", "NS", "S", "EM", "PM", "NM"}
    rec = report.records[0]
    assert [p["kind"] for p in rec["probes"]] == ["rewrite"] + ["paraphrase"] * 2 + [
        "neighborhood"] * 10
    raw = json.loads(ROME.read_text())[0]["requested_rewrite"]
    q = raw["prompt"].format(raw["subject"])
    new, true = raw["target_new"]["str"], raw["target_true"]["str"]
    s = lm.score(q, [new, true], mode="prompt", fact=f"{q} {new}").as_dict()
    assert rec["probes"][0]["nll_new"] == pytest.approx(-s[new], abs=1e-4)
    assert rec["probes"][0]["nll_true"] == pytest.approx(-s[true], abs=1e-4)
    s_value = metrics.harmonic_mean([report.metrics[k].value for k in ("ES", "PS", "NS")])
    assert report.metrics["S"].value == pytest.approx(s_value)
    assert report.timing["questions"] == 26


def test_distractors_lengthen_prompts_and_never_include_the_record_itself(tiny_lm):
    plain = evaluate(tiny_lm, data=ROME, mode="ptokens", limit=2)
    with_d = evaluate(tiny_lm, data=ROME, mode="ptokens", limit=2, distractors=10)
    per_q = plain.timing["prompt_tokens_per_question"]
    assert with_d.timing["prompt_tokens_per_question"] > per_q + 50
    _, recs = load_records(ROME)
    pool = distractor_pool(recs)
    sample = sample_distractors(pool, 100, recs[0].case_id, random.Random(0))
    assert recs[0].fact not in sample and len(set(sample)) == 100


def test_ike_evaluation_uses_32_demos_and_the_self_copy_variant_adds_the_fact_once(
        tiny_lm, small_demo_file):
    ike = evaluate(tiny_lm, data=ROME, mode="ike", limit=1, demos=small_demo_file)
    pt = evaluate(tiny_lm, data=ROME, mode="ptokens", limit=1)
    assert ike.timing["prompt_tokens_per_question"] > 15 * pt.timing["prompt_tokens_per_question"]
    assert ike.settings["ike"]["self_copy"] is False
    copy = evaluate(tiny_lm, data=ROME, mode="ike", limit=1, demos=small_demo_file,
                    ike_self_copy=True)
    assert copy.settings["ike"]["demonstrations"] == 33
    fact = copy.records[0]["fact"]
    extra = len(tiny_lm.layouts.text_ids(f"New Fact: {fact}\nPrompt: {fact}\n\n"))
    added = (copy.timing["prompt_tokens_per_question"] - ike.timing["prompt_tokens_per_question"])
    assert abs(added - extra) <= 1  # one demonstration; BPE may merge one token at its seam


def test_memory_setting_answers_through_the_retrieval_policy(tiny_lm):
    report = evaluate(tiny_lm, data=ROME, mode="prompt", limit=3, memory_size=20)
    rec = report.records[0]
    assert "retrieval_hit" in rec and len(rec["retrieved"]) == 13
    assert rec["retrieved"][0] == rec["fact"]  # the rewrite prompt finds its own fact
    assert report.settings["retrieval_used"] and report.settings["retrieval_k"] == 1
    assert report.settings["retrieval"]["threshold"] == tiny_lm.retrieval.threshold


def test_memory_setting_reports_routing_gate_decisions_and_the_oracle_row(tiny_lm):
    """Per probe kind: own edit / other edit / nothing; the gate's precision and recall on the
    labelled pairs; the oracle row (the same probes with the record's edit given)."""
    learned = evaluate(tiny_lm, data=ROME, mode="prompt", limit=3, memory_size=20)
    threshold = evaluate(tiny_lm, data=ROME, mode="prompt", limit=3, memory_size=20,
                         gate="threshold")
    given = evaluate(tiny_lm, data=ROME, mode="prompt", limit=3)
    m = learned.metrics
    for kind in ("rewrite", "paraphrase", "neighborhood"):
        shares = [m[f"reach_{kind}_{r}"].value for r in ("own", "other", "nothing")]
        assert sum(shares) == pytest.approx(100.0)
    for rec in learned.records:  # the routing agrees with what reached each probe
        assert rec["routing"]["rewrite"][0] == ("own" if rec["retrieved"][0] == rec["fact"]
                                                else "other" if rec["retrieved"][0]
                                                else "nothing")
    assert 0 <= m["gate_recall"].value <= 100 and m["retrieval_recall"].n == 9
    # the oracle row is the edit-given evaluation of the same records
    for name in ("ES", "PS", "NS", "S"):
        assert m[f"oracle_{name}"].value == pytest.approx(given.metrics[name].value, abs=1e-6)
    assert learned.settings["retrieval"]["gate"] == "learned"
    assert threshold.settings["retrieval"]["gate"] == "threshold"
    # the learned gate keeps the records' edits away from more neighbourhood questions
    assert (m["reach_neighborhood_own"].value
            <= threshold.metrics["reach_neighborhood_own"].value)


def test_report_records_the_settings_it_ran_with(tiny_loaded):
    pt = PTokens.create(tiny_loaded.model, tiny_loaded.tokenizer, name=tiny_loaded.name, m=2)
    lm = EditableLM(tiny_loaded, pt, EditMemory(None), mode="prompt", chat=True,
                    prefix_cache=2, decode_dtype="bfloat16")
    lm.retrieval.top_k = 3
    s = evaluate(lm, data=ROME, mode="none", limit=1).settings
    assert s["retrieval"]["top_k"] == 3 and s["chat"] is True
    assert (s["decode_dtype"], s["prefix_cache"], s["ike"]) == ("bfloat16", 2, None)


def test_report_names_a_user_s_ptokens_by_directory_name_and_content_hash(tiny_loaded, tmp_path):
    made = PTokens.create(tiny_loaded.model, tiny_loaded.tokenizer, name=tiny_loaded.name, m=2)
    where = made.save_pretrained(tmp_path / "my-ptokens")
    pt = PTokens.from_pretrained(where, tiny_loaded.model, tiny_loaded.tokenizer,
                                 name=tiny_loaded.name)
    assert pt.content_hash() == made.content_hash()  # a set and its saved copy hash the same
    lm = EditableLM(tiny_loaded, pt, EditMemory(None), ptokens_source=str(where))
    report = evaluate(lm, data=ROME, mode="ptokens", limit=1)
    assert report.ptokens == f"my-ptokens, sha256 {pt.content_hash()}"
    assert str(tmp_path) not in report.model_dump_json()


def test_scorer_honours_the_chat_setting_like_the_sdk(tiny_loaded):
    """With chat on, evaluation scores the same chat-framed prompt and bare target as
    `EditableLM.score` (it used to ignore chat)."""
    pt = PTokens.create(tiny_loaded.model, tiny_loaded.tokenizer, name=tiny_loaded.name, m=2)
    lm = EditableLM(tiny_loaded, pt, EditMemory(None), mode="prompt", chat=True)
    report = evaluate(lm, data=ROME, mode="prompt", limit=1)
    raw = json.loads(ROME.read_text())[0]["requested_rewrite"]
    q = raw["prompt"].format(raw["subject"])
    new, true = raw["target_new"]["str"], raw["target_true"]["str"]
    s = lm.score(q, [new, true], mode="prompt", fact=f"{q} {new}").as_dict()
    probe = report.records[0]["probes"][0]
    assert probe["nll_new"] == pytest.approx(-s[new], abs=1e-4)
    assert probe["nll_true"] == pytest.approx(-s[true], abs=1e-4)
    plain = evaluate(EditableLM(tiny_loaded, pt, EditMemory(None), mode="prompt"),
                     data=ROME, mode="prompt", limit=1)
    assert report.timing["prompt_tokens_per_question"] > plain.timing[
        "prompt_tokens_per_question"]


def test_zsre_reports_locality_in_the_rome_and_the_easyedit_sense(tiny_lm):
    none = evaluate(tiny_lm, data=ZSRE, mode="none", limit=3)
    assert none.metrics["locality"].value == 100.0  # the unedited model agrees with itself
    assert "ROME" in none.metrics["locality_acc"].protocol
    assert "EasyEdit" in none.metrics["locality"].protocol
    raw = json.loads(ZSRE.read_text())[0]
    probes = {p["kind"]: p for p in none.records[0]["probes"]}
    assert probes["locality_rome"]["question"] == raw["loc"] + "?"  # as ROME's dsets/zsre.py
    assert probes["locality"]["question"] == raw["loc"]
    edited = evaluate(tiny_lm, data=ZSRE, mode="prompt", limit=3)
    assert set(edited.metrics) == {"edit_acc", "rephrase_acc", "locality_acc", "locality",
                                   "portability_acc"}
    assert 0 <= edited.metrics["locality"].value <= 100


def test_zsre_records_without_a_new_answer_are_skipped_and_counted(tiny_lm, tmp_path):
    raw = json.loads(ZSRE.read_text())[:3]
    raw[1]["alt"] = ""
    path = tmp_path / "zsre.json"
    path.write_text(json.dumps(raw))
    report = evaluate(tiny_lm, data=path, mode="none")
    assert report.timing["records"] == 2
    assert report.settings["skipped"] == [{"index": 1, "reason": "empty alt (no new answer to "
                                                                 "edit toward)"}]
    path.write_text(json.dumps([raw[1]]))
    with pytest.raises(DatasetError, match="no record can be evaluated .*empty alt"):
        evaluate(tiny_lm, data=path, mode="none")


def test_zsre_ike_excludes_the_evaluated_question_by_its_text():
    _, recs = load_records(ZSRE)
    assert get_task("zsre").demo_exclusion(recs[4]) == {"exclude_prompts": [recs[4].src]}
    assert get_task("counterfact").demo_exclusion(recs[4]) == {"exclude": [4]}


def test_mquake_headline_is_case_accuracy_with_question_accuracy_beside_it(tiny_lm):
    # the cosine-threshold gate: the learned gate judges single-hop relevance, and a multi-hop
    # question names only its first hop's subject
    mq = evaluate(tiny_lm, data=MQUAKE, mode="prompt", limit=2, max_new_tokens=3,
                  gate="threshold")
    assert list(mq.metrics) == ["case_acc", "question_acc"]
    assert "any question" in mq.metrics["case_acc"].protocol
    _, cases = load_records(MQUAKE)
    for row, case in zip(mq.records, cases, strict=False):
        assert row["case"] == float(any(p["correct"] for p in row["probes"]))
        assert row["question"] == sum(p["correct"] for p in row["probes"]) / 3
        # the retrieval policy placed the case's own edits, or nothing below its threshold
        assert {p["fact"] for p in row["probes"] if p["fact"]} <= set(case.facts)
    assert all(p["fact"] for p in mq.records[0]["probes"])  # similarity 0.58-0.74 here
    with pytest.raises(Exception, match="memory_size does not apply"):
        evaluate(tiny_lm, data=MQUAKE, mode="prompt", limit=1, memory_size=10)


def test_easyedit_zsre_and_mquake_protocols_run_on_real_records(lm):
    easy = evaluate(lm, data=EASY, mode="prompt", limit=2)
    assert {m.protocol for m in easy.metrics.values()} == {"easyedit-token"}
    assert set(easy.metrics) == {"rewrite_acc", "rephrase_acc", "locality"}
    none = evaluate(lm, data=EASY, mode="none", limit=2)
    assert none.metrics["locality"].value == 100.0  # unedited vs itself
    z = evaluate(lm, data=ZSRE, mode="prompt", limit=2)
    assert z.metrics["edit_acc"].value > 50  # the fact in context: the real model copies it
    mq = evaluate(lm, data=MQUAKE, mode="prompt", limit=1, max_new_tokens=4)
    assert set(mq.metrics) == {"case_acc", "question_acc"}
    assert len(mq.records[0]["probes"]) == 3


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture
def tiny_lm(tiny_loaded):
    """An EditableLM on the tiny random model: for plumbing that needs no real weights."""
    pt = PTokens.create(tiny_loaded.model, tiny_loaded.tokenizer, name=tiny_loaded.name, m=2)
    return EditableLM(tiny_loaded, pt, EditMemory(None), mode="prompt")


def test_eval_cli_writes_a_table_and_json(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["eval", "--data", str(ROME), "--mode", "none", "--limit", "1",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| ES |" in res.output and out.is_file()
    assert json.loads(out.read_text())["format"] == "counterfact-rome"
    bad = CliRunner().invoke(app, ["eval", "--data", str(ROME), "--mode", "memit"])
    assert bad.exit_code == 2 and "mode" in bad.output
    wrong = CliRunner().invoke(app, ["eval", "--data", str(ROME), "--task", "counterfact-probes"])
    assert wrong.exit_code == 2 and "does not read 'counterfact-rome'" in wrong.output


def test_every_task_has_a_packaged_default_data_set_in_a_format_it_reads(monkeypatch):
    """`editkit eval --task T` needs no --data: each task's data set ships in the package (a fresh
    clone has it), and with neither data nor task the task is counterfact-rome."""
    monkeypatch.delenv("EDITKIT_DATA", raising=False)
    assert EvalConfig().task == "counterfact-rome" and EvalConfig().data is None
    assert EvalConfig(data=ROME).task is None  # a file picks its format's task
    root = package_data_root()
    for name, task in TASKS.items():
        path = data_for(EvalConfig(task=name))
        assert path.is_relative_to(root), (name, path)
        fmt, records = load_records(path)
        assert task.reads(fmt) and records, name
    assert data_for(EvalConfig()) == data_for(EvalConfig(task="counterfact-rome")) == ROME


def test_eval_cli_without_data_evaluates_the_packaged_file_and_records_it(tmp_path, monkeypatch):
    monkeypatch.delenv("EDITKIT_DATA", raising=False)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["eval", "--task", "counterfact-rome", "--limit", "2",
                                   "--mode", "prompt", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| ES |" in res.output
    report = json.loads(out.read_text())
    assert report["format"] == "counterfact-rome" and len(report["records"]) == 2
    assert report["config"]["data"] is None and report["config"]["task"] == "counterfact-rome"
    # named by its place in the package, not by this machine's path to it, with its digest
    assert report["data"] == {
        "file": "editkit:data/eval/counterfact/counterfact-rome-test.json",
        "sha256": hashlib.sha256(ROME.read_bytes()).hexdigest()}
    assert str(package_data_root()) not in json.dumps([report["config"], report["data"]])
    # the P-Tokens likewise: the shipped set by its place in the package, plus its rows' hash
    assert report["ptokens"].startswith(
        "shipped (editkit:data/ptokens/SmolLM2-135M-Instruct/m10), sha256 "), report["ptokens"]
    saved = out.read_text()
    assert str(Path.cwd()) not in saved and str(package_data_root().parent) not in saved
    assert "P-Tokens" not in res.output  # mode prompt uses none, so the header names none


def test_editkit_data_replaces_the_packaged_files_and_a_missing_one_is_a_clear_error(
        tmp_path, monkeypatch):
    """EDITKIT_DATA names a folder laid out like the packaged data (counterfact/, zsre/, mquake/);
    a data set it lacks fails with a DatasetError naming EDITKIT_DATA, before any model loads."""
    (tmp_path / "zsre").mkdir()
    mine = tmp_path / "zsre" / "zsre-test.json"
    mine.write_text(json.dumps(json.loads(ZSRE.read_text())[:3]))
    monkeypatch.setenv("EDITKIT_DATA", str(tmp_path))
    assert data_file("zsre", "zsre-test.json") == mine == data_for(EvalConfig(task="zsre"))
    assert describe(mine)["file"] == "$EDITKIT_DATA/zsre/zsre-test.json"
    with pytest.raises(DatasetError, match=r"counterfact/counterfact-rome-test\.json is not in "
                                           r"EDITKIT_DATA=.*unset it"):
        data_for(EvalConfig())
    res = CliRunner().invoke(app, ["eval", "--task", "mquake", "--model", "no-such-model"])
    assert res.exit_code == 2, res.output  # the data set, not the (unloadable) model, fails
    assert "mquake/mquake-hard-test.json is not in EDITKIT_DATA=" in res.output
    monkeypatch.setenv("EDITKIT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="EDITKIT_DATA=.*nowhere is not a folder"):
        data_file("zsre", "zsre-test.json")
    monkeypatch.delenv("EDITKIT_DATA")
    with pytest.raises(DatasetError, match="No data set zsre/nope.json ships with editkit.*"
                                           "Set EDITKIT_DATA"):
        data_file("zsre", "nope.json")


def test_memory_setting_keeps_one_edit_per_fact_in_memory(tiny_lm):
    """zsRE edits one subject in several records with different new answers (record 0 and 300:
    "What company/business published Bioscience Horizons?"). With both stored, the rephrase of
    record 0 reaches record 300's edit and the routing counts it as a miss: the memory setting
    keeps the first record of each fact and never stores a contradicting filler."""
    from editkit.datasets import one_edit_per_fact
    from editkit.eval.teacher_forced_task import fill_memory

    _, recs = load_records(ZSRE)
    kept, dropped = one_edit_per_fact(recs)
    assert len({r.edit_key for r in kept}) == len(kept) < len(recs)
    assert (recs[300], "edits the same fact as record 0 (memory setting: one edit per fact in "
                       "memory)") in dropped
    mem = EditMemory(None)
    fill_memory(mem, recs[:5], recs, 600, "t")  # every zsRE record offered as a filler
    stored = {e.text for e in mem.edits("t")}
    assert len(stored) == 600 and recs[0].fact in stored and recs[300].fact not in stored
    report = evaluate(tiny_lm, data=ZSRE, mode="prompt", limit=3, memory_size=10)
    assert {"index": 300, "reason": "edits the same fact as record 0 (memory setting: one edit "
                                    "per fact in memory)"} in report.settings["skipped"]
    assert [r["case_id"] for r in report.records] == [0, 1, 2]


def test_routing_only_reports_what_reached_the_prompt_and_a_gate_file_replaces_the_shipped(
        tiny_lm, tmp_path):
    from editkit import ArtifactError
    from editkit.embedder import DEFAULT_EMBEDDER
    from editkit.retrieval.gate import shipped_gate

    base = evaluate(tiny_lm, data=ROME, mode="ptokens", limit=4, memory_size=40,
                    routing_only=True)
    assert "S" not in base.metrics and base.metrics["reach_rewrite_own"].value == 100.0
    assert base.timing["prompt_tokens_per_question"] == 0  # nothing was scored
    gate = shipped_gate(DEFAULT_EMBEDDER)
    copy = tmp_path / "gate.json"
    gate.save(copy)
    same = evaluate(tiny_lm, data=ROME, mode="ptokens", limit=4, memory_size=40,
                    routing_only=True, gate_file=copy)
    assert same.settings["retrieval"]["gate_file"] == str(copy)
    assert {k: v.value for k, v in same.metrics.items()} == {
        k: v.value for k, v in base.metrics.items()}
    other = tmp_path / "other.json"
    other.write_text(copy.read_text().replace(f'"embedder": "{DEFAULT_EMBEDDER}"',
                                              '"embedder": "bge-small"'))
    filled = []
    real_add = type(tiny_lm.memory).add
    tiny_lm.memory.add = lambda *a, **kw: filled.append(1) or real_add(tiny_lm.memory, *a, **kw)
    try:
        with pytest.raises(ArtifactError, match="trained for the embedder 'bge-small'"):
            evaluate(tiny_lm, data=ROME, limit=1, memory_size=40, routing_only=True,
                     gate_file=other)
        assert not filled  # refused before the memory setting stored its 40 edits
        with pytest.raises(ArtifactError, match="No relevance gate at"):
            evaluate(tiny_lm, data=ROME, limit=1, memory_size=40, routing_only=True,
                     gate_file=tmp_path / "missing.json")
        assert not filled
    finally:
        del tiny_lm.memory.add
    with pytest.raises(ValueError, match="memory setting"):
        evaluate(tiny_lm, data=ROME, limit=1, routing_only=True)


def test_hard_fact_files_ship_in_rome_format_and_the_firm_split_holds_the_firmest_margins(lm):
    """`famous-facts.json` (hand-written, the Eiffel Tower among them) and the firmest 10% of
    counterfact-rome-test by the unedited model's margin (scripts/firm_facts.py) load like any
    published file; a stored margin is what the real default model gives."""
    from importlib import resources

    base = resources.files("editkit.data") / "eval"
    fmt, famous = load_records(str(base / "famous-facts.json"))
    assert fmt == "counterfact-rome" and len(famous) == 24
    assert famous[0].fact == "The Eiffel Tower is located in the city of Rome"
    raw = json.loads((base / "counterfact-rome-test-firm10.json").read_text())
    test_ids = [r["case_id"] for r in json.loads(ROME.read_text())]
    assert len(raw) == 30 and [r["case_id"] for r in raw] == [
        c for c in test_ids if c in {r["case_id"] for r in raw}]  # the test split's order
    assert min(r["unedited_margin"] for r in raw) > 5.0  # the test split's median is 1.7
    rw = raw[0]["requested_rewrite"]
    s = lm.score(rw["prompt"].format(rw["subject"]),
                 [rw["target_true"]["str"], rw["target_new"]["str"]], mode="none")
    assert s.scores[0].mean_logprob - s.scores[1].mean_logprob == pytest.approx(
        raw[0]["unedited_margin"], abs=1e-3)


# ---- wild: generated answers to questions, as users read them -------------------------------
def test_wild_task_answers_questions_through_the_memory_with_the_edit_given_beside_it(
        product_lm):
    """The shipped default (real model, shipped P-Tokens, learned gate) on 3 zsRE records and 2
    CounterFact records: questions in, whole answers generated, judged by containment."""
    r = evaluate(product_lm, task="wild", limit=3)
    assert r.format == "zsre" and r.data["file"].endswith("zsre/zsre-test.json")
    m = r.metrics
    assert {"edit", "rephrase", "unrelated_unchanged", "given_edit", "given_rephrase",
            "reached_edit", "reached_rephrase", "empty_answers"} <= set(m)
    assert m["edit"].n == 3 and r.settings["memory_size"] == 3
    assert m["reached_edit"].value == 100.0  # the fact's own question retrieves the fact
    for row in r.records:
        for p in row["probes"]:
            if p["kind"] != "unrelated":  # judged by containment of the new object
                assert p["hit"] == (normalize(p["target"]) in normalize(p["answer"])), p
    assert "chat='auto'" in r.settings["layout"] and r.settings["max_new_tokens"] == 64
    cf = evaluate(product_lm, task="wild", data=ROME, limit=2, max_new_tokens=12)
    assert cf.format == "counterfact-rome" and cf.metrics["rephrase"].n == 2
    kinds = [p["kind"] for p in cf.records[0]["probes"]]
    assert kinds == ["edit", "rephrase", "rephrase", "unrelated", "unrelated"]


def test_wild_questions_asks_counterfact_as_a_user_would(product_lm):
    """CounterFact records as questions in the chat template: the edit's own question, a
    rephrasing, and the same question about the neighbourhood's subjects (locality)."""
    from editkit.eval.tasks.wild_questions import QUESTIONS, prompt_subject

    assert prompt_subject("Michel Rocard is a native speaker of") == "Michel Rocard"
    assert prompt_subject("The mother tongue of Nicholas I of Russia is") == \
        "Nicholas I of Russia"
    assert prompt_subject("qwertz") is None
    r = evaluate(product_lm, task="wild-questions", limit=2, max_new_tokens=24, oracle=False)
    assert r.format == "counterfact-rome" and r.metrics["edit"].n == 2
    rec = r.records[0]
    first = json.loads(ROME.read_text())[0]["requested_rewrite"]
    edit_q, rephrase_q = QUESTIONS[first["relation_id"]]
    qs = {p["kind"]: [] for p in rec["probes"]}
    for p in rec["probes"]:
        qs[p["kind"]].append(p["question"])
    assert qs["edit"] == [edit_q.format(first["subject"])]
    assert qs["rephrase"] == [rephrase_q.format(first["subject"])]
    assert len(qs["unrelated"]) == 2 and all(q.endswith("?") for q in qs["unrelated"])
    assert all(p["question"].endswith("?") for row in r.records for p in row["probes"])
    assert "questions" in r.settings and r.settings["memory_size"] == 2


def test_a_judge_model_grades_answers_beside_containment(lm):
    """`judge_model="self"`: the real default model reads question, expected and given answer;
    its verdict is P("Yes") against P("No") for the reply's first token, reported as judged_*
    beside containment, never in its place."""
    from editkit.eval.answer_judge import AnswerJudge
    from editkit.layouts import JUDGE_QUESTION

    judge = AnswerJudge.load("self", lm)
    items = [("Where is the Eiffel Tower?", "Rome", "The Eiffel Tower is in Rome."),
             ("Where is the Eiffel Tower?", "Rome", "   ")]
    p, empty = judge.p_yes(items)
    assert empty == 0.0  # an empty answer says nothing; the model is not asked
    [s] = lm.score_many([JUDGE_QUESTION.format(question=items[0][0], expected="Rome",
                                               answer=items[0][2])], [["Yes", "No"]],
                        mode="none", chat=True)
    yes, no = (c.token_logprobs[0] for c in s.scores)
    assert p == pytest.approx(math.exp(yes) / (math.exp(yes) + math.exp(no)), abs=1e-5)
    r = evaluate(lm, task="wild", limit=2, max_new_tokens=12, oracle=False, judge_model="self")
    assert {"judged_edit", "judged_rephrase", "judge_agrees", "edit"} <= set(r.metrics)
    assert r.settings["judge"]["model"] == lm.name and r.config["judge_model"] == "self"
    graded = [d for row in r.records for d in row["probes"] if d["kind"] != "unrelated"]
    assert len(graded) == 4 and all(d["judged"] == (d["judge_p"] >= 0.5) for d in graded)
    agree = sum(d["judged"] == d["hit"] for d in graded) / 4
    assert r.metrics["judge_agrees"].value == pytest.approx(100 * agree)
    assert all("judge_p" not in d for row in r.records for d in row["probes"]
               if d["kind"] == "unrelated")
    assert "judge" not in str(evaluate(lm, task="wild", limit=1, max_new_tokens=2,
                                       oracle=False).metrics)


def test_a_judge_model_is_refused_where_nothing_is_generated(tiny_lm, tmp_path):
    """A task that scores probabilities has no answers to grade: refused before any model
    loads (the CLI), with the tasks that do generate named."""
    with pytest.raises(InvalidInputError, match="judge_model.*Tasks that do: wild, "
                                                "wild-questions"):
        evaluate(tiny_lm, task="counterfact-rome", limit=1, judge_model="self")
    res = CliRunner().invoke(app, ["eval", "--task", "zsre", "--judge-model", "self",
                                   "--model", str(tmp_path / "no-such-model")])
    assert res.exit_code != 0 and "judge_model grades generated answers" in res.output
    with pytest.raises(ValueError):
        EvalConfig(task="wild", judge_model="")


def test_wild_task_judges_containment_and_unchanged_unrelated_answers(tiny_lm):
    """Plumbing on the tiny random model: in mode none nothing is placed, so every unrelated
    answer is unchanged and the answers through memory equal the edit-given ones."""
    r = evaluate(tiny_lm, task="wild", mode="none", limit=2, max_new_tokens=4)
    assert r.metrics["unrelated_unchanged"].value == 100.0
    for row in r.records:
        for p in row["probes"]:
            if p["kind"] != "unrelated":
                assert p["answer"] == p["given"]
    # --no-oracle: no edit-given answers are generated at all, and none are reported
    lean = evaluate(tiny_lm, task="wild", mode="none", limit=2, max_new_tokens=4, oracle=False)
    assert "given_edit" not in lean.metrics and "edit" in lean.metrics
    assert all("given" not in p for row in lean.records for p in row["probes"])
    assert [p["answer"] for row in lean.records for p in row["probes"]] == \
        [p["answer"] for row in r.records for p in row["probes"]]
    with pytest.raises(UnknownTaskError, match="wild"):
        evaluate(tiny_lm, task="wild", data=MQUAKE, limit=1)
    with pytest.raises(InvalidInputError, match="ike_self_copy applies.*the wild task"):
        evaluate(tiny_lm, task="wild", mode="ike", ike_self_copy=True, limit=1)
    with pytest.raises(InvalidInputError, match="ike_self_copy applies.*MQuAKE"):
        evaluate(tiny_lm, data=MQUAKE, mode="ike", ike_self_copy=True, limit=1)
