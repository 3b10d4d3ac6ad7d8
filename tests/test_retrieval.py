"""The retrieval policy and the relevance gate on real CounterFact validation questions.

Paraphrases with an unrelated sentence in front must still reach their edit; neighbourhood
questions (another subject, the same relation) must not get it. Real embedder, real data.
"""
from __future__ import annotations

import json
import logging

import pytest

from conftest import data_file
from editkit import EditMemory
from editkit.errors import ArtifactError
from editkit.retrieval import RetrievalSettings, select
from editkit.retrieval.gate import FEATURE_NAMES, RelevanceGate, question_views, shipped_gate
from editkit.train.gate import GateTrainConfig, train_gate

VAL = data_file("counterfact", "counterfact-val.json")
TRAIN = data_file("counterfact", "counterfact-train.json")
ZSRE_TRAIN = data_file("zsre", "zsre-train.json")


def _fact(r: dict) -> str:
    return f"{r['prompt']} {r['target_new']}"


@pytest.fixture(scope="module")
def val_memory() -> tuple[EditMemory, list[dict]]:
    """60 validation records whose paraphrase carries a noise sentence, plus 140 other facts."""
    records = json.loads(VAL.read_text())
    noisy = [r for r in records if len(question_views(r["rephrase_prompt"])) == 2][:60]
    ids = {r["case_id"] for r in noisy}
    others = [r for r in records if r["case_id"] not in ids][:140]
    mem = EditMemory(None)
    mem.add([_fact(r) for r in noisy + others], namespace="val")
    return mem, noisy


def _routing(mem: EditMemory, records: list[dict], key: str, settings: RetrievalSettings
             ) -> dict[str, int]:
    out = {"own": 0, "other": 0, "nothing": 0}
    for r in records:
        sel = select(mem, r[key], settings, namespace="val")
        out["nothing" if sel.fact is None else "own" if sel.fact == _fact(r) else "other"] += 1
    return out


def test_question_views_split_off_a_noise_sentence_but_not_a_one_word_tail():
    q = "References\n\nExternal links \n Monte Sobretta. Porsche 911, developed by"
    assert question_views(q) == [q, "Porsche 911, developed by"]
    assert question_views("What does Frank Mantooth play? They play") == [
        "What does Frank Mantooth play? They play", "They play"]
    assert question_views("Where is it? Rome") == ["Where is it? Rome"]
    assert question_views("The Eiffel Tower is in") == ["The Eiffel Tower is in"]


def test_noisy_paraphrases_reach_their_own_edit_through_the_learned_gate(val_memory):
    mem, noisy = val_memory
    learned = _routing(mem, noisy, "rephrase_prompt", RetrievalSettings())
    assert learned["own"] >= 57, learned  # 95%
    # the last-sentence view is what rescues them: the whole question alone misses many
    whole = {"own": 0}
    for r in noisy:
        hits = mem.retrieve(r["rephrase_prompt"], k=1, threshold=0.5, namespace="val")
        whole["own"] += bool(hits) and hits[0].edit.text == _fact(r)
    assert whole["own"] < learned["own"]


def test_neighbourhood_questions_do_not_get_their_records_edit(val_memory):
    mem, noisy = val_memory
    learned = _routing(mem, noisy, "locality_prompt", RetrievalSettings())
    threshold = _routing(mem, noisy, "locality_prompt", RetrievalSettings(gate="threshold"))
    assert learned["own"] <= 1, learned
    # the cosine threshold alone places some edit for far more of them
    assert learned["own"] + learned["other"] < threshold["own"] + threshold["other"]


def test_rewrite_questions_keep_their_edit_under_both_gates(val_memory):
    mem, noisy = val_memory
    for gate in ("learned", "threshold"):
        assert _routing(mem, noisy, "prompt", RetrievalSettings(gate=gate))["own"] >= 58


