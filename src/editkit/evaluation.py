"""Evaluation: run a mode over a published data set and report the field's metrics.

Each record becomes one shared context (demonstrations, fact, distractors) and a list of probes
(question + targets). All probes of a context are scored in one packed forward pass
(`inference.score_packed`), so IKE's ~900-token prefix is computed once per record, not once per
prompt and target. MQuAKE is judged on greedy generations instead.
"""
from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import metrics
from .datasets import (
    CounterFactRecord,
    MquakeRecord,
    RomeCounterFactRecord,
    ZsreRecord,
    load_counterfact,
    load_records,
)
from .errors import InvalidInputError
from .fileio import atomic_write
from .ike import DemoStore, default_train_file
from .runtime.scoring import ScoreItem, TargetScore, score_packed
from .layouts import Mode
from .memory import EditMemory

Progress = Callable[[int, int], None]


class EvalConfig(BaseModel):
    """What to evaluate. `memory_size` > 0 answers every question through retrieval from a memory
    holding that many edits (the evaluated records' facts plus unrelated fillers)."""

    model_config = ConfigDict(extra="forbid")
    data: Path
    mode: Mode = Mode.PTOKENS
    limit: int | None = Field(None, ge=1)
    distractors: int = Field(0, ge=0, le=1000)
    memory_size: int = Field(0, ge=0, le=1_000_000)
    demos: Path | None = None
    seed: int = 0
    max_new_tokens: int = Field(16, ge=1, le=256, description="MQuAKE generations")


class Probe(BaseModel):
    kind: str
    question: str
    targets: list[str]  # ROME: [new, true]; token accuracy: [target]


