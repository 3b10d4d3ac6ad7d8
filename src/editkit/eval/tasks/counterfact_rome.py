"""ROME-format CounterFact (`counterfact-rome`): ES, PS, NS, S and the magnitudes EM, PM, NM.

Per probe the mean NLL of ` target_new` and ` target_true` are compared (ROME
`compute_rewrite_quality_counterfact`): rewrite and paraphrase prompts succeed when the new object
wins, neighbourhood prompts when the true one does. Per-record means, then means over records,
×100; S = harmonic mean of ES, PS, NS (`metrics.rome_scores`). Also the scorer of
`Trainer.val_scores` (on EasyEdit records, through `probes_from_easyedit`).

`counterfact-probes` is the same scoring on EasyEdit-format records (one paraphrase and one
neighbour each), chosen with `editkit eval --task counterfact-probes`: the validation split ships
only in that format, and choosing a setting by validation S needs ROME's metrics on it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ... import metrics
from ...datasets import CounterFactRecord, RomeCounterFactRecord
from ...runtime.scoring import TargetScore
from ..registry import register_task
from ..teacher_forced_task import ScoredTask
from ..teacher_forcing import Probe

KINDS = {"rewrite": ("es", "em"), "paraphrase": ("ps", "pm"), "neighborhood": ("ns", "nm")}


@register_task
class CounterFactRomeTask(ScoredTask):
    name = "counterfact-rome"
    default_data = "counterfact/counterfact-rome-test.json"
    in_scope_kinds = frozenset({"rewrite", "paraphrase"})

    def probes(self, record: RomeCounterFactRecord) -> list[Probe]:
        rw = record.requested_rewrite
        tg = [rw.target_new.text, rw.target_true.text]
        return ([Probe(kind="rewrite", question=rw.text, targets=tg)]
                + [Probe(kind="paraphrase", question=q, targets=tg)
                   for q in record.paraphrase_prompts]
                + [Probe(kind="neighborhood", question=q, targets=tg)
                   for q in record.neighborhood_prompts])

    @staticmethod
    def probes_from_easyedit(record: CounterFactRecord) -> list[Probe]:
        """The ROME probes of an EasyEdit record (one paraphrase, one neighbour), as the trainer's
        validation scores them: P(new) against P(true) on each."""
        return [Probe(kind="rewrite", question=record.prompt,
                      targets=[record.target_new, record.ground_truth]),
                Probe(kind="paraphrase", question=record.rephrase_prompt,
                      targets=[record.target_new, record.ground_truth]),
                Probe(kind="neighborhood", question=record.locality_prompt,
                      targets=[record.target_new, record.locality_ground_truth])]

    def record_metrics(self, probes: Sequence[Probe], scores: Sequence[list[TargetScore]],
                       targets: Sequence[list[list[int]]],
                       reference: dict[int, list[int]]) -> dict[str, Any]:
        hits: dict[str, list[float]] = {}
        mags: dict[str, list[float]] = {}
        detail = []
        for p, s in zip(probes, scores, strict=True):
            nll_new, nll_true = -s[0].mean_logprob, -s[1].mean_logprob
            nb = p.kind == "neighborhood"
            hits.setdefault(p.kind, []).append(metrics.rome_success(nll_new, nll_true,
                                                                    neighbour=nb))
            mags.setdefault(p.kind, []).append(metrics.rome_magnitude(nll_new, nll_true,
                                                                      neighbour=nb))
            detail.append({"kind": p.kind, "question": p.question, "nll_new": nll_new,
                           "nll_true": nll_true})
        row: dict[str, Any] = {}
        for kind, (rate, mag) in KINDS.items():
            row[rate] = sum(hits[kind]) / len(hits[kind])
            row[mag] = sum(mags[kind]) / len(mags[kind])
        row["probes"] = detail
        return row

    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, metrics.MetricValue]:
        return metrics.rome_scores(rows)


@register_task
class CounterFactProbesTask(CounterFactRomeTask):
    """ROME's ES/PS/NS/S on EasyEdit CounterFact records (`probes_from_easyedit`)."""

    name = "counterfact-probes"
    formats = frozenset({"counterfact"})
    default_data = "counterfact/counterfact-test.json"  # --data .../counterfact-val.json to tune

    def probes(self, record: CounterFactRecord) -> list[Probe]:  # type: ignore[override]
        return self.probes_from_easyedit(record)
