"""zsRE, MEND/EasyEdit format (`zsre`): edit, rephrase, locality in two senses, portability.

- `edit_acc` / `rephrase_acc`: token accuracy of ` alt` after `src` / `rephrase` (EasyEdit's
  target; ROME and MEMIT edit toward `answers[0]` instead, audit D-6).
- `locality_acc` (ROME sense): token accuracy of ` loc_ans` after `loc + "?"`, as ROME's
  `dsets/zsre.py` builds it; the unedited model scores about its NQ accuracy.
- `locality` (EasyEdit sense): share of argmax tokens along `loc + " " + loc_ans` unchanged from
  the unedited model's; the unedited model scores 100.
- `portability_acc`: token accuracy of ` New Answer` after `New Question` (records that have one).

Records with an empty `alt` are skipped, as EasyEdit's `ZsreDataset` does. IKE demonstrations come
from the zsRE training split, and the evaluated question is excluded by its text (`src`): zsRE has
no ids, the loader numbers each file's records by position, so a case_id would name an unrelated
training record (audit D-7).
"""
from __future__ import annotations

from typing import Any

from ...datasets import ZsreRecord
from ..registry import register_task
from ..teacher_forced_task import ScoredTask
from ..teacher_forcing import Probe


@register_task
class ZsreTask(ScoredTask):
    name = "zsre"
    default_data = "zsre/zsre-test.json"
    # Portability questions ask one hop beyond the edited fact about the same subject ("What is
    # the primary focus of the organization that publishes Bioscience Horizons?"): EasyEdit scores
    # them with the edit in context, so the edit reaching them is a hit, not a leak.
    in_scope_kinds = frozenset({"edit", "rephrase", "portability"})
    demo_file = "zsre"
    reference_kinds = frozenset({"locality"})
    metric_keys = [("edit", "edit_acc", "zsre-token"),
                   ("rephrase", "rephrase_acc", "zsre-token"),
                   ("locality_rome", "locality_acc", "zsre-token, ROME locality"),
                   ("locality", "locality", "zsre-token, EasyEdit locality"),
                   ("portability", "portability_acc", "zsre-token")]

    def skip_reason(self, record: ZsreRecord) -> str | None:
        return None if record.alt.strip() else "empty alt (no new answer to edit toward)"

    def demo_exclusion(self, record: ZsreRecord) -> dict[str, list[Any]]:
        return {"exclude_prompts": [record.src]}

    def probes(self, record: ZsreRecord) -> list[Probe]:
        out = [Probe(kind="edit", question=record.src, targets=[record.alt]),
               Probe(kind="rephrase", question=record.rephrase, targets=[record.alt]),
               Probe(kind="locality_rome", question=record.loc + "?", targets=[record.loc_ans]),
               Probe(kind="locality", question=record.loc, targets=[record.loc_ans])]
        if record.portability is not None:
            out.append(Probe(kind="portability", question=record.portability.new_question,
                             targets=[record.portability.new_answer]))
        return out
