"""Smoke runs of every benchmark: each runs end to end on tiny sizes and writes sane JSON.

Correctness only: no timing is asserted (numbers live in docs/benchmarks.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from editkit.benchmarks import cold_start, facts, latency, memory_scale, retrieval, throughput


def test_fact_corpus_is_distinct_deterministic_and_prefix_stable() -> None:
    a, b = facts.facts(3000), facts.facts(1000)
    assert len(set(a)) == 3000 and a[:1000] == b
    assert all(t.endswith(".") and len(t) > 10 for t in a)


def test_vectors_beyond_the_real_ones_stay_close_to_a_real_one() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 384)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    out = memory_scale.corpus_vectors(2000, real)
    assert np.array_equal(out[:500], real)
    best = (out[500:] @ real.T).max(axis=1)
    assert abs(float(np.median(best)) - 0.85) < 0.03
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_memory_scale_smoke_exact_and_faiss_on_real_embeddings(tmp_path, monkeypatch) -> None:
    pytest.importorskip("faiss")
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "m.json"
    res = memory_scale.main(["--sizes", "300,1200", "--queries", "5", "--real", "1200",
                             "--json", str(out)])
    rows = {(r["facts"], r["index"]): r for r in res["rows"]}
    assert set(rows) == {(300, "exact"), (300, "faiss"), (1200, "exact"), (1200, "faiss")}
    assert rows[(1200, "faiss")]["recall_at_10"] == 1.0  # flat below IVF_MIN: exact too
    assert json.loads(out.read_text())["machine"]["cores"] >= 1


@pytest.mark.slow  # ~2 min on 2 cores: every mode's 8-token ask incl. IKE, and the sweep
def test_latency_smoke_covers_every_mode_and_the_cached_prefix(tmp_path) -> None:
    res = latency.main(["--n", "2", "--dtypes", "float32", "--sweep",
                        "--json", str(tmp_path / "l.json")])
    fp32 = res["by_dtype"]["float32"]
    assert set(fp32) == {"none", "ptokens", "prompt", "ike", "ike (prefix cached)",
                         "ptokens (prefix cached)"}
    assert fp32["ike"]["prompt_tokens"] > 15 * fp32["ptokens"]["prompt_tokens"] / 2
    assert res["ratios"]["ptokens_over_ike_prompt_tokens"] < 1
    by = {(r["input"], r["value"]): r["prompt_tokens"] for r in res["sweep"]}
    assert by[("distractors", 100)] > by[("distractors", 10)] > by[("distractors", 0)]
    assert by[("m", 10)] - by[("m", 1)] == 18  # 2 x 9 more P-Tokens


def test_retrieval_smoke_times_the_policy_against_the_ask_it_serves(tmp_path) -> None:
    res = retrieval.main(["--memory-size", "30", "--n", "2", "--json", str(tmp_path / "r.json")])
    assert res["memory_size"] == 30 and res["questions"] == 6
    assert set(res["rows"]) == {"select learned", "select threshold", "ask (fact given)",
                                "ask via memory"}
    assert res["rows"]["ask (fact given)"]["share_of_ask_p50"] == 1.0
    assert 1 <= res["placed_an_edit"] <= 6  # rewrites reach their edit; neighbours may not
    assert json.loads((tmp_path / "r.json").read_text())["benchmark"] == "retrieval"


def test_latency_mixed_decode_smoke_times_both_decoders_per_mode(tmp_path) -> None:
    res = latency.main(["--n", "2", "--modes", "none,ptokens", "--decode-dtype", "bfloat16",
                        "--json", str(tmp_path / "m.json")])
    assert set(res["by_mode"]) == {"none", "ptokens"}
    for r in res["by_mode"].values():
        assert r["ask_p50_ms_fp32_decode"] > 0 and r["ask_p50_ms_mixed_decode"] > 0
        assert 0 <= r["identical_answers"] <= 1


def test_flop_counter_counts_the_tokens_of_each_forward(default_model) -> None:
    import torch

    counter = throughput.FlopCounter(default_model.model)
    ids = torch.tensor([default_model.tokenizer("The sky is blue today").input_ids])
    with torch.no_grad():
        default_model.model(input_ids=ids, logits_to_keep=1)
    counter.close()
    t = ids.shape[1]
    assert counter.tokens == t
    assert counter.flops == (2 * counter.body * t + 4 * counter.layers * t * t * counter.hidden
                             + 2 * counter.hidden * counter.vocab)
    assert 0.9e8 < counter.body < 1.2e8  # SmolLM2-135M without its (tied) embedding table


@pytest.mark.slow  # ~80 s on 2 cores: an evaluation per mode and two training steps
def test_throughput_smoke_evaluates_every_mode_and_times_a_training_step(default_model,
                                                                          tmp_path) -> None:
    from editkit import EditableLM, EditMemory
    from editkit.ptokens import PTokens

    lm = EditableLM(default_model, PTokens.create(default_model.model, default_model.tokenizer,
                                                  name=default_model.name, m=1),
                    EditMemory(None))
    rows = throughput.eval_throughput(lm, records=2, ike_records=1, peak=100.0)
    assert [r["mode"] for r in rows] == list(throughput.MODES)
    assert all(r["tokens_per_s"] > 0 and r["gflop_per_s"] > 0 for r in rows)
    train = throughput.training_steps(default_model, steps=1)
    assert train["step_without_cache_s"] > train["step_with_cache_s"] > 0


def test_cold_start_child_reports_each_phase() -> None:
    import os

    row = cold_start.child({**os.environ, "HF_HUB_OFFLINE": "1"})
    assert set(row) == {"import_s", "from_pretrained_s", "first_answer_s", "process_s"}
    assert row["process_s"] > row["from_pretrained_s"] > 0
    libs = cold_start.child({**os.environ, "HF_HUB_OFFLINE": "1"}, cold_start.LIBS)
    assert set(libs) == {"torch_transformers_s", "sentence_transformers_s", "process_s"}
    assert libs["process_s"] > libs["torch_transformers_s"] > 0


def test_bench_command_refuses_an_unknown_benchmark_and_forwards_options() -> None:
    from typer.testing import CliRunner

    from editkit.cli.app import app

    bad = CliRunner().invoke(app, ["bench", "nope"])
    assert bad.exit_code == 2 and "unknown benchmark" in bad.output
    helped = CliRunner().invoke(app, ["bench", "memory_scale", "--help"])
    assert helped.exit_code == 0 and "--sizes" in helped.output


def test_batched_smoke_compares_ask_many_and_score_many_with_single_calls(tmp_path) -> None:
    from editkit.benchmarks import batched

    res = batched.main(["--n", "3", "--max-new-tokens", "4", "--batch-sizes", "2",
                        "--json", str(tmp_path / "b.json")])
    calls = {(r["call"], r.get("prefixes_stored")): r for r in res["batched"]}
    assert set(calls) == {("ask_many", False), ("ask_many", True), ("score_many", None)}
    assert calls["ask_many", False]["answers_equal"] == 3
    assert calls["ask_many", True]["answers_equal"] == 3
    assert calls["score_many", None]["scores_equal"] == 3
    assert json.loads((tmp_path / "b.json").read_text())["n"] == 3


def test_serve_load_smoke_counts_errors_and_checks_tenants(tmp_path) -> None:
    pytest.importorskip("uvicorn")
    from editkit.benchmarks import serve_load

    res = serve_load.main(["--clients", "2", "--requests", "2", "--rounds", "2",
                           "--max-tokens", "3", "--edit-every", "1",
                           "--json", str(tmp_path / "s.json")])
    assert res["errors"] == 0 and res["tenants_isolated"] is True
    assert res["edits_acknowledged"] == 2 + 2 * 2 * 2 and res["edits_lost"] == 0
    assert res["batched_requests"] == 8 and res["load_rps"] > 0
    assert len(res["per_round"]) == 2 and res["speedup_over_sequential_http"] > 0
    # the warm-up stored each tenant's edit prefix: the load's questions about it reuse it
    assert res["prefix_hits"] > 0
