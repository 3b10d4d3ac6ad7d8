"""MQuAKE hop by hop: answer a chain of one-hop queries, one retrieved edit per hop.

Why: asking the whole multi-hop question once (the `mquake` task, "single shot") scores 0 for the
135M default model; it does not chain facts inside one forward pass. MeLLo (Zhong et al., 2023) and
DeepEdit instead split the question into hops, retrieve the edit relevant to each hop from an edit
memory, answer the hop, and feed the answer into the next hop. This module does that on top of
`EditableLM` (`editkit.eval.hop_answering`):

1. all edits of a case go into a real `EditMemory` (in RAM), one namespace per case
   (`memory="case"`) or all evaluated cases together (`memory="all"`, a harder retrieval);
2. the chain of hops comes from MQuAKE's own decomposition (`new_single_hops`): the **oracle
   decomposition** setting, so numbers here are an upper bound on what retrieval + one-hop
   answering gives, not MQuAKE's end-to-end protocol;
3. per hop, the slot is filled with the previous hop's extracted answer (the gold subject for
   hop 1), the retrieval policy picks the hop's edit (top 1), the hop is answered in the chosen
   mode with greedy generation, and the extracted answer moves on.

It also reports the single-shot baseline on the same cases (the `mquake` task's
`answer_questions`: case accuracy with exact matching) and two scoring-based variants (a 2-way
choice between the new and the old object, like CounterFact's ES). Hops are judged with
`matching.matches` (the span contains the answer as whole words), since a hop's span is also the
next hop's subject.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ... import metrics
from ...datasets import MquakeChainRecord, load_chain_records
from ...errors import InvalidInputError
from ...layouts import Mode
from ...retrieval import EditMemory, RetrievalSettings
from ..hop_answering import HopForm, MultiHopAnswerer, hop_chain, store_facts, top_edit
from ..matching import matches
from ..registry import RunContext, Task, data_for, refuse_ike_self_copy, register_task
from ..report import Report, lm_settings, ptokens_label
from ..teacher_forcing import Probe
from .mquake import answer_questions

Progress = Callable[[int, int], None]


class MemoryScope(str, Enum):
    """Which edits share the retrieval namespace: one case's, or every evaluated case's."""

    CASE = "case"
    ALL = "all"


class MultiHopConfig(BaseModel):
    """What to run: data, mode, which variants, and the generation budget. Retrieval follows the
    lm's `RetrievalSettings` (threshold), recorded in the report."""

    model_config = ConfigDict(extra="forbid")
    data: Path
    mode: Mode = Mode.PTOKENS
    limit: int | None = Field(None, ge=1)
    forms: list[HopForm] = Field(default_factory=lambda: [HopForm.CLOZE, HopForm.QUESTION],
                                 min_length=1)
    memory: MemoryScope = MemoryScope.CASE
    max_new_tokens: int = Field(10, ge=1, le=64)
    single_shot: bool = Field(True, description="also the one-question, all-edits baseline")
    scoring: bool = Field(True, description="also the 2-way new-vs-old scoring variants")


class MultiHopReport(Report):
    """Metrics (value ×100, standard error, n), timing and per-case details; `save()` writes
    JSON."""

    def table(self) -> str:
        """A markdown table: metric, value, standard error, n, what it measures."""
        lines = metrics.markdown_rows(self.metrics)
        t = self.timing
        lines.append(f"| generations | {int(t['generations'])} | | | {t['seconds']:.0f} s |")
        return "\n".join(lines)


def _metric_table() -> list[tuple[str, str]]:
    """(name, what it measures) of every multi-hop metric, in table order."""
    out = [("single_shot_case", "single shot, any of 3 questions, exact match (MQuAKE)"),
           ("single_shot_question", "single shot, per question, exact match"),
           ("single_shot_score", "2-way score new vs old final answer, per question")]
    for f in HopForm:
        v = f.value
        out += [
            (f"{v}_chain", f"oracle decomposition, {v} hops, chained: final answer"),
            (f"{v}_chain_all_hops", "chained: every hop right"),
            (f"{v}_hop", "gold-input hops: hop accuracy (mean over hops)"),
            *[(f"{v}_hop{i}", f"gold-input hop {i}") for i in range(1, 5)],
            (f"{v}_retrieval", "gold-input hops: retrieved edit is the hop's edit"),
            (f"{v}_chain_retrieval", "chained hops: retrieved edit is the hop's edit"),
        ]
    return out + [
        ("cloze_hop_score", "gold-input cloze hops, 2-way score new vs old object"),
        ("cloze_chain_score", "every cloze hop prefers new over old (2-way, chance 1/2^hops)"),
    ]


METRICS: list[tuple[str, str]] = _metric_table()