def test_threshold_gate_places_every_candidate_above_the_threshold_best_first(val_memory):
    mem, noisy = val_memory
    q = noisy[0]["prompt"]
    sel = select(mem, q, RetrievalSettings(gate="threshold", top_k=3), namespace="val")
    assert sel.gate == "threshold" and all(j.relevance is None for j in sel.judged)
    placed = [sel.edit, *sel.distractors]
    assert 1 <= len(placed) <= 3 and all(h.score >= 0.5 for h in placed)
    assert [h.score for h in placed] == sorted((h.score for h in placed), reverse=True)


def test_learned_gate_decisions_are_recorded_for_every_candidate(val_memory):
    mem, noisy = val_memory
    sel = select(mem, noisy[0]["locality_prompt"], RetrievalSettings(), namespace="val")
    assert sel.gate == "learned" and sel.judged
    assert all(0.0 <= j.relevance <= 1.0 for j in sel.judged)
    placed = {h.edit.id for h in ([sel.edit] if sel.edit else []) + sel.distractors}
    assert placed == {j.hit.edit.id for j in sel.judged if j.kept}


def test_an_embedder_without_a_shipped_gate_falls_back_to_the_threshold_with_one_warning(
        caplog):
    from editkit.embedder import Embedder

    emb = Embedder()
    emb.name = "my-own-embedder"
    mem = EditMemory(None, embedder=emb)
    mem.add(["The Eiffel Tower is located in Rome."])
    with caplog.at_level(logging.WARNING, logger="editkit.retrieval"):
        a = select(mem, "The Eiffel Tower is located in", RetrievalSettings())
        b = select(mem, "Where is the Eiffel Tower?", RetrievalSettings())
    assert a.gate == b.gate == "threshold" and a.fact == "The Eiffel Tower is located in Rome."
    assert sum("my-own-embedder" in r.message for r in caplog.records) == 1


def test_gate_artifact_round_trips_and_bad_files_raise_artifact_errors(tmp_path):
    gate = shipped_gate("all-MiniLM-L6-v2")
    assert gate is not None and list(gate.artifact.features) == list(FEATURE_NAMES)
    assert gate.artifact.provenance["train_sha256"]  # provenance ships with the weights
    path = gate.save(tmp_path / "gate.json")
    again = RelevanceGate.load(path)
    assert again.artifact == gate.artifact
    q, f = "Porsche 911 GT1 is produced by", "Porsche 911, created by Honda"
    assert again.features(q, f, 0.8) == gate.features(q, f, 0.8)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid relevance gate"):
        RelevanceGate.load(tmp_path / "bad.json")
    raw = json.loads(path.read_text())
    raw["features"] = raw["features"][:-1]
    (tmp_path / "old.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="other features"):
        RelevanceGate.load(tmp_path / "old.json")
    with pytest.raises(ArtifactError, match="No relevance gate"):
        RelevanceGate.load(tmp_path / "missing.json")


def test_a_rare_word_the_fact_lacks_lowers_relevance():
    from editkit.retrieval.gate import Candidate

    gate = shipped_gate("all-MiniLM-L6-v2")
    fact = "Porsche 911, created by Honda"
    own = gate.probabilities("Porsche 911 is produced by", [Candidate(fact, 0.85)])[0]
    other = gate.probabilities("Porsche 911 GT1 is produced by", [Candidate(fact, 0.85)])[0]
    assert own > other


def test_train_gate_on_a_small_split_learns_a_gate_with_provenance(tmp_path):
    cfg = GateTrainConfig(train=str(TRAIN), val=str(VAL), zsre=str(ZSRE_TRAIN), zsre_records=100,
                          n_train=40, train_memory=120, n_val=30, val_memory=90,
                          zsre_fillers=100)
    gate = train_gate(cfg)
    prov = gate.artifact.provenance
    assert 0.0 < gate.threshold == min(prov["thresholds_per_validation_set"].values()) < 1.0
    assert prov["pairs"] > 40 and 0 < prov["positive_share"] < 1
    assert prov["trained_with"]["zsre"] == "zsre-train.json" and prov["zsre_sha256"]
    cf, zs = prov["validation_routing"]["counterfact_val"], prov["validation_routing"][
        "zsre_holdout"]
    assert cf["paraphrase"]["own"] >= 24  # of 30
    assert cf["neighbour"].get("own", 0) <= 3
    assert zs["paraphrase"]["own"] >= 16 and sum(zs["paraphrase"].values()) == 20
    assert RelevanceGate.load(gate.save(tmp_path / "g.json")).artifact == gate.artifact


def test_train_gate_refuses_impossible_sizes_with_a_clear_error():
    from editkit.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="n_train"):
        train_gate(GateTrainConfig(train=str(TRAIN), val=str(VAL), n_train=500,
                                   train_memory=100))
    with pytest.raises(InvalidInputError, match="is not a zsRE file"):
        train_gate(GateTrainConfig(train=str(TRAIN), val=str(VAL), zsre=str(VAL), n_train=20,
                                   train_memory=40))


