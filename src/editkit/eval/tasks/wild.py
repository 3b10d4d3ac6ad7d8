"""`wild`: what a user reads. Questions in, answers generated to their natural end, then judged.

Teacher-forced scores (ES/PS/NS) compare two probabilities at the target's position; they leak the
target's content and length, and a model that "prefers" the new object by a thin margin often
says something else when it answers freely ("The Mirage of Model Editing", ACL 2025: the WILD
protocol). This task asks the way the product does:

- the question goes through `EditableLM.ask_many` with the product's own defaults: the layout
  `ask` picks (`chat="auto"`: a zsRE question in the chat template, a CounterFact sentence to
  complete inline), its default end of the answer (end of turn / first line), and room for a
  whole answer (`max_new_tokens`, 64 unless the config says otherwise);
- through the memory by default: every evaluated record's fact is stored (plus fillers up to
  `memory_size`), and the retrieval policy (candidates + relevance gate) decides, per question,
  which edit is placed; the same questions are also answered with the record's own edit given
  (the `given_*` rows), so retrieval loss and persuasion loss can be told apart;
- judged by `matching.matches`: the answer contains the new object as whole words after
  normalisation (case, accents, punctuation);
- optionally also graded by a judge model (`EvalConfig.judge_model`, `eval.answer_judge`):
  `judged_*` beside the containment rates, and how often the two agree;
- locality: an unrelated question's answer through the memory equals the unedited model's answer
  to it (normalised), i.e. the edits changed nothing there.

Records: zsRE (edit question `src`, rephrased question, the `loc` question as the unrelated one)
and ROME CounterFact (rewrite prompt, its paraphrases, two neighbourhood prompts).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ... import metrics
from ...datasets import RomeCounterFactRecord, ZsreRecord, one_edit_per_fact
from ...errors import InvalidInputError
from ...layouts import Mode
from ..answer_judge import AnswerJudge
from ..config import EvalConfig
from ..matching import matches, normalize
from ..registry import RunContext, Task, refuse_ike_self_copy, register_task
from ..teacher_forced_task import fill_memory
from ..teacher_forcing import Probe

DEFAULT_NEW_TOKENS = 64
"""Room for a whole answer: a chat reply that restates the question runs 15-40 tokens here."""
PROTOCOL = "wild: generated, contains new object"
LOCALITY = "wild: unrelated answer unchanged"
JUDGED = "wild: generated, judge model says it gives the new object"


@dataclass
class WildItem:
    """One record as questions: the edit's own question, rephrasings, unrelated questions."""

    fact: str
    new: str
    edit: list[str]
    rephrase: list[str]
    unrelated: list[str]


def wild_item(record: Any) -> WildItem:
    """The questions of a zsRE or ROME CounterFact record."""
    if isinstance(record, ZsreRecord):
        loc = record.loc.removeprefix("nq question:").strip()
        loc = loc[:1].upper() + loc[1:] + ("" if loc.endswith("?") else "?")
        return WildItem(record.fact, record.alt, [record.src], [record.rephrase], [loc])
    if isinstance(record, RomeCounterFactRecord):
        rw = record.requested_rewrite
        return WildItem(record.fact, rw.target_new.text, [rw.text],
                        list(record.paraphrase_prompts), list(record.neighborhood_prompts[:2]))
    raise InvalidInputError(f"The wild task reads zsRE and ROME CounterFact records, not "
                            f"{type(record).__name__}.")


