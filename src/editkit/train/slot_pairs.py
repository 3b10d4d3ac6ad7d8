"""Pairs for the "same slot" judge (`train.slot`): (new fact, older fact, label, kind) mined from
CounterFact, zsRE, the app-style families (`editkit.eval.app_facts`) and ROME CounterFact (the
report). What each kind of pair is, and why reworded updates are only measured, is
`train.slot`'s docstring.
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

import numpy as np

from ..retrieval.gate import question_views


@dataclass
class Pair:
    new: str
    old: str
    label: int
    kind: str
    cosine: float = 0.0


def _cloze(prompt: str, obj: str) -> str:
    return f"{prompt.strip()} {obj.strip()}"


def _last(prompt: str) -> str:
    """A prompt without the unrelated sentence CounterFact puts before some paraphrases."""
    return question_views(prompt)[-1]


@dataclass
class _Fact:
    """One record as two stored facts of one slot: `new` (the edit) and `old` (the truth)."""

    subject: str
    old: str
    new: str
    true_object: str
    relation: str | None = None


def _template(text: str, subject: str) -> str | None:
    """A prompt's relation wording: the prompt with its subject taken out (None without it)."""
    return text.replace(subject, "{}").strip().casefold() if subject in text else None


def relations(records: Sequence[Any]) -> dict[str, str]:
    """CounterFact relation wordings grouped into relations: a record's prompt and its rephrase
    state one relation, so their templates are joined (union-find). Maps template -> relation."""
    parent: dict[str, str] = {}

    def root(t: str) -> str:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for r in records:
        a, b = _template(r.prompt, r.subject), _template(_last(r.rephrase_prompt), r.subject)
        for t in (a, b):
            if t is not None:
                root(t)
        if a is not None and b is not None:
            parent[root(a)] = root(b)
    return {t: root(t) for t in parent}


def _near_subject(subject: str, names: Sequence[str], rng: random.Random) -> str | None:
    """The subject with one word changed: its digits moved on by one ("Porsche 911" -> "Porsche
    912", "Nimbus X2" -> "Nimbus X3"), else a capitalised word swapped for another subject's
    ("Toko Yasuda" -> "Toko Lennon"); None for a one-word subject without digits."""
    parts = subject.split()
    digits = [i for i, w in enumerate(parts) if re.search(r"\d", w)]
    if digits:
        i = rng.choice(digits)
        j = max(k for k, c in enumerate(parts[i]) if c.isdigit())
        parts[i] = parts[i][:j] + str((int(parts[i][j]) + 1) % 10) + parts[i][j + 1:]
        return " ".join(parts)
    caps = [i for i, w in enumerate(parts) if w[:1].isupper()]
    if len(parts) < 2 or not caps or not names:
        return None
    i = rng.choice(caps)
    swap = rng.choice(names)
    if swap.casefold() == parts[i].casefold():
        return None
    parts[i] = swap
    return " ".join(parts)


def _nearest(emb: Any, facts: Sequence[_Fact], k: int, prefix: str) -> list[Pair]:
    """Each edit against the k nearest *other* records' true facts (a retrieval's candidates).
    The same subject counts only with a known other relation ("other_relation"); with the same
    or an unknown relation it is left out (a many-valued relation such as "twin city of", or
    the same slot)."""
    if k == 0 or len(facts) < 2:
        return []
    sims = emb.encode([f.new for f in facts]) @ emb.encode([f.old for f in facts]).T
    np.fill_diagonal(sims, -2.0)
    out = []
    for i, f in enumerate(facts):
        taken = 0
        for j in np.argsort(-sims[i]):
            g = facts[int(j)]
            same = f.subject.casefold() == g.subject.casefold()
            if same and (f.relation is None or g.relation in (None, f.relation)):
                continue
            out.append(Pair(f.new, g.old, 0, prefix + ("other_relation" if same else "nearest")))
            taken += 1
            if taken == k:
                break
    return out


def _dedupe(pairs: Sequence[Pair]) -> list[Pair]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in pairs:
        if (p.new, p.old) not in seen:
            seen.add((p.new, p.old))
            out.append(p)
    return out


