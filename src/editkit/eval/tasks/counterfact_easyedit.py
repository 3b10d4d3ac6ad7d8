"""EasyEdit-format CounterFact (`counterfact`): rewrite_acc, rephrase_acc, locality.

Teacher-forced token accuracy of ` target_new` after the prompt and its rephrase; locality is the
share of argmax tokens along `locality_prompt + " " + locality_ground_truth` that the edit leaves
unchanged from the unedited model's (EasyEdit `compute_locality_quality`; the unedited model scores
100).
"""
from __future__ import annotations

from ...datasets import CounterFactRecord
from ..registry import register_task
from ..teacher_forced_task import ScoredTask
from ..teacher_forcing import Probe


@register_task
class CounterFactEasyEditTask(ScoredTask):
    name = "counterfact"
    default_data = "counterfact/counterfact-test.json"
    in_scope_kinds = frozenset({"rewrite", "rephrase"})
    reference_kinds = frozenset({"locality"})
    metric_keys = [("rewrite", "rewrite_acc", "easyedit-token"),
                   ("rephrase", "rephrase_acc", "easyedit-token"),
                   ("locality", "locality", "easyedit-token")]

    def probes(self, record: CounterFactRecord) -> list[Probe]:
        return [Probe(kind="rewrite", question=record.prompt, targets=[record.target_new]),
                Probe(kind="rephrase", question=record.rephrase_prompt,
                      targets=[record.target_new]),
                Probe(kind="locality", question=record.locality_prompt,
                      targets=[record.locality_ground_truth])]