def test_editable_lm_places_an_edit_only_for_questions_about_its_subject(lm):
    lm.clear()
    lm.edit(["The mother tongue of Danielle Darrieux is English.",
             "The Eiffel Tower is located in Rome."])
    p, edit, _ = lm.prompt("Last updated in 2019. The mother tongue of Danielle Darrieux is")
    assert edit is not None and p.fact == "The mother tongue of Danielle Darrieux is English."
    p, edit, others = lm.prompt("The mother tongue of Léon Blum is")  # same relation
    assert edit is None and others == [] and p.fact is None
    cosine_only = lm.retrieval.model_copy(update={"gate": "threshold", "threshold": 0.3})
    assert lm.select("The mother tongue of Léon Blum is", settings=cosine_only).edit is not None
    lm.clear()


def test_from_pretrained_refuses_an_unknown_gate_before_loading_anything():
    from editkit import EditableLM
    from editkit.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="gate"):
        EditableLM.from_pretrained(gate="maybe")


def test_question_form_rephrases_reach_their_edit_and_nq_questions_get_none():
    """zsRE's reworded questions ("Which business did Bioscience Horizons release?" for "What
    company published Bioscience Horizons?") from the hold-out the gate was calibrated on (the
    last 20% of zsRE train with distinct subjects), among CounterFact facts."""
    from editkit.train.gate import _load_zsre

    zs = _load_zsre(str(ZSRE_TRAIN))
    hold = zs[int(round(len(zs) * 0.8)):][:60]
    mem = EditMemory(None)
    mem.add([r.fact for r in hold] + [_fact(r) for r in json.loads(VAL.read_text())[:140]],
            namespace="zs")
    own = nq = 0
    for r in hold:
        own += select(mem, r.paraphrase, RetrievalSettings(), namespace="zs").fact == r.fact
        nq += select(mem, r.neighbour, RetrievalSettings(), namespace="zs").fact is not None
    assert own >= 55, own  # of 60
    assert nq <= 1, nq


def test_a_gate_file_rewritten_in_place_is_read_again(tmp_path):
    import os

    from editkit.embedder import DEFAULT_EMBEDDER
    from editkit.retrieval.gate import load_gate, shipped_gate

    gate = shipped_gate(DEFAULT_EMBEDDER)
    path = tmp_path / "gate.json"
    gate.save(path)
    first = load_gate(str(path))
    assert load_gate(str(path)) is first  # read once per version of the file
    text = path.read_text()
    threshold = f'"threshold": {first.artifact.threshold!r}'
    assert threshold in text
    path.write_text(text.replace(threshold, '"threshold": 0.99'))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_gate(str(path)).artifact.threshold == 0.99