def counterfact_pairs(records: Sequence[Any], emb: Any, nearest: int,
                      rng: random.Random | None = None,
                      linked: Sequence[Any] | None = None) -> list[Pair]:
    """Pairs from EasyEdit CounterFact records (see module doc). `linked`: the records whose
    prompt/rephrase templates group the wordings into relations (default `records`)."""
    rng = rng or random.Random(0)
    rel = relations(linked if linked is not None else records)
    out, facts = [], []
    by_subject: dict[str, list[_Fact]] = defaultdict(list)
    by_template: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        t = _template(r.prompt, r.subject)
        f = _Fact(r.subject, _cloze(r.prompt, r.ground_truth), _cloze(r.prompt, r.target_new),
                  r.ground_truth, rel.get(t) if t is not None else None)
        facts.append(f)
        by_subject[r.subject.casefold()].append(f)
        if t is not None and t.count("{}") == 1:
            by_template[t].append(r)
        reph, loc = _last(r.rephrase_prompt), r.locality_prompt
        out += [Pair(f.new, f.old, 1, "update"),
                Pair(_cloze(reph, r.target_new), f.old, 1, "update_reworded"),
                Pair(f.new, _cloze(reph, r.ground_truth), 1, "update_reworded"),
                Pair(f.new, _cloze(loc, r.locality_ground_truth), 0, "neighbour_true_object"),
                Pair(f.new, _cloze(loc, r.target_new), 0, "neighbour_same_object"),
                Pair(_cloze(loc, r.target_new), f.old, 0, "neighbour_edited")]
    for group in by_subject.values():  # same subject, another (known) relation
        for f in group:
            out += [Pair(f.new, g.old, 0, "other_relation") for g in group
                    if f.relation is not None and g.relation not in (None, f.relation)]
    known = [(t, r) for t, rs in by_template.items() for r in rs if rel.get(t) is not None]
    for f in facts:  # the subject with another relation's wording and object (synthesised)
        if f.relation is None or not known:
            continue
        t, o = rng.choice(known)
        if rel[t] == f.relation:
            continue
        text = o.prompt.replace(o.subject, f.subject)
        out += [Pair(f.new, _cloze(text, o.ground_truth), 0, "other_relation"),
                Pair(_cloze(text, o.target_new), f.old, 0, "other_relation")]
    names = [w for r in records for w in r.subject.split() if w[:1].isupper()]
    for r in records:  # a near-miss subject: one of its words changed ("X2" -> "X3")
        near = _near_subject(r.subject, names, rng)
        if near is None or r.subject not in r.prompt:
            continue
        other = r.prompt.replace(r.subject, near)
        new = _cloze(r.prompt, r.target_new)
        out += [Pair(new, _cloze(other, r.ground_truth), 0, "near_subject"),
                Pair(_cloze(other, r.target_new), _cloze(r.prompt, r.ground_truth), 0,
                     "near_subject")]
    for group in by_template.values():  # the same wording about another subject
        for r in group:
            others = [o for o in group if o.subject.casefold() != r.subject.casefold()]
            if not others:
                continue
            mine = set(r.subject.casefold().split())
            o = max(others, key=lambda o: (len(mine & set(o.subject.casefold().split())),
                                           rng.random()))
            new = _cloze(r.prompt, r.target_new)
            out += [Pair(new, _cloze(o.prompt, o.ground_truth), 0, "other_subject_same_wording"),
                    Pair(new, _cloze(o.prompt, r.target_new), 0, "other_subject_same_wording")]
    return _dedupe(out + _nearest(emb, facts, nearest, ""))


def zsre_pairs(records: Sequence[Any], emb: Any, nearest: int) -> list[Pair]:
    """Pairs from zsRE records (one per subject): question-form facts."""
    out, facts = [], []
    for r in records:
        f = _Fact(r.subject, _cloze(r.src, r.answers[0]), _cloze(r.src, r.alt), r.answers[0])
        facts.append(f)
        out += [Pair(f.new, f.old, 1, "zsre_update"),
                Pair(_cloze(r.rephrase, r.alt), f.old, 1, "zsre_update_reworded"),
                Pair(f.new, _cloze(r.loc, r.loc_ans), 0, "zsre_unrelated")]
    return _dedupe(out + _nearest(emb, facts, nearest, "zsre_"))


