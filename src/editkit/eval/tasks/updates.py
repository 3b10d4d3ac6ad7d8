"""`updates`: a fact edited again (A → B → C), asked through the memory, answers generated.

An app edits a fact again because it changed; the newer edit supersedes the older
(`retrieval/updates.py`). This task asks, per record, what a user then reads, the way the `wild`
task asks (the retrieval policy places the edits, `EditableLM.ask_many` with the product's
defaults generates, `matching.matches` judges containment):

- a chain of values for one slot: ROME CounterFact target_true → target_new → the target_new of
  another record with the same prompt template; zsRE answers[0] → alt; app facts
  (`eval.app_facts`, `EvalConfig.app_facts`) values 0 → 1 → 2;
- each record in its own namespace of the run's scratch memory, with a few unrelated fillers
  (other records' facts); CounterFact also stores 3 neighbourhood facts first (another subject,
  same relation: `prompt + target_true`), app facts a sibling entity's statement;
- twice: `keyless` (plain text, the store's slot judge decides; what users get by default) and
  `keyed` (every fact of the chain with one `key`: deterministic), metrics prefixed `keyed_`.

Per record (question rates averaged over its questions): `newest_shown` the answer contains the
newest value; `older_shown` it contains an older value of the chain and not the newest;
`newest_placed` the newest edit was placed as the fact; `superseded_ok` exactly one edit of the
chain is live after the adds; `false_supersession` the share of neighbour edits retired;
after forgetting the newest edit, `revived` the previous edit is live again and `restored` the
answer contains the previous value.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ... import metrics
from ...datasets import RomeCounterFactRecord, ZsreRecord
from ...errors import InvalidInputError
from ...layouts import Mode
from ..app_facts import AppFact, app_facts
from ..config import EvalConfig
from ..matching import matches, normalize
from ..registry import RunContext, Task, refuse_ike_self_copy, register_task, sample_distractors
from ..teacher_forcing import Probe
from .wild import DEFAULT_NEW_TOKENS
from .wild_questions import QUESTIONS

FILLERS = 3  # unrelated facts of other records stored beside each chain
NEIGHBOURS = 3  # CounterFact neighbourhood facts stored before the chain
VARIANTS = ("keyless", "keyed")
PROTOCOL = "updates: generated after A->B(->C), through the memory"
RATES = ("newest_shown", "older_shown", "newest_placed", "superseded_ok", "false_supersession",
         "revived", "restored")


@dataclass(frozen=True)
class AppRecord:
    """An app-style fact as a record of the run (`EvalConfig.app_facts`)."""

    case_id: str
    app: AppFact

    @property
    def fact(self) -> str:
        return self.app.statement(0)


@dataclass
class Chain:
    """One slot's values over time (oldest first), their facts, the questions, the slot key and
    the facts of nearby slots stored first (which must stay live)."""

    values: list[str]
    facts: list[str]
    questions: list[str]
    key: str
    neighbours: list[str]


def sibling_fact(app: AppFact) -> str | None:
    """The first statement about the sibling entity of `app.near_miss[0]` (same family and
    relation, another entity), with the first value; None if the sibling cannot be read off."""
    q, nm = app.questions[0], app.near_miss[0]
    at = q.lower().find(app.subject.lower())
    if at < 0:
        return None
    before, after = q[:at], q[at + len(app.subject):]
    if not (nm.startswith(before) and nm.endswith(after)) or len(nm) <= len(before) + len(after):
        return None
    sibling = nm[len(before):len(nm) - len(after)]
    s = app.statement(0)
    for a, b in ((app.subject, sibling), (app.subject[:1].upper() + app.subject[1:],
                                          sibling[:1].upper() + sibling[1:])):
        s = s.replace(a, b)
    return s if s != app.statement(0) else None


def chain_of(record: Any, third: str | None = None) -> Chain:
    """The chain of a ROME CounterFact (with `third`, another record's new object), zsRE or
    app record."""
    if isinstance(record, AppRecord):
        app = record.app
        return Chain(list(app.values), [app.statement(i) for i in range(len(app.values))],
                     list(app.questions + app.rewordings), app.key,
                     [s] if (s := sibling_fact(app)) else [])
    if isinstance(record, ZsreRecord):
        values = [record.answers[0], record.alt]
        return Chain(values, [f"{record.src} {v}" for v in values],
                     [record.src, record.rephrase], f"zsre/{record.case_id}", [])
    if isinstance(record, RomeCounterFactRecord):
        rw = record.requested_rewrite
        values = [rw.target_true.text, rw.target_new.text] + ([third] if third else [])
        natural = QUESTIONS.get(str(rw.relation_id))
        return Chain(values, [f"{rw.text} {v}." for v in values],
                     [rw.text] + ([natural[0].format(rw.subject)] if natural else [])
                     + list(record.paraphrase_prompts), f"counterfact/{record.case_id}",
                     [f"{p} {rw.target_true.text}." for p in record.neighborhood_prompts
                      [:NEIGHBOURS]])
    raise InvalidInputError(f"The updates task reads zsRE and ROME CounterFact records (and "
                            f"app facts), not {type(record).__name__}.")


def ask_through_memory(run: RunContext, asks: Sequence[tuple[str, str]], new_tokens: int
                       ) -> list[tuple[Any, Any]]:
    """(selection, answer) per (question, namespace): the retrieval policy places edits from the
    run's memory, then `ask_many` generates with the product's defaults (as `wild` does). Greedy
    answers are deterministic, so a question placed with the same edits is generated once."""
    lm, cfg = run.lm, run.cfg
    sel = [lm.select(q, ns, memory=run.memory, settings=run.retrieval) for q, ns in asks]
    edited = cfg.mode is not Mode.NONE
    prompts = [(q, cfg.mode if edited and s.edit is not None else Mode.NONE, s.fact,
                tuple(s.distractor_texts)) for (q, _), s in zip(asks, sel, strict=True)]
    unique = list(dict.fromkeys(prompts))
    answers = lm.ask_many([p[0] for p in unique], mode=[p[1] for p in unique],
                          facts=[p[2] for p in unique], distractors=[list(p[3]) for p in unique],
                          max_new_tokens=new_tokens)
    run.count(len(unique), sum(a.prompt_tokens for a in answers))
    by = dict(zip(unique, answers, strict=True))
    return [(s, by[p]) for s, p in zip(sel, prompts, strict=True)]


@register_task
class UpdatesTask(Task):
    name = "updates"
    formats = frozenset({"zsre", "counterfact-rome"})
    default_data = "counterfact/counterfact-rome-test.json"
    demo_file = None  # answers through EditableLM.ask_many, which uses lm.demos for IKE

    def skip_reason(self, record: Any) -> str | None:
        if isinstance(record, ZsreRecord):
            if not record.answers or not record.alt.strip():
                return "no old answer or no new answer"
            if normalize(record.answers[0]) == normalize(record.alt):
                return "old and new answer are the same"
        elif isinstance(record, RomeCounterFactRecord):
            rw = record.requested_rewrite
            if normalize(rw.target_true.text) == normalize(rw.target_new.text):
                return "old and new object are the same"
        return None

    def extra_records(self, cfg: EvalConfig) -> list[Any]:
        return [AppRecord(f"app:{f.key}", f) for f in app_facts("test", cfg.app_facts)]

    def prepare(self, run: RunContext, records: Sequence[Any], usable: Sequence[Any]) -> None:
        if run.cfg.distractors:
            raise InvalidInputError("The updates task answers through the memory; it stores "
                                    f"{FILLERS} fillers per record itself.")
        refuse_ike_self_copy(run.cfg, "the updates task", "EditableLM.ask_many")
        run.scratch_memory()
        news: dict[str, list[tuple[Any, str]]] = {}  # prompt template -> (case, new object)
        for r in usable:
            if isinstance(r, RomeCounterFactRecord):
                rw = r.requested_rewrite
                news.setdefault(rw.prompt, []).append((r.case_id, rw.target_new.text))
        run.state["news"] = news

    def third(self, run: RunContext, record: Any) -> str | None:
        """Another record's new object for the same prompt template, distinct from both values
        (neither contains the other as words), or None."""
        if not isinstance(record, RomeCounterFactRecord):
            return None
        rw = record.requested_rewrite
        own = [rw.target_true.text, rw.target_new.text]
        cands = sorted({v for cid, v in run.state["news"].get(rw.prompt, [])
                        if cid != record.case_id and not matches(v, own)
                        and not any(matches(o, [v]) for o in own)})
        return run.rng(record).choice(cands) if cands else None

    def new_tokens(self, cfg: EvalConfig) -> int:
        return cfg.max_new_tokens or DEFAULT_NEW_TOKENS

    def probes(self, record: Any) -> list[Probe]:
        chain = chain_of(record)
        return [Probe(kind="question", question=q, targets=[chain.values[-1]])
                for q in chain.questions]

    def settings(self, run: RunContext) -> dict[str, Any]:
        return {"retrieval_used": True, "max_new_tokens": self.new_tokens(run.cfg),
                "fillers": FILLERS, "variants": list(VARIANTS), "app_facts": run.cfg.app_facts,
                "layout": "EditableLM.ask default (chat='auto', default stop)",
                "matching": "contains value (normalised, whole words)"}

    def run_record(self, run: RunContext, record: Any) -> dict[str, Any]:
        mem = run.scratch_memory()
        chain = chain_of(record, self.third(run, record))
        others = sum(cid != record.case_id for cid, _ in run.pool)
        fillers = sample_distractors(run.pool, min(FILLERS, others), record.case_id,
                                     run.rng(record))
        stored: dict[str, dict[str, Any]] = {}
        for v in VARIANTS:
            ns = f"{run.namespace}/updates/{record.case_id}/{v}"
            filler_ids = [e.id for e in mem.add(fillers, ns, on_update="keep-both")] \
                if fillers else []
            near = chain.neighbours if v == "keyless" else []
            near_ids = [e.id for e in mem.add(near, ns, on_update="keep-both")] if near else []
            ids = [mem.add({"text": f, "key": chain.key} if v == "keyed" else f, ns)[0].id
                   for f in chain.facts]
            live = {e.id for e in mem.edits(ns)}
            history = {e.id for e in mem.edits(ns, history=True)}
            stored[v] = {"ns": ns, "chain": ids, "live": [i for i in ids if i in live],
                         "neighbours_superseded": sum(i not in live for i in near_ids),
                         "neighbours": len(near_ids),
                         "history_complete": set(ids + filler_ids + near_ids) <= history}
        k = self.new_tokens(run.cfg)
        asks = [(q, stored[v]["ns"]) for v in VARIANTS for q in chain.questions]
        before = ask_through_memory(run, asks, k)
        for v in VARIANTS:
            mem.forget(stored[v]["chain"][-1], stored[v]["ns"])
            stored[v]["revived"] = stored[v]["chain"][-2] in {
                e.id for e in mem.edits(stored[v]["ns"])}
        after = ask_through_memory(run, asks, k)
        row: dict[str, Any] = {"case_id": record.case_id, "values": chain.values,
                               "facts": chain.facts}
        newest, older, previous = chain.values[-1], chain.values[:-1], chain.values[-2]
        n = len(chain.questions)
        for j, v in enumerate(VARIANTS):
            p = "" if v == "keyless" else "keyed_"
            s = stored[v]
            detail = []
            by: dict[str, list[float]] = {}
            for q, (sel, a), (_, b) in zip(chain.questions, before[j * n:(j + 1) * n],
                                           after[j * n:(j + 1) * n], strict=True):
                d = {"question": q, "answer": a.text, "placed": sel.fact, "after_forget": b.text,
                     "newest_shown": matches(a.text, [newest]),
                     "older_shown": matches(a.text, older) and not matches(a.text, [newest]),
                     "newest_placed": sel.fact == chain.facts[-1],
                     "restored": matches(b.text, [previous])}
                detail.append(d)
                for key in ("newest_shown", "older_shown", "newest_placed", "restored"):
                    by.setdefault(key, []).append(float(d[key]))
            row.update({p + key: sum(x) / len(x) for key, x in by.items()})
            row[p + "superseded_ok"] = float(len(s["live"]) == 1)
            row[p + "revived"] = float(s["revived"])
            if s["neighbours"]:
                row[p + "false_supersession"] = s["neighbours_superseded"] / s["neighbours"]
            row[v] = {**{key: s[key] for key in ("chain", "live", "neighbours",
                                                 "neighbours_superseded", "history_complete")},
                      "probes": detail}
        return row

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
        out: dict[str, metrics.MetricValue] = {}
        for p, how in (("", "keyless (slot judge)"), ("keyed_", "keyed")):
            out.update(metrics.rate_scores(rows, [(p + k, p + k) for k in RATES],
                                           f"{PROTOCOL}, {how}"))
        return out