class Report(BaseModel):
    """What every evaluation report holds: config, model, metrics, timing, per-record details."""

    config: dict[str, Any]
    model: str
    ptokens: str
    metrics: dict[str, metrics.MetricValue]
    timing: dict[str, float]
    records: list[dict[str, Any]] = Field(repr=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the full report as JSON, atomically."""
        return atomic_write(path, lambda p: p.write_text(self.model_dump_json(indent=1)))


class EvalReport(Report):
    """Metrics (lm-eval style table), timing and per-record details; `save()` writes JSON."""

    format: str

    def table(self) -> str:
        """A markdown table: metric, value, stderr, n, protocol."""
        lines = metrics.markdown_rows(self.metrics)
        t = self.timing
        lines.append(f"| prompt tokens / question | {t['prompt_tokens_per_question']:.0f} | | "
                     f"{int(t['questions'])} | |")
        lines.append(f"| ms / question | {t['ms_per_question']:.1f} | | {int(t['questions'])} | |")
        return "\n".join(lines)


def probes_for(record: Any) -> list[Probe]:
    """The questions asked about one record, by data format."""
    if isinstance(record, RomeCounterFactRecord):
        rw = record.requested_rewrite
        tg = [rw.target_new.text, rw.target_true.text]
        return ([Probe(kind="rewrite", question=rw.text, targets=tg)]
                + [Probe(kind="paraphrase", question=q, targets=tg)
                   for q in record.paraphrase_prompts]
                + [Probe(kind="neighborhood", question=q, targets=tg)
                   for q in record.neighborhood_prompts])
    if isinstance(record, CounterFactRecord):
        return [Probe(kind="rewrite", question=record.prompt, targets=[record.target_new]),
                Probe(kind="rephrase", question=record.rephrase_prompt,
                      targets=[record.target_new]),
                Probe(kind="locality", question=record.locality_prompt,
                      targets=[record.locality_ground_truth])]
    if isinstance(record, ZsreRecord):
        out = [Probe(kind="edit", question=record.src, targets=[record.alt]),
               Probe(kind="rephrase", question=record.rephrase, targets=[record.alt]),
               Probe(kind="locality", question=record.loc, targets=[record.loc_ans])]
        if record.portability is not None:
            out.append(Probe(kind="portability", question=record.portability.new_question,
                             targets=[record.portability.new_answer]))
        return out
    raise InvalidInputError(f"No probes for {type(record).__name__}")


class _Scorer:
    """Scores probes of one (fact, distractors) context with the EditableLM's parts."""

    def __init__(self, lm: Any, mode: Mode, demos: DemoStore | None) -> None:
        self.lm, self.mode, self.demos = lm, mode, demos
        self.layouts = lm.layouts
        self.bos = self.layouts.bos

    def context_ids(self, fact: str | None, distractors: Sequence[str],
                    exclude: Sequence[int]) -> list[int]:
        demos = ""
        if self.mode is Mode.IKE and fact is not None:
            assert self.demos is not None
            demos = self.demos.retrieve(fact, exclude=exclude).text
        ctx, _ = self.layouts.context(self.mode, fact, distractors, demos)
        return self.bos + ctx

    def score(self, prefix: list[int], probes: Sequence[Probe], edited: bool,
              mode: Mode | None = None) -> tuple[list[list[TargetScore]], list[list[list[int]]],
                                                 list[int]]:
        mode = mode or self.mode
        items, targets, q_lens = [], [], []
        for p in probes:
            q = self.layouts.text_ids(self.layouts.question_text(mode, p.question, edited))
            t = [self.layouts.target_ids(x) for x in p.targets]
            items.append(ScoreItem(question=q, targets=t))
            targets.append(t)
            q_lens.append(len(prefix) + len(q))
        pt = self.lm.ptokens if mode is Mode.PTOKENS else None
        return score_packed(self.lm.model, pt, prefix, items), targets, q_lens


def _record_metrics(fmt: str, probes: Sequence[Probe], scores: Sequence[list[TargetScore]],
                    targets: Sequence[list[list[int]]],
                    reference: dict[int, list[int]]) -> dict[str, Any]:
    """Per-record values: ROME success/magnitude means, or token accuracies."""
    detail: list[dict[str, Any]] = []
    by_kind: dict[str, list[float]] = {}
    mags: dict[str, list[float]] = {}
    for i, (p, s, t) in enumerate(zip(probes, scores, targets)):
        if fmt == "counterfact-rome":
            nll_new, nll_true = -s[0].mean_logprob, -s[1].mean_logprob
            nb = p.kind == "neighborhood"
            by_kind.setdefault(p.kind, []).append(metrics.rome_success(nll_new, nll_true,
                                                                       neighbour=nb))
            mags.setdefault(p.kind, []).append(metrics.rome_magnitude(nll_new, nll_true,
                                                                      neighbour=nb))
            detail.append({"kind": p.kind, "question": p.question, "nll_new": nll_new,
                           "nll_true": nll_true})
        else:
            if fmt == "counterfact" and p.kind == "locality":
                acc = metrics.unchanged_share(s[0].argmax, reference[i])
            else:
                acc = metrics.token_accuracy(s[0].argmax, t[0])
            by_kind.setdefault(p.kind, []).append(acc)
            detail.append({"kind": p.kind, "question": p.question, "acc": acc,
                           "mean_logprob": s[0].mean_logprob})
    row: dict[str, Any] = {k: sum(v) / len(v) for k, v in by_kind.items()}
    if fmt == "counterfact-rome":
        row = {"es": row["rewrite"], "ps": row["paraphrase"], "ns": row["neighborhood"],
               "em": _mean(mags["rewrite"]), "pm": _mean(mags["paraphrase"]),
               "nm": _mean(mags["neighborhood"])}
    row["probes"] = detail
    return row


def _mean(v: Sequence[float]) -> float:
    return sum(v) / len(v)


def _aggregate(fmt: str, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
    if fmt == "counterfact-rome":
        return metrics.rome_scores(rows)
    if fmt == "counterfact":
        return metrics.rate_scores(rows, [("rewrite", "rewrite_acc"),
                                          ("rephrase", "rephrase_acc"),
                                          ("locality", "locality")], "easyedit-token")
    return metrics.rate_scores(rows, [("edit", "edit_acc"), ("rephrase", "rephrase_acc"),
                                      ("locality", "locality_acc"),
                                      ("portability", "portability_acc")], "zsre-token")


def _distractor_pool(records: Sequence[Any]) -> list[tuple[int, str]]:
    pool = []
    for r in records:
        facts = r.facts if isinstance(r, MquakeRecord) else [r.fact]
        pool += [(r.case_id, f) for f in facts]
    return pool


def _sample_distractors(pool: Sequence[tuple[int, str]], k: int, case_id: int,
                        rng: random.Random) -> list[str]:
    """k facts of other records (never the record's own), in random order."""
    if k == 0:
        return []
    others = [f for cid, f in pool if cid != case_id]
    if k > len(others):
        raise InvalidInputError(f"{k} distractors asked, only {len(others)} other facts exist.")
    return rng.sample(others, k)


def evaluate(lm: Any, config: EvalConfig | None = None, *, progress: Progress | None = None,
             **kwargs: Any) -> EvalReport:
    """Evaluate an EditableLM on a data file: `evaluate(lm, data=..., mode="ike", limit=50)`."""
    cfg = config or EvalConfig(**kwargs)
    fmt, all_records = load_records(cfg.data)
    records = all_records[: cfg.limit] if cfg.limit else all_records
    pool = _distractor_pool(all_records)
    demos = None
    if cfg.mode is Mode.IKE and fmt != "mquake":
        demos = (DemoStore.from_file(cfg.demos) if cfg.demos else
                 DemoStore.default("zsre" if fmt == "zsre" else "counterfact"))
    started = time.perf_counter()
    if fmt == "mquake":
        rows, questions, prompt_tokens = _evaluate_mquake(lm, cfg, records, pool, progress)
        metric_values = metrics.rate_scores(rows, [("multi_hop", "multi_hop_acc"),
                                                   ("case", "case_acc")], "mquake-generation")
    else:
        rows, questions, prompt_tokens = _evaluate_scored(lm, cfg, fmt, records, all_records,
                                                          pool, demos, progress)
        metric_values = _aggregate(fmt, rows)
    seconds = time.perf_counter() - started
    timing = {"seconds": seconds, "records": float(len(records)), "questions": float(questions),
              "ms_per_question": 1000 * seconds / max(questions, 1),
              "prompt_tokens_per_question": prompt_tokens / max(questions, 1)}
    config_dump = json.loads(cfg.model_dump_json())
    return EvalReport(config=config_dump, format=fmt, model=lm.name, ptokens=lm.ptokens_source,
                      metrics=metric_values, timing=timing, records=list(rows))


def _fill_memory(memory: EditMemory, records: Sequence[Any], all_records: Sequence[Any],
                 size: int) -> None:
    """Store the evaluated facts plus unrelated fillers until the memory holds `size` edits."""
    facts = [r.fact for r in records]
    if size < len(facts):
        raise InvalidInputError(f"memory_size={size} is smaller than the {len(facts)} records "
                                "evaluated; every evaluated fact must be in memory.")
    seen = set(facts)
    fillers = [r.fact for r in all_records if r.fact not in seen]
    if len(facts) + len(fillers) < size:
        extra = load_counterfact(default_train_file())  # records only: no key embedding
        fillers += [r.fact for r in extra if r.fact not in seen]
    memory.add(facts + fillers[: size - len(facts)], namespace="eval")


def _evaluate_scored(lm: Any, cfg: EvalConfig, fmt: str, records: Sequence[Any],
                     all_records: Sequence[Any], pool: Sequence[tuple[int, str]],
                     demos: DemoStore | None, progress: Progress | None,
                     ) -> tuple[list[dict[str, Any]], int, int]:
    scorer = _Scorer(lm, cfg.mode, demos)
    memory = None
    if cfg.memory_size:
        memory = EditMemory(None, embedder=getattr(lm.memory, "embedder", None))
        _fill_memory(memory, records, all_records, cfg.memory_size)
    rows, questions, prompt_tokens = [], 0, 0
    for n, rec in enumerate(records):
        rng = random.Random(f"{cfg.seed}-{rec.case_id}")
        probes = probes_for(rec)
        edited = cfg.mode is not Mode.NONE
        if memory is None:
            distractors = _sample_distractors(pool, cfg.distractors, rec.case_id, rng)
            groups = {(rec.fact if edited else None, tuple(distractors)): list(range(len(probes)))}
        else:  # retrieval decides, per question, which fact and distractors it gets
            groups = {}
            for i, p in enumerate(probes):
                hits = memory.retrieve(p.question, k=1 + cfg.distractors,
                                       threshold=lm.retrieval.threshold, namespace="eval")
                key = ((hits[0].edit.text, tuple(h.edit.text for h in hits[1:]))
                       if hits and edited else (None, ()))
                groups.setdefault(key, []).append(i)
        scores: list[Any] = [None] * len(probes)
        targets: list[Any] = [None] * len(probes)
        retrieved: list[str | None] = [None] * len(probes)
        for (fact, dis), idx in groups.items():
            prefix = scorer.context_ids(fact, dis, exclude=[rec.case_id])
            s, t, lens = scorer.score(prefix, [probes[i] for i in idx], edited=fact is not None,
                                      mode=cfg.mode if fact is not None else Mode.NONE)
            for j, i in enumerate(idx):
                scores[i], targets[i], retrieved[i] = s[j], t[j], fact
            questions += len(idx)
            prompt_tokens += sum(lens)
        reference: dict[int, list[int]] = {}
        if fmt == "counterfact":  # EasyEdit locality compares with the unedited model's argmax
            loc = [i for i, p in enumerate(probes) if p.kind == "locality"]
            s, _, _ = scorer.score(scorer.bos, [probes[i] for i in loc], edited=False,
                                   mode=Mode.NONE)
            reference = {i: s[j][0].argmax for j, i in enumerate(loc)}
        row = _record_metrics(fmt, probes, scores, targets, reference)
        row["case_id"] = rec.case_id
        row["fact"] = rec.fact
        if memory is not None:
            row["retrieved"] = retrieved
            row["retrieval_hit"] = sum(r == rec.fact for r in retrieved) / len(retrieved)
        rows.append(row)
        if progress:
            progress(n + 1, len(records))
    return rows, questions, prompt_tokens


def _evaluate_mquake(lm: Any, cfg: EvalConfig, records: Sequence[MquakeRecord],
                     pool: Sequence[tuple[int, str]], progress: Progress | None,
                     ) -> tuple[list[dict[str, Any]], int, int]:
    """All of a case's edits (plus `distractors` unrelated ones) in a memory; each question gets
    the best retrieved edit as the fact and the rest as distractors; the greedy answer must
    mention the new answer or an alias. IKE demonstrations come from `lm.demos`."""
    memory = EditMemory(None, embedder=getattr(lm.memory, "embedder", None))
    rows, questions, prompt_tokens = [], 0, 0
    for n, rec in enumerate(records):
        rng = random.Random(f"{cfg.seed}-{rec.case_id}")
        ns = f"case-{rec.case_id}"
        memory.add(rec.facts + _sample_distractors(pool, cfg.distractors, rec.case_id, rng),
                   namespace=ns)
        answers = [rec.new_answer, *rec.new_answer_alias]
        details = []
        for q in rec.questions:
            hits = memory.retrieve(q, k=len(rec.facts) + cfg.distractors,
                                   threshold=lm.retrieval.threshold, namespace=ns)
            if hits and cfg.mode is not Mode.NONE:
                a = lm.ask(q, mode=cfg.mode, fact=hits[0].edit.text,
                           distractors=[h.edit.text for h in hits[1:]],
                           max_new_tokens=cfg.max_new_tokens)
            else:
                a = lm.ask(q, mode=Mode.NONE, max_new_tokens=cfg.max_new_tokens)
            details.append({"question": q, "answer": a.text,
                            "correct": metrics.contains_answer(a.text, answers),
                            "edit": hits[0].edit.text if hits else None})
            questions += 1
            prompt_tokens += a.prompt_tokens
        ok = [d["correct"] for d in details]
        rows.append({"case_id": rec.case_id, "multi_hop": sum(ok) / len(ok),
                     "case": float(any(ok)), "probes": details})
        memory.clear(ns)
        if progress:
            progress(n + 1, len(records))
    return rows, questions, prompt_tokens
