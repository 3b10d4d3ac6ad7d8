"""`updates`: a fact edited again (A -> B -> C) through the memory, answers generated."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import data_file
from editkit.cli import app
from editkit.eval import EvalConfig, evaluate
from editkit.eval.app_facts import app_facts
from editkit.eval.tasks.updates import RATES, AppRecord, chain_of, sibling_fact

MQUAKE = data_file("mquake", "mquake-hard-test.json")


def test_updates_task_on_counterfact_and_app_facts_with_the_shipped_default(product_lm):
    """The shipped default (real model, shipped P-Tokens, learned gate and slot judge) on 2 ROME
    CounterFact records and 2 app facts, keyless and keyed, through the CLI's entry point."""
    r = evaluate(product_lm, EvalConfig(task="updates", limit=2, app_facts=2, max_new_tokens=6))
    assert r.format == "counterfact-rome" and len(r.records) == 4
    m = r.metrics
    assert {p + k for p in ("", "keyed_") for k in RATES} - {"keyed_false_supersession"} <= set(m)
    assert all(0 <= v.value <= 100 for v in m.values())
    assert m["newest_shown"].n == 4 and m["false_supersession"].n == 4
    assert m["keyed_superseded_ok"].value == 100.0 and m["keyed_revived"].value == 100.0
    cf, app_row = r.records[0], r.records[2]
    assert len(cf["values"]) == 3 and len(set(cf["values"])) == 3  # A -> B -> C
    assert app_row["case_id"] == f"app:{app_facts('test', 1)[0].key}"
    for row in r.records:
        for v in ("keyless", "keyed"):
            assert row[v]["history_complete"] and len(row[v]["chain"]) == len(row["values"])
            assert row[v]["chain"][-1] in row[v]["live"]  # the newest is always live
    assert r.settings["app_facts"] == 2 and r.settings["variants"] == ["keyless", "keyed"]


def test_chains_questions_and_near_miss_siblings():
    fact = app_facts("test", 1)[0]
    chain = chain_of(AppRecord("app:x", fact))
    assert chain.facts == [fact.statement(i) for i in range(3)] and chain.key == fact.key
    assert chain.questions == list(fact.questions + fact.rewordings)
    sib = sibling_fact(fact)
    assert sib is not None and fact.subject not in sib and sib.endswith(fact.values[0] + ".")


def test_updates_cli_refuses_app_facts_elsewhere_and_other_formats():
    with pytest.raises(ValueError, match="app_facts belongs to the updates task"):
        EvalConfig(task="wild", app_facts=2)
    res = CliRunner().invoke(app, ["eval", "--task", "counterfact-rome", "--app-facts", "2"])
    assert res.exit_code != 0 and "app_facts belongs to the updates task" in res.output
    res = CliRunner().invoke(app, ["eval", "--task", "updates", "--data", str(MQUAKE),
                                   "--model", "no-such-model"])
    assert res.exit_code == 2 and "does not read 'mquake'" in res.output
