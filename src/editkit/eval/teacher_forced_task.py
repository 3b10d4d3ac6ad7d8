"""The shared loop of the teacher-forced tasks (ROME / EasyEdit CounterFact, zsRE).

Per record: the context each probe gets is decided (the record's own fact, or, in the memory
setting, whatever the retrieval policy selects for that probe's question), probes with the same
context are scored together, probes compared with the unedited model (EasyEdit-sense locality) are
scored once more without an edit, and the task turns the scores into per-record values.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .. import metrics
from ..datasets import load_counterfact, one_edit_per_fact
from ..errors import InvalidInputError
from ..ike import default_train_file
from ..layouts import Mode
from ..retrieval import EditMemory
from ..runtime.scoring import TargetScore
from .config import EvalConfig
from .registry import RunContext, Task
from .teacher_forcing import Probe, Scorer


class ScoredTask(Task):
    """A task whose probes are scored teacher forced (no generation)."""

    reference_kinds: ClassVar[frozenset[str]] = frozenset()
    """Probe kinds whose argmax is compared with the unedited model's (EasyEdit locality)."""
    metric_keys: ClassVar[list[tuple[str, str, str]]] = []
    """(per-record key, reported name, protocol) of the rate metrics, in table order."""
    in_scope_kinds: ClassVar[frozenset[str]] = frozenset()
    """Probe kinds that are about the record's edit (its own edit should reach them); the other
    kinds ask about something else (neighbourhood, locality), where it should not."""

    def demo_exclusion(self, record: Any) -> dict[str, list[Any]]:
        """How the evaluated record is kept out of its own IKE demonstrations: by case_id (the
        CounterFact ids are global, shared by the train and test splits)."""
        return {"exclude": [record.case_id]}

    def record_metrics(self, probes: Sequence[Probe], scores: Sequence[list[TargetScore]],
                       targets: Sequence[list[list[int]]],
                       reference: dict[int, list[int]]) -> dict[str, Any]:
        """Per-record values: token accuracy per probe kind (or agreement with the unedited
        model's argmax for `reference_kinds`), averaged over the record's probes of that kind."""
        by_kind: dict[str, list[float]] = {}
        detail = []
        for i, (p, s, t) in enumerate(zip(probes, scores, targets, strict=True)):
            acc = (metrics.unchanged_share(s[0].argmax, reference[i]) if i in reference
                   else metrics.token_accuracy(s[0].argmax, t[0]))
            by_kind.setdefault(p.kind, []).append(acc)
            detail.append({"kind": p.kind, "question": p.question, "acc": acc,
                           "mean_logprob": s[0].mean_logprob})
        row: dict[str, Any] = {k: sum(v) / len(v) for k, v in by_kind.items()}
        row["probes"] = detail
        return row

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
        out: dict[str, metrics.MetricValue] = {}
        for key, name, protocol in self.metric_keys:
            out.update(metrics.rate_scores(rows, [(key, name)], protocol))
        return out

    def score_record(self, scorer: Scorer, mode: Mode, fact: str | None,
                     probes: Sequence[Probe], distractors: Sequence[str] = (),
                     demos: str = "") -> dict[str, Any]:
        """Score one record's probes behind one context and return its per-record values (no
        unedited reference: for the ROME task and `Trainer.val_scores`)."""
        s = scorer.score(mode, fact, distractors, probes, demos)
        return self.record_metrics(probes, s.scores, s.targets, {})

    # ---- the runner's hooks ------------------------------------------------------------------
    def setting_records(self, cfg: EvalConfig, usable: Sequence[Any]
                        ) -> tuple[list[Any], list[tuple[Any, str]]]:
        if cfg.memory_size:
            return one_edit_per_fact(usable)
        return list(usable), []

    def prepare(self, run: RunContext, records: Sequence[Any], usable: Sequence[Any]) -> None:
        if run.cfg.memory_size:
            fill_memory(run.scratch_memory(), records, usable, run.cfg.memory_size,
                        run.namespace)

    def settings(self, run: RunContext) -> dict[str, Any]:
        if not run.cfg.memory_size:
            return {"retrieval_used": False}
        return {"retrieval_used": True, "retrieval_k": 1 + run.cfg.distractors,
                "memory_size": run.cfg.memory_size}

    def run_record(self, run: RunContext, record: Any) -> dict[str, Any]:
        cfg, scorer = run.cfg, run.scorer
        probes = self.probes(record)
        edited = cfg.mode is not Mode.NONE
        groups: dict[tuple[str | None, tuple[str, ...]], list[int]] = {}
        if run.memory is None:
            key = (record.fact if edited else None, tuple(run.distractors_for(record)))
            groups[key] = list(range(len(probes)))
        else:  # the retrieval policy decides, per question, the fact and the distractors
            selections = []
            for i, p in enumerate(probes):
                sel = run.lm.select(p.question, run.namespace, memory=run.memory,
                                    k=1 + cfg.distractors, settings=run.retrieval)
                selections.append(sel)
                key = ((sel.fact, tuple(sel.distractor_texts)) if sel.edit is not None and edited
                       else (None, ()))
                groups.setdefault(key, []).append(i)
            if cfg.routing_only:  # what reached each prompt, and nothing scored
                run.count(len(probes), 0)
                return {"case_id": record.case_id, "fact": record.fact,
                        **self.routing(record, probes, selections)}
        scores: list[Any] = [None] * len(probes)
        targets: list[Any] = [None] * len(probes)
        retrieved: list[str | None] = [None] * len(probes)
        for (fact, dis), idx in groups.items():
            demos = ""
            if fact is not None and cfg.mode is Mode.IKE:
                demos = scorer.demonstrations(fact, **self.demo_exclusion(record))
            s = scorer.score(cfg.mode if fact is not None else Mode.NONE, fact, dis,
                             [probes[i] for i in idx], demos)
            for j, i in enumerate(idx):
                scores[i], targets[i], retrieved[i] = s.scores[j], s.targets[j], fact
            run.count(len(idx), sum(s.prompt_tokens))
        ref_idx = [i for i, p in enumerate(probes) if p.kind in self.reference_kinds]
        reference: dict[int, list[int]] = {}
        if ref_idx:  # EasyEdit locality: compared with the unedited model's argmax tokens
            s = scorer.score(Mode.NONE, None, (), [probes[i] for i in ref_idx])
            reference = {i: s.scores[j][0].argmax for j, i in enumerate(ref_idx)}
        row = self.record_metrics(probes, scores, targets, reference)
        row["case_id"] = record.case_id
        row["fact"] = record.fact
        if run.memory is not None:
            row["retrieved"] = retrieved
            row["retrieval_hit"] = sum(r == record.fact for r in retrieved) / len(retrieved)
            row.update(self.routing(record, probes, selections))
            if cfg.oracle and edited:  # the same probes with the record's own edit given
                demos = (scorer.demonstrations(record.fact, **self.demo_exclusion(record))
                         if cfg.mode is Mode.IKE else "")
                s = scorer.score(cfg.mode, record.fact, run.distractors_for(record), probes,
                                 demos)
                oracle = self.record_metrics(probes, s.scores, s.targets, reference)
                oracle.pop("probes", None)
                row["oracle"] = oracle
        return row

    def routing(self, record: Any, probes: Sequence[Probe],
                selections: Sequence[Any]) -> dict[str, Any]:
        """What reached each probe's prompt (its record's own edit, another edit, nothing), per
        probe kind, and the relevance decisions on the record's own edit.

        The gate's labelled pairs: (in-scope probe, own edit) should be kept, (out-of-scope probe,
        own edit) should not. Candidates that are other records' edits carry no label (another
        edit can be about the same subject) and are counted apart.
        """
        by_kind: dict[str, list[str]] = {}
        gate = {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "not_retrieved": 0, "other_kept": 0,
                "top1": 0}
        for p, sel in zip(probes, selections, strict=True):
            route = ("nothing" if sel.edit is None else
                     "own" if sel.fact == record.fact else "other")
            by_kind.setdefault(p.kind, []).append(route)
            in_scope = p.kind in self.in_scope_kinds
            own = [j for j in sel.judged if j.hit.edit.text == record.fact]
            gate["other_kept"] += sum(j.kept for j in sel.judged
                                      if j.hit.edit.text != record.fact)
            if not own:
                gate["not_retrieved"] += in_scope
                continue
            top = max(sel.judged, key=lambda j: j.hit.score)  # the nearest by cosine
            gate["top1"] += in_scope and top.hit.edit.text == record.fact
            kept = own[0].kept
            gate[("tp" if kept else "fn") if in_scope else ("fp" if kept else "tn")] += 1
        out: dict[str, Any] = {"routing": by_kind, "gate": gate}
        for kind, routes in by_kind.items():
            for r in ("own", "other", "nothing"):
                out[f"reach_{kind}_{r}"] = routes.count(r) / len(routes)
        return out

    def report_metrics(self, run: RunContext, rows: Sequence[dict[str, Any]]
                       ) -> dict[str, metrics.MetricValue]:
        if run.cfg.routing_only:
            return self.memory_metrics(rows)
        out = self.aggregate(rows)
        if run.memory is not None:
            out.update(self.memory_metrics(rows))
        return out

    def memory_metrics(self, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
        """The memory setting's extra rows: what reached the prompt per probe kind, the gate's
        precision and recall on the labelled pairs, and the oracle (edit given) metrics."""
        out: dict[str, metrics.MetricValue] = {}
        keys = sorted({k for r in rows for k in r if k.startswith("reach_")})
        out.update(metrics.rate_scores(rows, [(k, k) for k in keys], "memory routing"))
        g = {k: sum(r["gate"][k] for r in rows) for k in rows[0]["gate"]}
        found = g["tp"] + g["fn"] + g["not_retrieved"]
        for name, hits, n in (("gate_recall", g["tp"], g["tp"] + g["fn"]),
                              ("gate_precision", g["tp"], g["tp"] + g["fp"]),
                              ("retrieval_recall", g["tp"] + g["fn"], found),
                              ("retrieval_recall_at_1", g.get("top1", 0), found if "top1" in g
                               else 0)):
            if n:
                out[name] = metrics.proportion(name, hits, n, "memory routing")
        if all("oracle" in r for r in rows):
            for name, v in self.aggregate([r["oracle"] for r in rows]).items():
                out[f"oracle_{name}"] = v.model_copy(update={"name": f"oracle_{name}"})
        return out


def fill_memory(memory: EditMemory, records: Sequence[Any], usable: Sequence[Any], size: int,
                namespace: str) -> None:
    """Store the evaluated facts plus fillers until the memory holds `size` edits.

    A filler never edits the same fact (`edit_key`) as an evaluated record: a contradicting second
    edit of a fact makes "which edit should this question reach" undefined. `usable` is already
    one record per key (`one_edit_per_fact`)."""
    facts = [r.fact for r in records]
    if size < len(facts):
        raise InvalidInputError(f"memory_size={size} is smaller than the {len(facts)} records "
                                "evaluated; every evaluated fact must be in memory.")
    seen, keys = set(facts), {r.edit_key for r in records}
    fillers = [r.fact for r in usable if r.fact not in seen and r.edit_key not in keys]
    if len(facts) + len(fillers) < size:
        extra = load_counterfact(default_train_file())  # records only: no key embedding
        fillers += [r.fact for r in extra if r.fact not in seen and r.edit_key not in keys]
    # independent records, not updates of each other: stored side by side (no supersession)
    memory.add(facts + fillers[: size - len(facts)], namespace=namespace, on_update="keep-both")