def _sibling(fact: Any, question: str, near_miss: str) -> tuple[str, str] | None:
    """(stored words, sibling words) that turn the fact's subject into the sibling entity a
    near-miss question asks about ("X2" -> "X5", "Denver" -> "Utrecht")."""
    a, b = question.split(), near_miss.split()
    ops = [op for op in SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    if len(ops) != 1 or ops[0][0] != "replace":
        return None
    old, new = " ".join(a[ops[0][1]:ops[0][2]]), " ".join(b[ops[0][3]:ops[0][4]])
    return (old, new) if re.search(rf"\b{re.escape(old)}\b", fact.subject) else None


def _swap(text: str, old: str, new: str) -> str:
    """`text` with its first `old` (a whole word sequence, either capitalisation) made `new`."""
    for o, n in ((old, new), (old[:1].upper() + old[1:], new[:1].upper() + new[1:])):
        out = re.sub(rf"\b{re.escape(o)}\b", lambda _m, n=n: n, text, count=1)
        if out != text:
            return out
    return text


def app_pairs(split: str, emb: Any, nearest: int, rng: random.Random) -> list[Pair]:
    """App-style pairs from `editkit.eval.app_facts` (its `split`); [] while it is not there.

    Same slot: a fact's values against each other in one wording ("app_update") and across
    wordings ("app_update_reworded"). Other slot: its sibling entities (the near-miss questions'
    subjects, "X2" -> "X5") with the same or another value ("app_sibling"), the family's other
    entities ("app_same_family"), the subject in another family's statement ("app_other_relation"),
    the nearest other facts by embedding ("app_nearest") and a few other families' facts."""
    try:
        from ..eval.app_facts import app_facts
    except ImportError:
        return []
    facts = list(app_facts(split))  # type: ignore[arg-type]
    by_family: dict[str, list[Any]] = defaultdict(list)
    for f in facts:
        by_family[f.family].append(f)
    out: list[Pair] = []
    for f in facts:
        forms = range(len(f.statements))
        out += [Pair(f.statement(i, a), f.statement(j, a), 1, "app_update")
                for a in forms for i, j in ((1, 0), (2, 1), (2, 0))]
        out += [Pair(f.statement(1, a), f.statement(0, b), 1, "app_update_reworded")
                for a in forms for b in forms if a != b]
        for q, nm in zip((f.questions[0], f.rewordings[0]), f.near_miss):
            sib = _sibling(f, q, nm)
            if sib is None:
                continue
            for a in forms:
                out += [Pair(f.statement(1, a), _swap(f.statement(1, a), *sib), 0, "app_sibling"),
                        Pair(f.statement(1, a), _swap(f.statement(0, a), *sib), 0, "app_sibling")]
            b = rng.choice(forms)
            out.append(Pair(f.statement(1, 0), _swap(f.statement(0, b), *sib), 0, "app_sibling"))
        family = [g for g in by_family[f.family] if g.key != f.key]
        for g in rng.sample(family, min(4, len(family))):
            a = rng.randrange(len(f.statements))
            out += [Pair(f.statement(1, a), g.statement(0, a % len(g.statements)), 0,
                         "app_same_family"),
                    Pair(f.statement(1, 0), g.statement(1, 0), 0, "app_same_family")]
        others = [g for g in facts if g.family != f.family]
        for g in rng.sample(others, min(3, len(others))):  # f's subject, g's relation and value
            text = _swap(g.statement(0, rng.randrange(len(g.statements))), g.subject, f.subject)
            if text != g.statement(0, 0) and f.subject.casefold() in text.casefold():
                out += [Pair(f.statement(1, 0), text, 0, "app_other_relation"),
                        Pair(text, f.statement(0, rng.randrange(len(f.statements))), 0,
                             "app_other_relation")]
        out.append(Pair(f.statement(1, 0), rng.choice(others).statement(0, 0), 0,
                        "app_other_family"))
    if nearest and len(facts) > 1:
        vecs = emb.encode([f.statement(0, 0) for f in facts])
        sims = vecs @ vecs.T
        for n, f in enumerate(facts):
            near = [int(j) for j in np.argsort(-sims[n]) if int(j) != n][:nearest]
            out += [Pair(f.statement(1, 0), facts[j].statement(0, 0), 0, "app_nearest")
                    for j in near]
    return _dedupe(out)


def rome_pairs(records: Sequence[Any]) -> list[Pair]:
    """ROME CounterFact: the edit's new fact against its true fact (and its paraphrases' true
    facts) = same slot; against each neighbourhood prompt with the true and the new object =
    other slot."""
    out = []
    for r in records:
        rw = r.requested_rewrite
        new, true = rw.target_new.text, rw.target_true.text
        out.append(Pair(_cloze(rw.text, new), _cloze(rw.text, true), 1, "update"))
        out += [Pair(_cloze(rw.text, new), _cloze(_last(p), true), 1, "update_reworded")
                for p in r.paraphrase_prompts]
        for n in r.neighborhood_prompts:
            out += [Pair(_cloze(rw.text, new), _cloze(n, true), 0, "neighbour_true_object"),
                    Pair(_cloze(rw.text, new), _cloze(n, new), 0, "neighbour_same_object")]
    return out
