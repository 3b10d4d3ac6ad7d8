"""MQuAKE, single shot (`mquake`): each multi-hop question asked once, with the case's edits
retrieved from a memory; MQuAKE's multi-hop accuracy is the headline.

Per case, its requested rewrites (plus `distractors` unrelated edits) go into an in-RAM memory
namespace; per question the retrieval policy (`EditableLM.select`) places the best hit as the fact
and the other hits as distractors, and the model answers greedily (`EditableLM.ask_many`: a
case's questions decoded together, each answer the one `ask` gives alone; the lm's chat
settings apply). The answer span (`matching.extract_answer`) must equal
`new_answer` or an alias (`matching.exact_match`, MQuAKE's exact match).

- `case_acc`: a case counts if **any** of its questions is answered right (MQuAKE's "multi-hop
  accuracy", README / `run_mello.ipynb`).
- `question_acc`: the share of a case's questions answered right, averaged over cases (not an
  MQuAKE metric; reported beside it).

This is the one single-shot path: `editkit.eval.tasks.mquake_multihop` calls `answer_questions`
for its single-shot baseline.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ... import metrics
from ...datasets import MquakeRecord
from ...errors import InvalidInputError
from ...layouts import Mode
from ...retrieval import EditStore, RetrievalSettings
from ..matching import exact_match, extract_answer
from ..registry import RunContext, Task, refuse_ike_self_copy, register_task
from ..teacher_forcing import Probe, eval_layout

CASE = "MQuAKE multi-hop acc: any question of the case, exact match"
QUESTION = "per question, exact match (not MQuAKE's metric)"


def answer_questions(lm: Any, mode: Mode, record: MquakeRecord, memory: EditStore,
                     namespace: str, *, k: int, max_new_tokens: int,
                     old_answer: str | None = None,
                     settings: RetrievalSettings | None = None) -> list[dict[str, Any]]:
    """Ask each of the case's questions once, the edits selected by the retrieval policy from
    `memory` (k candidates: the best is the fact, the rest distractors).

    Per question: the fact and distractors placed, the generation, the extracted answer, whether it
    is right (exact match), the legacy substring check, prompt tokens; with `old_answer`, also
    whether the new final answer outscores it (2-way scoring under the same prompt).
    """
    answers = [record.new_answer, *record.new_answer_alias]
    placed = []  # per question: (mode, fact, distractors, the retrieved fact)
    for q in record.questions:
        sel = lm.select(q, namespace, memory=memory, k=k, settings=settings)
        edited = sel.edit is not None and mode is not Mode.NONE
        placed.append((mode if edited else Mode.NONE, sel.fact if edited else None,
                       sel.distractor_texts if edited else None, sel.fact))
    # the case's questions decoded together: each answer is the one `lm.ask` gives alone
    generated = lm.ask_many(record.questions, mode=[m for m, _, _, _ in placed],
                            facts=[f for _, f, _, _ in placed],
                            distractors=[d for _, _, d, _ in placed],
                            max_new_tokens=max_new_tokens, **eval_layout(lm))
    out = []
    for q, (use, fact, dis, retrieved), a in zip(record.questions, placed, generated,
                                                   strict=True):
        span = extract_answer(a.text, (q,))
        d: dict[str, Any] = {"question": q, "fact": fact, "distractors": dis or [],
                             "retrieved": retrieved, "generation": a.text, "answer": span,
                             "correct": exact_match(span, answers),
                             "legacy_contains": metrics.contains_answer(a.text, answers),
                             "prompt_tokens": a.prompt_tokens}
        if old_answer is not None:
            r = lm.score(q, [record.new_answer, old_answer], mode=use, fact=fact,
                         distractors=dis, chat=lm.layouts.chat)
            d["score_new_wins"] = float(r.scores[0].mean_logprob > r.scores[1].mean_logprob)
        out.append(d)
    return out


DEFAULT_NEW_TOKENS = 16  # MQuAKE's answers are entity names: a short greedy generation


@register_task
class MquakeTask(Task):
    name = "mquake"
    default_data = "mquake/mquake-hard-test.json"
    demo_file = None

    def probes(self, record: MquakeRecord) -> list[Probe]:
        return [Probe(kind="multi_hop", question=q,
                      targets=[record.new_answer, *record.new_answer_alias])
                for q in record.questions]

    def prepare(self, run: RunContext, records: Sequence[Any], usable: Sequence[Any]) -> None:
        if run.cfg.memory_size:
            raise InvalidInputError("MQuAKE always answers through a memory of each case's own "
                                    "edits; memory_size does not apply (use distractors).")
        refuse_ike_self_copy(run.cfg, "MQuAKE", "EditableLM.ask")

    def settings(self, run: RunContext) -> dict[str, Any]:
        return {"retrieval_used": True, "retrieval_k": "case edits + distractors",
                "max_new_tokens": run.cfg.max_new_tokens or DEFAULT_NEW_TOKENS,
                "matching": "exact (normalised)"}

    def run_record(self, run: RunContext, record: MquakeRecord) -> dict[str, Any]:
        memory = run.scratch_memory()
        ns = f"case-{record.case_id}"
        memory.add(record.facts + run.distractors_for(record), namespace=ns,
                   on_update="keep-both")  # a case's edits and distractors are not updates
        try:
            details = answer_questions(run.lm, run.cfg.mode, record, memory, ns,
                                       k=len(record.facts) + run.cfg.distractors,
                                       max_new_tokens=run.cfg.max_new_tokens
                                       or DEFAULT_NEW_TOKENS,
                                       settings=run.retrieval)
        finally:
            memory.clear(ns)
        run.count(len(details), sum(d["prompt_tokens"] for d in details))
        ok = [float(d["correct"]) for d in details]
        return {"case_id": record.case_id, "case": float(any(ok)),
                "question": sum(ok) / len(ok), "probes": details}

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
        return {**metrics.rate_scores(rows, [("case", "case_acc")], CASE),
                **metrics.rate_scores(rows, [("question", "question_acc")], QUESTION)}