def _score_new(lm: Any, mode: Mode, query: str, fact: str | None, new: str,
               old: str) -> float | None:
    """1.0 if the new answer's mean log-prob beats the old one's (ties count as failure);
    None for an unedited hop (new == old: nothing to choose)."""
    if new == old:
        return None
    r = lm.score(query, [new, old], mode=mode if fact else Mode.NONE, fact=fact,
                 chat=lm.layouts.chat)
    return float(r.scores[0].mean_logprob > r.scores[1].mean_logprob)


def evaluate_case(ans: MultiHopAnswerer, rec: MquakeChainRecord, cfg: MultiHopConfig,
                  namespace: str) -> dict[str, Any]:
    """All variants for one case; returns per-case rates (0/1 or means) and the details."""
    lm, mode = ans.lm, ans.mode
    hops = hop_chain(rec)
    row: dict[str, Any] = {"case_id": rec.case_id, "new_answer": rec.new_answer}
    ans.clear_cache()
    if cfg.single_shot:  # the `mquake` task's single-shot path, on this memory
        details = answer_questions(lm, mode, rec, ans.memory, namespace,
                                   k=max(len(rec.facts), 1), max_new_tokens=cfg.max_new_tokens,
                                   old_answer=rec.answer if cfg.scoring else None)
        ans.generations += len(details)
        ok = [float(d["correct"]) for d in details]
        row["single_shot_case"] = float(any(ok))
        row["single_shot_question"] = sum(ok) / len(ok)
        if cfg.scoring:
            row["single_shot_score"] = sum(d["score_new_wins"] for d in details) / len(details)
        row["single_shot"] = details
    for form in cfg.forms:
        f = form.value
        gold = ans.answer_hops([h.query(form) for h in hops], namespace,
                               [[h.query(HopForm.CLOZE)] for h in hops])
        gold_ok = [matches(a.span, h.answers) for a, h in zip(gold, hops, strict=True)]
        for i, ok in enumerate(gold_ok):
            row[f"{f}_hop{i + 1}"] = float(ok)
        row[f"{f}_hop"] = sum(gold_ok) / len(gold_ok)
        row[f"{f}_retrieval"] = (sum(a.fact == h.fact for a, h in zip(gold, hops, strict=True))
                                 / len(hops))
        chain = ans.chain(hops, form, namespace)
        chain_ok = [matches(a.span, h.answers)  # a chain may stop early: zip to its end
                    for a, h in zip(chain, hops, strict=False)]
        row[f"{f}_chain"] = float(len(chain) == len(hops) and chain_ok[-1])
        row[f"{f}_chain_all_hops"] = float(len(chain) == len(hops) and all(chain_ok))
        row[f"{f}_chain_retrieval"] = (sum(a.fact == h.fact
                                           for a, h in zip(chain, hops, strict=False))
                                       / len(hops))
        row[f"{f}_details"] = {
            "gold": [dict(a.__dict__, correct=ok, edit=h.fact)
                     for a, h, ok in zip(gold, hops, gold_ok, strict=True)],
            "chain": [dict(a.__dict__, correct=ok, edit=h.fact)
                      for a, h, ok in zip(chain, hops, chain_ok, strict=False)]}
        if cfg.scoring and form is HopForm.CLOZE:
            scored = [_score_new(lm, mode, a.query, a.fact if mode is not Mode.NONE else None,
                                 h.answer, h.old_answer) for a, h in zip(gold, hops, strict=True)]
            wins = [w for w in scored if w is not None]
            if wins:
                row["cloze_hop_score"] = sum(wins) / len(wins)
                row["cloze_chain_score"] = float(all(wins))
    return row


def run(lm: Any, config: MultiHopConfig | None = None, *, progress: Progress | None = None,
        **kwargs: Any) -> MultiHopReport:
    """Run the multi-hop evaluation: `run(lm, data=..., mode="prompt", limit=30)`."""
    cfg = config or MultiHopConfig(**kwargs)
    records = load_chain_records(cfg.data)
    records = records[: cfg.limit] if cfg.limit else records
    if not records:
        raise InvalidInputError("No MQuAKE cases to evaluate.")
    ans = MultiHopAnswerer(lm, cfg.mode, max_new_tokens=cfg.max_new_tokens)
    if cfg.memory is MemoryScope.ALL:
        ans.store([f for r in records for f in r.facts], "mquake-all")
    started = time.perf_counter()
    rows = []
    for n, rec in enumerate(records):
        ns = "mquake-all" if cfg.memory is MemoryScope.ALL else f"case-{rec.case_id}"
        if cfg.memory is MemoryScope.CASE:
            ans.store(rec.facts, ns)
        rows.append(evaluate_case(ans, rec, cfg, ns))
        if cfg.memory is MemoryScope.CASE:
            ans.memory.clear(ns)
        if progress:
            progress(n + 1, len(records))
    seconds = time.perf_counter() - started
    values = aggregate(rows)
    settings = {**lm_settings(lm), "retrieval_k": "1 per hop; single shot: the case's edits",
                "matching": "hops: whole-word containment; single shot: exact (normalised)"}
    return MultiHopReport(config=json.loads(cfg.model_dump_json()), model=lm.name,
                          ptokens=ptokens_label(lm), settings=settings, metrics=values,
                          timing={"seconds": seconds, "cases": float(len(rows)),
                                  "generations": float(ans.generations)},
                          records=rows)


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
    """The multi-hop metrics of per-case rows, each with what it measures."""
    values = metrics.rate_scores(rows, [(k, k) for k, _ in METRICS], "")
    proto = dict(METRICS)
    return {k: v.model_copy(update={"protocol": proto[k]}) for k, v in values.items()}