@register_task
class WildTask(Task):
    name = "wild"
    formats = frozenset({"zsre", "counterfact-rome"})
    default_data = "zsre/zsre-test.json"
    judges_answers = True
    demo_file = None  # answers through EditableLM.ask_many, which uses lm.demos for IKE

    def item(self, record: Any) -> WildItem:
        """The record as questions (`wild_item`; `wild-questions` asks CounterFact otherwise)."""
        return wild_item(record)

    def skip_reason(self, record: Any) -> str | None:
        if isinstance(record, ZsreRecord) and not record.alt.strip():
            return "empty alt (no new answer to edit toward)"
        return None

    def probes(self, record: Any) -> list[Probe]:
        item = self.item(record)
        return ([Probe(kind="edit", question=q, targets=[item.new]) for q in item.edit]
                + [Probe(kind="rephrase", question=q, targets=[item.new])
                   for q in item.rephrase]
                + [Probe(kind="unrelated", question=q, targets=[]) for q in item.unrelated])

    def setting_records(self, cfg: EvalConfig, usable: Sequence[Any]
                        ) -> tuple[list[Any], list[tuple[Any, str]]]:
        return one_edit_per_fact(usable)  # stored together, so one edit per fact

    def prepare(self, run: RunContext, records: Sequence[Any], usable: Sequence[Any]) -> None:
        if run.cfg.distractors:
            raise InvalidInputError("The wild task answers through the memory, where the "
                                    "retrieval policy places the distractors; use memory_size.")
        refuse_ike_self_copy(run.cfg, "the wild task", "EditableLM.ask_many")
        if run.cfg.judge_model is not None:  # loaded (and a bad model refused) before filling
            run.state["judge"] = AnswerJudge.load(run.cfg.judge_model, run.lm)
        fill_memory(run.scratch_memory(), records, usable,
                    max(run.cfg.memory_size, len(records)), run.namespace)

    def new_tokens(self, cfg: EvalConfig) -> int:
        return cfg.max_new_tokens or DEFAULT_NEW_TOKENS

    def settings(self, run: RunContext) -> dict[str, Any]:
        return {"retrieval_used": True, "memory_size": len(run.memory.edits(run.namespace))
                if run.memory is not None else 0,
                "max_new_tokens": self.new_tokens(run.cfg), "layout": "EditableLM.ask default "
                "(chat='auto', default stop)", "matching": "contains new object (normalised, "
                "whole words)", "locality": "answer equals the unedited answer (normalised)",
                "judge": judge.settings() if (judge := run.state.get("judge")) else None}

    def run_record(self, run: RunContext, record: Any) -> dict[str, Any]:
        lm, cfg = run.lm, run.cfg
        probes = self.probes(record)
        item = self.item(record)
        questions = [p.question for p in probes]
        n, k = len(questions), self.new_tokens(cfg)
        edited = cfg.mode is not Mode.NONE
        # Through the memory (the product's path) for every question; the record's own edit
        # given (oracle) for the edit and rephrased questions; unedited only for the unrelated
        # ones, whose answer through the memory must equal it. One batch, nothing asked twice.
        memory = [lm.select(q, run.namespace, memory=run.memory, settings=run.retrieval)
                  for q in questions]
        edit_qs = [p.question for p in probes if p.kind != "unrelated"] if cfg.oracle else []
        unrelated = [p.question for p in probes if p.kind == "unrelated"]
        asked = lm.ask_many(
            questions + edit_qs + unrelated,
            mode=[cfg.mode if edited and s.edit is not None else Mode.NONE for s in memory]
            + [cfg.mode] * len(edit_qs) + [Mode.NONE] * len(unrelated),
            facts=[s.fact for s in memory] + [item.fact if edited else None] * len(edit_qs)
            + [None] * len(unrelated),
            distractors=[s.distractor_texts for s in memory]
            + [None] * (len(edit_qs) + len(unrelated)),
            max_new_tokens=k)
        via = asked[:n]
        given = iter(asked[n:n + len(edit_qs)])
        plain = iter(asked[n + len(edit_qs):])
        run.count(n, sum(a.prompt_tokens for a in via))
        row: dict[str, Any] = {"case_id": record.case_id}
        detail = []
        by: dict[str, list[float]] = {}
        for p, s, a in zip(probes, memory, via, strict=True):
            d: dict[str, Any] = {"kind": p.kind, "question": p.question, "answer": a.text,
                                 "placed": s.fact, "own_edit": s.fact == item.fact}
            if p.kind == "unrelated":
                u = next(plain)
                same = normalize(a.text) == normalize(u.text)
                d.update(unedited=u.text, unchanged=same)
                by.setdefault("unrelated", []).append(float(same))
            else:
                d.update(target=item.new, hit=matches(a.text, [item.new]),
                         empty=not a.text.strip())
                by.setdefault(p.kind, []).append(float(d["hit"]))
                by.setdefault(f"reached_{p.kind}", []).append(float(d["own_edit"]))
                by.setdefault("empty", []).append(float(d["empty"]))
                if cfg.oracle:
                    g = next(given)
                    d.update(given=g.text, given_hit=matches(g.text, [item.new]))
                    by.setdefault(f"given_{p.kind}", []).append(float(d["given_hit"]))
            detail.append(d)
        if (judge := run.state.get("judge")) is not None:
            judge_answers(judge, [d for d in detail if d["kind"] != "unrelated"], by)
        row.update({key: sum(v) / len(v) for key, v in by.items()})
        row["probes"] = detail
        return row

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
        return {
            **metrics.rate_scores(rows, [("edit", "edit"), ("rephrase", "rephrase")], PROTOCOL),
            **metrics.rate_scores(rows, [("unrelated", "unrelated_unchanged")], LOCALITY),
            **metrics.rate_scores(rows, [("given_edit", "given_edit"),
                                         ("given_rephrase", "given_rephrase")],
                                  PROTOCOL + ", own edit given"),
            **metrics.rate_scores(rows, [("reached_edit", "reached_edit"),
                                         ("reached_rephrase", "reached_rephrase")],
                                  "memory routing: own edit placed"),
            **metrics.rate_scores(rows, [("empty", "empty_answers")], "wild: empty answer"),
            **metrics.rate_scores(rows, [("judged_edit", "judged_edit"),
                                         ("judged_rephrase", "judged_rephrase")], JUDGED),
            **metrics.rate_scores(rows, [("judge_agrees", "judge_agrees")],
                                  "wild: judge model agrees with containment"),
        }


def judge_answers(judge: AnswerJudge, detail: Sequence[dict[str, Any]],
                  by: dict[str, list[float]]) -> None:
    """Grade the edit and rephrased answers (through the memory) with the judge model: each
    probe's `judge_p` and `judged`, and the record's `judged_*` and `judge_agrees` rates."""
    ps = judge.p_yes([(d["question"], d["target"], d["answer"]) for d in detail])
    for d, p in zip(detail, ps, strict=True):
        d.update(judge_p=p, judged=p >= 0.5)
        by.setdefault(f"judged_{d['kind']}", []).append(float(d["judged"]))
        by.setdefault("judge_agrees", []).append(float(d["judged"] == d["hit"]))
