"""Slow end-to-end runs on real data (run with `pytest -m slow`)."""
from __future__ import annotations

import json

import pytest

from conftest import data_file
from editkit import EditableLM, EditMemory

pytestmark = pytest.mark.slow
ROME_TEST = data_file("counterfact", "counterfact-rome-test.json")


def test_ike_mode_with_the_shipped_demonstration_store(default_model, default_ptokens):
    lm = EditableLM(default_model, default_ptokens, EditMemory(None), mode="ike")
    lm.edit("The mother tongue of Danielle Darrieux is English.")
    r = lm.score("The mother tongue of Danielle Darrieux is", ["English", "French"])
    assert r.prompt_tokens > 500  # 32 demonstrations
    assert len(lm.demos.records) == 9784


def test_prompt_mode_beats_unedited_on_real_counterfact_rewrites(default_model, default_ptokens):
    records = json.loads(ROME_TEST.read_text())[:40]
    lm = EditableLM(default_model, default_ptokens, EditMemory(None), mode="prompt")
    wins = {"none": 0, "prompt": 0}
    for rec in records:
        rw = rec["requested_rewrite"]
        q = rw["prompt"].format(rw["subject"])
        new, true = rw["target_new"]["str"], rw["target_true"]["str"]
        fact = f"{q} {new}."
        for mode in wins:
            s = lm.score(q, [new, true], mode=mode, fact=fact).as_dict()
            wins[mode] += s[new] > s[true]
    # Efficacy (ES) on 40 records: the edit must move many answers that the model got "right".
    assert wins["prompt"] >= wins["none"] + 10, wins
