"""Evaluation on real records with the real default model, plus the metric formulas."""
from __future__ import annotations

import json
import math

import pytest
from conftest import shared_data
from typer.testing import CliRunner

from editkit import DatasetError, evaluate, metrics
from editkit.cli import app
from editkit.datasets import detect_format, load_records

DATA = shared_data()
ROME = DATA / "counterfact" / "counterfact-rome-test.json"
EASY = DATA / "counterfact" / "counterfact-test.json"
ZSRE = DATA / "zsre" / "zsre-test.json"
MQUAKE = DATA / "mquake" / "mquake-hard-test.json"


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


def test_distractors_lengthen_prompts_and_never_include_the_record_itself(lm):
    plain = evaluate(lm, data=ROME, mode="ptokens", limit=2)
    with_d = evaluate(lm, data=ROME, mode="ptokens", limit=2, distractors=10)
    per_q = plain.timing["prompt_tokens_per_question"]
    assert with_d.timing["prompt_tokens_per_question"] > per_q + 50
    from editkit.evaluation import _distractor_pool, _sample_distractors
    import random
    _, recs = load_records(ROME)
    pool = _distractor_pool(recs)
    sample = _sample_distractors(pool, 100, recs[0].case_id, random.Random(0))
    assert recs[0].fact not in sample and len(set(sample)) == 100


def test_ike_evaluation_uses_32_demos_and_many_more_tokens(lm):
    ike = evaluate(lm, data=ROME, mode="ike", limit=1)
    pt = evaluate(lm, data=ROME, mode="ptokens", limit=1)
    assert ike.timing["prompt_tokens_per_question"] > 15 * pt.timing["prompt_tokens_per_question"]


def test_memory_setting_answers_through_retrieval(lm):
    report = evaluate(lm, data=ROME, mode="prompt", limit=3, memory_size=20)
    rec = report.records[0]
    assert "retrieval_hit" in rec and len(rec["retrieved"]) == 13
    assert rec["retrieved"][0] == rec["fact"]  # the rewrite prompt finds its own fact


def test_easyedit_zsre_and_mquake_protocols_run_on_real_records(lm):
    easy = evaluate(lm, data=EASY, mode="prompt", limit=2)
    assert {m.protocol for m in easy.metrics.values()} == {"easyedit-token"}
    assert set(easy.metrics) == {"rewrite_acc", "rephrase_acc", "locality"}
    none = evaluate(lm, data=EASY, mode="none", limit=2)
    assert none.metrics["locality"].value == 100.0  # unedited vs itself
    z = evaluate(lm, data=ZSRE, mode="prompt", limit=2)
    assert set(z.metrics) == {"edit_acc", "rephrase_acc", "locality_acc", "portability_acc"}
    mq = evaluate(lm, data=MQUAKE, mode="prompt", limit=1, max_new_tokens=4)
    assert set(mq.metrics) == {"multi_hop_acc", "case_acc"}
    assert len(mq.records[0]["probes"]) == 3


def test_eval_cli_writes_a_table_and_json(tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["eval", "--data", str(ROME), "--mode", "none", "--limit", "1",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| ES |" in res.output and out.is_file()
    assert json.loads(out.read_text())["format"] == "counterfact-rome"
    bad = CliRunner().invoke(app, ["eval", "--data", str(ROME), "--mode", "memit"])
    assert bad.exit_code == 2 and "mode" in bad.output