def test_lm_retrieve_is_the_gated_policy_and_the_raw_search_says_it_is_raw(product_lm):
    # `lm.retrieve` used to return the memory's raw top-k: a similar edit about another subject
    # came back although `ask` would never place it. One public answer to "which edits apply".
    darrieux = "The mother tongue of Danielle Darrieux is English."
    product_lm.edit([darrieux, "The Eiffel Tower is located in Rome."])
    other = "What is the mother tongue of Thomas Joannes Stieltjes?"
    assert product_lm.retrieve(other) == []
    assert product_lm.select(other).edit is None
    assert darrieux in [h.edit.text for h in product_lm.retrieve_raw(other)]
    own = "What is the mother tongue of Danielle Darrieux?"
    placed = product_lm.retrieve(own)
    assert placed[0].edit.text == darrieux
    answer = product_lm.ask(own)
    assert [h.edit.id for h in placed] == [answer.edit.edit.id] + [
        d.edit.id for d in answer.distractors]


class SubjectWordsJudge:
    """A user's own relevance step (the `Judge` protocol): an edit is about the question when it
    shares one of the question's capitalised words. A stand-in for a cross-encoder that the
    tests can build without downloading one."""

    threshold = 0.5
    candidate_threshold = 0.0

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def probabilities(self, question, candidates):
        self.calls.append((question, [c.text for c in candidates]))
        names = {w.strip("?,.") for w in question.split() if w[:1].isupper()}
        return [1.0 if names & {w.strip("?,.") for w in c.text.split()} else 0.0
                for c in candidates]


def test_a_judge_of_your_own_decides_which_edits_apply_in_select_and_in_the_model(product_lm):
    from editkit.retrieval import Judge

    judge = SubjectWordsJudge()
    assert isinstance(judge, Judge)
    mem = EditMemory(None)
    mem.add(["The mother tongue of Danielle Darrieux is English.",
             "Thomas Joannes Stieltjes was born in Oslo."])
    q = "What is the mother tongue of Thomas Joannes Stieltjes?"
    shipped = select(mem, q, RetrievalSettings())
    own = select(mem, q, RetrievalSettings(judge=judge))
    assert judge.calls and judge.calls[0][0] == q
    # the judge's verdicts are the policy's: it keeps the Stieltjes edit, drops Darrieux's
    assert own.fact == "Thomas Joannes Stieltjes was born in Oslo."
    assert [j.hit.edit.text for j in own.judged if not j.kept] == [
        "The mother tongue of Danielle Darrieux is English."]
    assert shipped.gate == own.gate == "learned"
    # through the model: from_pretrained's gate= and the settings of a live model
    product_lm.edit(["The mother tongue of Danielle Darrieux is English."])
    q2 = "Which language did Danielle Darrieux speak first?"
    assert [h.edit.text for h in product_lm.retrieve(q2)] == [
        "The mother tongue of Danielle Darrieux is English."]
    product_lm.retrieval.judge = SubjectWordsJudge()
    assert product_lm.retrieve("What is the mother tongue of Sting?") == []
    assert product_lm.ask(q2, max_new_tokens=8).edit is not None


def test_a_judge_that_is_not_one_is_refused_with_a_message_naming_the_protocol():
    from pydantic import ValidationError

    from editkit import EditableLM
    from editkit.errors import InvalidInputError

    with pytest.raises(ValidationError, match="editkit.retrieval.Judge"):
        RetrievalSettings(judge=lambda q, c: [1.0] * len(c))
    with pytest.raises(ValidationError, match="gate='threshold' would ignore it"):
        RetrievalSettings(judge=SubjectWordsJudge(), gate="threshold")
    with pytest.raises(InvalidInputError, match="editkit.retrieval.Judge"):
        EditableLM.from_pretrained(gate=object())  # refused before any weights load
    settings = RetrievalSettings(judge=SubjectWordsJudge())
    assert "judge" not in settings.model_dump()  # reports carry settings, not the object