@register_task
class MquakeMultihopTask(Task):
    """`editkit eval --task mquake-multihop`: the hop-by-hop evaluation above on an MQuAKE file,
    each case's edits in its own namespace, both hop forms, single shot and scoring included
    (what `run` does with its defaults), reported like every other task."""

    name = "mquake-multihop"
    formats = frozenset({"mquake"})
    default_data = "mquake/mquake-hard-test.json"
    demo_file = None

    def probes(self, record: Any) -> list[Probe]:
        return [Probe(kind="multi_hop", question=q,
                      targets=[record.new_answer, *record.new_answer_alias])
                for q in record.questions]

    def prepare(self, run: RunContext, records: Sequence[Any], usable: Sequence[Any]) -> None:
        if run.cfg.memory_size or run.cfg.distractors:
            raise InvalidInputError("mquake-multihop answers each hop from a memory of the "
                                    "case's own edits; memory_size and distractors do not "
                                    "apply.")
        refuse_ike_self_copy(run.cfg, "mquake-multihop", "EditableLM.ask")
        path = data_for(run.cfg)
        run.state["chains"] = {r.case_id: r for r in load_chain_records(path)}
        run.state["config"] = MultiHopConfig(data=path, mode=run.cfg.mode,
                                             max_new_tokens=run.cfg.max_new_tokens or 10)
        run.state["answerer"] = MultiHopAnswerer(run.lm, run.cfg.mode,
                                                 max_new_tokens=run.cfg.max_new_tokens or 10)

    def settings(self, run: RunContext) -> dict[str, Any]:
        return {"retrieval_used": True,
                "retrieval_k": "1 per hop; single shot: the case's edits",
                "decomposition": "oracle (MQuAKE's new_single_hops)",
                "max_new_tokens": run.state["config"].max_new_tokens,
                "matching": "hops: whole-word containment; single shot: exact (normalised)"}

    def run_record(self, run: RunContext, record: Any) -> dict[str, Any]:
        ans: MultiHopAnswerer = run.state["answerer"]
        rec = run.state["chains"][record.case_id]
        ns = f"case-{rec.case_id}"
        before = ans.generations
        ans.store(rec.facts, ns)
        try:
            row = evaluate_case(ans, rec, run.state["config"], ns)
        finally:
            ans.memory.clear(ns)
        run.count(ans.generations - before, 0)
        return row

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
        return aggregate(rows)


def retrieval_stats(records: Sequence[MquakeChainRecord], memory: EditMemory,
                    scope: MemoryScope, threshold: float,
                    forms: Sequence[HopForm] = tuple(HopForm)) -> dict[str, metrics.MetricValue]:
    """Per-hop retrieval alone (no language model): with the gold subject in each hop's slot,
    is the single retrieved edit the hop's edit? Cheap enough for the whole file."""
    settings = RetrievalSettings(threshold=threshold)
    if scope is MemoryScope.ALL:
        store_facts(memory, [f for r in records for f in r.facts], "mquake-all")
    rows = []
    for rec in records:
        ns = "mquake-all" if scope is MemoryScope.ALL else f"case-{rec.case_id}"
        if scope is MemoryScope.CASE:
            store_facts(memory, rec.facts, ns)
        hops = [h for h in hop_chain(rec) if h.fact is not None]
        row = {}
        for form in forms:
            hits = [top_edit(memory, h.query(form), settings, ns) for h in hops]
            row[form.value] = sum(x is not None and x.edit.text == h.fact
                                  for x, h in zip(hits, hops, strict=True)) / len(hops)
        rows.append(row)
        if scope is MemoryScope.CASE:
            memory.clear(ns)
    return metrics.rate_scores(rows, [(f.value, f"retrieval_{f.value}_{scope.value}")
                                      for f in forms], "gold-input hop retrieval, top-1")
