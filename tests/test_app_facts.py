"""Invented app-style facts (editkit.eval.app_facts): disjoint splits, determinism, values that a
containment check cannot confuse, questions that do not give the answer away, near misses about a
sibling entity."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest

from editkit.eval import app_facts as module
from editkit.eval.app_facts import FAMILIES, SPLITS, UNRELATED_QUESTIONS, AppFact, app_facts

ALL = {split: app_facts(split) for split in SPLITS}
FACTS = [fact for split in SPLITS for fact in ALL[split]]


def _name(fact: AppFact) -> str:
    return fact.subject.removeprefix("the ").lower()


def _digest(facts: list[AppFact]) -> str:
    return hashlib.sha256(repr(facts).encode("utf-8")).hexdigest()


def test_each_split_has_enough_facts_and_every_family():
    assert len(FAMILIES) >= 10
    for split, least in (("train", 300), ("val", 100), ("test", 100)):
        assert len(ALL[split]) >= least
        assert {f.family for f in ALL[split]} == set(FAMILIES), split


def test_the_splits_are_disjoint_by_entity_name():
    names = {split: {_name(f) for f in ALL[split]} for split in SPLITS}
    assert not names["train"] & names["val"]
    assert not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    # stronger: no held-out entity is even mentioned in another split's texts (siblings included)
    for held_out in ("val", "test"):
        others = " ".join(t.lower() for f in FACTS if f not in ALL[held_out]
                          for t in f.statements + f.questions + f.rewordings + f.near_miss)
        assert not [n for n in names[held_out] if n in others], held_out


def test_generation_is_deterministic_across_two_calls():
    first = {split: app_facts(split) for split in SPLITS}
    module._build.cache_clear()
    module._stems.cache_clear()
    second = {split: app_facts(split) for split in SPLITS}
    assert first == second


def test_generation_does_not_depend_on_the_hash_seed():
    code = ("import hashlib; from editkit.eval.app_facts import app_facts, SPLITS; "
            "print(hashlib.sha256(repr([app_facts(s) for s in SPLITS]).encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    here = hashlib.sha256(repr([app_facts(s) for s in SPLITS]).encode()).hexdigest()
    assert out == here


def test_values_in_a_slot_are_distinct_and_none_is_a_substring_of_another():
    for fact in FACTS:
        low = [v.lower() for v in fact.values]
        assert len(low) == 3 and len(set(low)) == 3, fact.values
        for i, a in enumerate(low):
            assert not any(a in b for j, b in enumerate(low) if i != j), fact.values


@pytest.mark.parametrize("family", ["price", "hours", "shipping", "version", "policy",
                                    "capacity", "launch", "contact"])
def test_values_in_a_slot_are_of_one_kind(family):
    def shape(value: str) -> str:  # numbers and words of the value's own choice masked
        return re.sub(r"\d+", "#", value.split("@")[0] if "@" in value else value)

    for fact in (f for f in FACTS if f.family == family):
        shapes = {re.sub(r"^[A-Z][a-z]+ ", "M ", shape(v)) for v in fact.values}  # month names
        if "@" in fact.values[0]:
            assert all(v.endswith(("com", "io", "net", "org")) for v in fact.values)
        else:
            assert len(shapes) == 1, fact.values


def test_versions_move_forward():
    for fact in (f for f in FACTS if f.family == "version"):
        numbers = [tuple(int(p) for p in v.split(".")) for v in fact.values]
        assert numbers == sorted(numbers) and len(set(numbers)) == 3, fact.values


def test_statements_contain_their_value():
    for fact in FACTS:
        assert len(fact.statements) >= 2
        for form, template in enumerate(fact.statements):
            assert template.count("{value}") == 1, template
            for i, value in enumerate(fact.values):
                text = fact.statement(i, form)
                assert value in text and "{" not in text, text
                assert fact.subject.removeprefix("the ") in text, text


def test_questions_contain_no_value():
    for fact in FACTS:
        assert fact.questions and fact.rewordings and fact.near_miss
        asked = [q.lower() for q in fact.questions + fact.rewordings + fact.near_miss]
        assert all(q.endswith("?") for q in asked)
        assert not [(v, q) for v in fact.values for q in asked if v.lower() in q]


def test_rewordings_differ_from_the_direct_questions():
    for fact in FACTS:
        assert not set(fact.rewordings) & set(fact.questions), fact.key


def test_near_miss_questions_do_not_contain_the_stored_subject():
    for fact in FACTS:
        for question in fact.near_miss:
            assert _name(fact) not in question.lower(), (fact.subject, question)
            assert question not in fact.questions + fact.rewordings


def test_keys_are_unique_lowercase_slugs():
    keys = [f.key for f in FACTS]
    assert len(set(keys)) == len(keys)
    assert all(re.fullmatch(r"[a-z]+/[a-z0-9]+(?:-[a-z0-9]+)*", k) for k in keys)
    assert all(k.startswith(f.family + "/") for k, f in zip(keys, FACTS))


def test_n_gives_a_prefix_that_covers_every_family():
    assert app_facts("test", len(FAMILIES)) == ALL["test"][:len(FAMILIES)]
    assert {f.family for f in app_facts("val", len(FAMILIES))} == set(FAMILIES)
    assert app_facts("train", 0) == []
    with pytest.raises(ValueError):
        app_facts("test", len(ALL["test"]) + 1)
    with pytest.raises(ValueError):
        app_facts("dev")  # type: ignore[arg-type]


def test_unrelated_questions_are_everyday_and_mention_no_app_fact():
    assert len(UNRELATED_QUESTIONS) >= 20
    assert len(set(UNRELATED_QUESTIONS)) == len(UNRELATED_QUESTIONS)
    for question in UNRELATED_QUESTIONS:
        low = question.lower()
        assert question.endswith("?")
        assert not [f.key for f in FACTS if _name(f) in low or any(v.lower() in low
                                                                   for v in f.values)]
