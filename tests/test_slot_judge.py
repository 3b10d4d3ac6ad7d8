"""The "same slot" judge (editkit.retrieval.slot) and its training (editkit.train.slot)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import data_file
from editkit.datasets import load_records
from editkit.embedder import DEFAULT_EMBEDDER, shared_embedder
from editkit.errors import ArtifactError
from editkit.retrieval.slot import (
    FEATURE_NAMES,
    LearnedSlotJudge,
    SlotJudge,
    SlotJudgeArtifact,
    shipped_slot_judge,
)
from editkit.train.slot import SlotTrainConfig, embed_pairs, rates, train_slot_judge
from editkit.train.slot_pairs import counterfact_pairs

# CounterFact validation records the shipped judge is checked on (by case_id)
VAL_CASES = (42, 43, 66, 104)


@pytest.fixture(scope="module")
def judge() -> LearnedSlotJudge:
    j = shipped_slot_judge(DEFAULT_EMBEDDER)
    assert j is not None, "no slot judge ships for the default embedder"
    return j


def _cosines(new: str, olds: list[str]) -> list[tuple[str, float]]:
    vecs = shared_embedder().encode([new, *olds])
    return [(old, float(vecs[0] @ v)) for old, v in zip(olds, vecs[1:])]


def test_shipped_judge_supersedes_a_value_change_but_not_a_neighbour_subject(judge) -> None:
    assert isinstance(judge, SlotJudge)
    recs = {r.case_id: r for r in
            load_records(data_file("counterfact", "counterfact-val.json"), "counterfact")[1]}
    for case in VAL_CASES:
        r = recs[case]
        new = f"{r.prompt} {r.target_new}"
        olds = [f"{r.prompt} {r.ground_truth}",  # the same slot, another value
                f"{r.locality_prompt} {r.locality_ground_truth}",  # neighbour, its own value
                f"{r.locality_prompt} {r.target_new}"]  # neighbour with the new value
        same, *neighbours = judge.probabilities(new, _cosines(new, olds))
        assert same >= judge.threshold, (new, olds[0], same)
        assert all(p < judge.threshold for p in neighbours), (new, olds[1:], neighbours)


def test_shipped_judge_on_app_style_statements(judge) -> None:
    old = "Our warehouse in Ghent ships orders within 2 days."
    new = "Our warehouse in Ghent ships orders within 5 days."
    assert judge.probabilities(new, _cosines(new, [old]))[0] >= judge.threshold
    old = "The Nimbus X2 phone costs 799 dollars."
    olds = ["The Nimbus X2 phone costs 699 dollars.", "The Nimbus X3 phone costs 799 dollars.",
            "The Nimbus X2 phone weighs 180 grams."]
    price, sibling, other_relation = judge.probabilities(old, _cosines(old, olds))
    assert price >= judge.threshold
    assert sibling < judge.threshold and other_relation < judge.threshold


def test_no_olds_gives_no_probabilities(judge) -> None:
    assert judge.probabilities("The Eiffel Tower is in Rome.", []) == []


def test_artifact_round_trips_save_and_load(judge, tmp_path: Path) -> None:
    path = judge.save(tmp_path / "slot.json")
    back = LearnedSlotJudge.load(path)
    assert back.artifact == judge.artifact and back.threshold == judge.threshold
    pairs = [("The Eiffel Tower is in Paris.", 0.84), ("The Louvre is in Paris.", 0.6)]
    assert back.probabilities("The Eiffel Tower is in Rome.", pairs) == \
        judge.probabilities("The Eiffel Tower is in Rome.", pairs)


@pytest.mark.parametrize("damage", ["truncated", "format", "features", "idf", "missing",
                                    "not-json-object"])
def test_bad_artifact_file_raises_artifact_error(judge, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "slot.json"
    raw = json.loads(judge.artifact.model_dump_json())
    if damage == "truncated":
        path.write_text(judge.artifact.model_dump_json()[:200], encoding="utf-8")
    elif damage == "missing":
        path = tmp_path / "absent.json"
    elif damage == "not-json-object":
        path.write_text("[1, 2]", encoding="utf-8")
    else:
        if damage == "format":
            raw["format"] = "editkit-relevance-gate/1"
        elif damage == "features":
            raw["features"], raw["weights"] = raw["features"][:-1], raw["weights"][:-1]
        else:  # trained with another gate's IDF than the one that ships
            raw["idf_sha256"] = "0" * 64
        path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ArtifactError):
        LearnedSlotJudge.load(path)


def test_artifact_refuses_a_threshold_outside_zero_to_one() -> None:
    with pytest.raises(ValueError):
        SlotJudgeArtifact(embedder=DEFAULT_EMBEDDER, features=list(FEATURE_NAMES),
                          weights=[0.0] * len(FEATURE_NAMES), threshold=1.5, idf_sha256="x")


def test_training_on_a_small_slice_keeps_validation_false_accepts_within_target() -> None:
    cfg = SlotTrainConfig(train=str(data_file("counterfact", "counterfact-train.json")),
                          val=str(data_file("counterfact", "counterfact-val.json")),
                          zsre=None, app=False, n_train=60, n_val=60, nearest=2)
    trained = train_slot_judge(cfg)
    assert 0.0 < trained.threshold <= 1.0
    prov = trained.artifact.provenance
    assert prov["train_sha256"] and prov["val_sha256"] and prov["train_pairs"]["update"] == 60
    # the validation pairs rebuilt as training builds them (seed + 1), judged by the runtime path
    val = load_records(cfg.val, "counterfact")[1]
    emb = shared_embedder()
    pairs = counterfact_pairs(val[: cfg.n_val], emb, cfg.nearest, random.Random(cfg.seed + 1),
                              linked=val)
    embed_pairs(emb, pairs)
    got = rates(trained, pairs)
    assert got["negatives"]["same_slot"] <= cfg.target_far
    assert got == prov["validation"]["counterfact_val"]
    assert got["update"]["same_slot"] > 0.5  # and it still finds updates
