"""Multi-hop answering (editkit.eval.hop_answering, editkit.eval.tasks.mquake_multihop): hop chains,
per-hop retrieval through the retrieval policy, answer matching, one single-shot path, and the
pipeline on real MQuAKE cases with the real default model."""
from __future__ import annotations

import json

import pytest

from conftest import data_file
from editkit import DatasetError, EditableLM, EditMemory, evaluate
from editkit.datasets import MquakeChainRecord, load_chain_records
from editkit.errors import InvalidInputError
from editkit.eval.hop_answering import HopForm, MultiHopAnswerer, hop_chain
from editkit.eval.matching import extract_answer, matches, normalize
from editkit.eval.tasks.mquake_multihop import (
    MemoryScope,
    MultiHopConfig,
    evaluate_case,
    retrieval_stats,
)
from editkit.loading import load_model
from editkit.ptokens import PTokens
from editkit.retrieval import RetrievalSettings, select

MQUAKE = data_file("mquake", "mquake-hard-test.json")


def _case() -> dict:
    """A 2-hop MQuAKE-shaped case (made up, small), both hops edited."""
    def rw(prompt, subject, new, old, question):
        return {"prompt": prompt, "subject": subject, "target_new": {"str": new},
                "target_true": {"str": old}, "question": question}

    def hop(question, cloze, answer, alias=()):
        return {"question": question, "cloze": cloze, "answer": answer,
                "answer_alias": list(alias)}

    return {
        "case_id": 7,
        "requested_rewrite": [
            rw("{} was founded by", "Acme Corp", "Ada Lovelace", "Wile E. Coyote",
               "Who founded Acme Corp?"),
            rw("{} is a citizen of", "Ada Lovelace", "Ireland", "United Kingdom",
               "What is the country of citizenship of Ada Lovelace?"),
        ],
        "questions": ["What is the country of citizenship of the founder of Acme Corp?"],
        "answer": "United States", "answer_alias": ["USA"],
        "new_answer": "Ireland", "new_answer_alias": ["Éire", "IE"],
        "single_hops": [hop("Who founded Acme Corp?", "Acme Corp was founded by",
                            "Wile E. Coyote"),
                        hop("What is the country of citizenship of Wile E. Coyote?",
                            "Wile E. Coyote is a citizen of", "United States", ["USA"])],
        "new_single_hops": [hop("Who founded Acme Corp?", "Acme Corp was founded by",
                                "Ada Lovelace", ["Augusta Ada King"]),
                            hop("What is the country of citizenship of Ada Lovelace?",
                                "Ada Lovelace is a citizen of", "Ireland", ["Éire", "IE"])],
    }


def test_hop_chain_substitutes_the_previous_answer():
    hops = hop_chain(MquakeChainRecord.model_validate(_case()))
    assert [h.subject for h in hops] == ["Acme Corp", "Ada Lovelace"]
    assert hops[1].question_template == "What is the country of citizenship of {}?"
    assert hops[1].cloze_template == "{} is a citizen of"
    assert hops[1].query(HopForm.CLOZE, "Grace Hopper") == "Grace Hopper is a citizen of"
    assert hops[1].query(HopForm.QUESTION) == ("What is the country of citizenship of "
                                               "Ada Lovelace?")
    assert hops[0].fact == "Acme Corp was founded by Ada Lovelace"
    assert (hops[1].old_answer, hops[1].answers) == ("United Kingdom", ["Ireland", "Éire", "IE"])


def test_hop_chain_refuses_a_broken_chain():
    case = _case()
    case["new_single_hops"][1]["question"] = "What is the country of citizenship of Bob?"
    case["new_single_hops"][1]["cloze"] = "Bob is a citizen of"
    with pytest.raises(DatasetError, match="subject 'Ada Lovelace' occurs 0 times"):
        hop_chain(MquakeChainRecord.model_validate(case))


def test_every_published_case_has_a_consistent_chain():
    records = load_chain_records(MQUAKE)
    assert len(records) == 329
    for rec in records:
        hops = hop_chain(rec)
        assert all(h.fact for h in hops)  # the hard set edits every hop
        assert hops[-1].answer == rec.new_answer


def test_normalize_and_match():
    assert normalize("  Tromsø, Norway! ") == "tromso norway"
    assert normalize("Éire & Co.") == "eire and co"
    assert matches("Potosi, Missouri", ["Potosi"])
    assert matches("the capital is eire", ["Éire"])
    assert matches("United States", ["the United States"])  # leading article dropped
    assert not matches("Dublin", ["Potosi"])
    assert not matches("Pieter", ["IE"])  # whole words only: no match inside a word
    assert not matches("", ["Potosi", "  "])


@pytest.mark.parametrize("generation, echoes, span", [
    ("Latvia.\n\nMukesh Ambani", (), "Latvia"),
    ("de Havilland\n\nIn this", (), "de Havilland"),
    ("The answer is: Potosi", (), "Potosi"),
    ("A: Brian Epstein", (), "Brian Epstein"),
    ("The answer is:\n\nMikhail Khodorkovsky", (), "Mikhail Khodorkovsky"),
    ("A: System 7 was developed by", ("System 7 was developed by",), ""),
    ("The capital of Latvia is Tromsø municipality.", ("The capital of Latvia is",),
     "Tromsø municipality"),
    ("Valve Corporation in 2011", (), "Valve Corporation"),
    ("Washington, D.C.", (), "Washington"),
    ("", (), ""),
])
def test_extract_answer(generation, echoes, span):
    assert extract_answer(generation, echoes) == span


class _FakeLM:
    """Answers a hop with the last word of the fact in context ('' without a fact); selects
    edits with the real retrieval policy (threshold 0.3)."""

    def __init__(self):
        self.asked = []
        self.settings = RetrievalSettings(threshold=0.3)
        self.layouts = type("Layouts", (), {"chat": False})()  # evaluation's fixed layout

    def select(self, question, namespace, *, memory, k):
        return select(memory, question, self.settings, namespace=namespace, k=k)

    def ask_many(self, queries, *, mode, facts, max_new_tokens, chat, stop):
        assert chat is False and stop == ()  # evaluation never takes ask's per-call defaults
        out = []
        for query, fact in zip(queries, facts, strict=True):
            self.asked.append((query, fact))
            text = fact.rsplit(" ", 1)[-1] + ".\nMore text" if fact else ""
            out.append(type("A", (), {"text": text, "prompt_tokens": 5})())
        return out


def test_chain_retrieves_one_edit_per_hop_and_feeds_answers_forward():
    rec = MquakeChainRecord.model_validate(_case())
    hops = hop_chain(rec)
    ans = MultiHopAnswerer(_FakeLM(), "prompt", memory=EditMemory(None))
    # generation stub; retrieval is the real policy over the real MiniLM memory
    ans.store([*rec.facts, "The capital of Ireland is Potosi",
               "Acme Corp is located in Springfield"], "ns")
    got = ans.chain(hops, HopForm.CLOZE, "ns")
    assert [a.fact for a in got] == [h.fact for h in hops]
    # hop 1's last word "Lovelace" is what fills hop 2's slot (the stub is not a perfect reader)
    assert [q for q, _ in ans.lm.asked] == ["Acme Corp was founded by",
                                           "Lovelace is a citizen of"]
    assert [a.span for a in got] == ["Lovelace", "Ireland"]
    assert matches(got[-1].span, [rec.new_answer, *rec.new_answer_alias])


def test_retrieval_only_stats_on_a_made_up_case():
    rec = MquakeChainRecord.model_validate(_case())
    with EditMemory(None) as mem:
        out = retrieval_stats([rec], mem, MemoryScope.CASE, threshold=0.3)
    assert out["retrieval_cloze_case"].value == 100.0
    assert out["retrieval_question_case"].value == 100.0


def test_multihop_single_shot_is_the_mquake_task_path(tiny_model_dir):
    """The single-shot baseline of the multi-hop runner and `evaluate` on MQuAKE ask the same
    prompts and judge them the same way (one code path)."""
    loaded = load_model(tiny_model_dir, device="cpu")
    pt = PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, m=2)
    lm = EditableLM(loaded, pt, EditMemory(None), mode="prompt")
    task = evaluate(lm, data=MQUAKE, mode="prompt", limit=1, max_new_tokens=3)
    rec = load_chain_records(MQUAKE)[0]
    cfg = MultiHopConfig(data=MQUAKE, mode="prompt", forms=["cloze"], scoring=False,
                         max_new_tokens=3)
    ans = MultiHopAnswerer(lm, "prompt", max_new_tokens=3)
    ans.store(rec.facts, "ns")
    row = evaluate_case(ans, rec, cfg, "ns")
    assert row["single_shot"] == task.records[0]["probes"]
    assert row["single_shot_case"] == task.metrics["case_acc"].value / 100


def test_real_cases_run_hop_by_hop(lm):
    """Two real MQuAKE cases, prompt mode, default model: every hop retrieves that hop's edit,
    and the first hop (a cloze whose answer is in the retrieved fact) is answered correctly."""
    records = json.loads(MQUAKE.read_text())[:2]
    cfg = MultiHopConfig(data=MQUAKE, mode="prompt", forms=["cloze"], single_shot=False,
                         scoring=False, max_new_tokens=6)
    ans = MultiHopAnswerer(lm, "prompt", max_new_tokens=6)
    for raw in records:
        rec = MquakeChainRecord.model_validate(raw)
        ns = f"case-{rec.case_id}"
        ans.store(rec.facts, ns)
        row = evaluate_case(ans, rec, cfg, ns)
        gold = row["cloze_details"]["gold"]
        assert [g["fact"] for g in gold] == [g["edit"] for g in gold] == rec.facts
        assert row["cloze_retrieval"] == 1.0
        assert row["cloze_hop1"] == 1.0, gold[0]
        assert gold[0]["prompt_tokens"] > len(gold[0]["query"].split())
        assert len(row["cloze_details"]["chain"]) >= 1


def test_mquake_multihop_is_a_registered_task_with_the_runners_numbers(tiny_model_dir):
    """`editkit eval --task mquake-multihop` (no data file: the shipped MQuAKE-hard) reports
    what the hop-by-hop runner reports for the same cases."""
    from editkit.eval.tasks.mquake_multihop import run

    loaded = load_model(tiny_model_dir, device="cpu")
    pt = PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, m=2)
    lm = EditableLM(loaded, pt, EditMemory(None), mode="prompt")
    task = evaluate(lm, task="mquake-multihop", mode="prompt", limit=1, max_new_tokens=3)
    script = run(lm, data=MQUAKE, mode="prompt", limit=1, max_new_tokens=3)
    assert task.metrics.keys() == script.metrics.keys()
    assert {k: v.value for k, v in task.metrics.items()} == {
        k: v.value for k, v in script.metrics.items()}
    with pytest.raises(InvalidInputError, match="memory_size"):
        evaluate(lm, task="mquake-multihop", mode="prompt", limit=1, distractors=2)
