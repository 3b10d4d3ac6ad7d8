"""`EvalConfig`: what `editkit eval` / `editkit.evaluate` runs."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..layouts import Mode

DEFAULT_TASK = "counterfact-rome"
"""The task `editkit eval` runs when given neither a data file nor a task."""


class EvalConfig(BaseModel):
    """What to evaluate. `memory_size` > 0 answers every question through retrieval from a memory
    holding that many edits (the evaluated records' facts plus unrelated fillers).

    `ike_self_copy` selects the IKE variant (audit D-2): False (default) is EasyEdit's current IKE,
    32 retrieved demonstrations; True appends original IKE's copy demonstration of the evaluated
    fact itself (33 in all), as in the IKE paper and EasyEdit before 2024-12.

    `data` None evaluates the task's default data set (`Task.default_data`: a data set that ships
    with editkit, or the same file under `$EDITKIT_DATA`); with neither data nor task, the task is
    `DEFAULT_TASK`. `registry.data_for` resolves it.
    """

    model_config = ConfigDict(extra="forbid")
    data: Path | None = Field(None, description="data file (default: the task's default data "
                                                "set, packaged with editkit)")
    mode: Mode = Mode.PTOKENS
    limit: int | None = Field(None, ge=1)
    distractors: int = Field(0, ge=0, le=1000)
    memory_size: int = Field(0, ge=0, le=1_000_000)
    demos: Path | None = None
    ike_self_copy: bool = Field(False, description="IKE: also a copy demonstration of the fact")
    seed: int = 0
    max_new_tokens: int | None = Field(None, ge=1, le=256,
                                       description="tokens generated per answer (MQuAKE, wild); "
                                                   "None: the task's default (16, 64)")
    task: str | None = Field(
        None, description="evaluation task (default: the one registered for the file's format; "
                          f"without data, {DEFAULT_TASK!r}); e.g. 'counterfact-probes' scores "
                          "EasyEdit CounterFact with ROME's ES/PS/NS/S")
    gate: Literal["learned", "threshold"] | None = Field(
        None, description="memory setting: the retrieval policy's relevance gate "
                          "(None: the model's `retrieval.gate`)")
    gate_file: Path | None = Field(None, description="memory setting: a relevance gate artifact "
                                                     "(`train_gate`) instead of the shipped one")
    routing_only: bool = Field(False, description="memory setting: report only what reached the "
                                                  "prompt (routing, gate precision/recall), "
                                                  "scoring nothing with the model")
    oracle: bool = Field(True, description="memory setting: also score every record with its "
                                           "own edit given (the oracle row, oracle_* metrics)")
    app_facts: int = Field(0, ge=0, le=160,
                           description="updates task: also evaluate the first N app-style facts "
                                       "of the test split (`eval.app_facts`), after the data "
                                       "file's records")
    judge_model: str | None = Field(
        None, min_length=1, description="wild tasks: also grade every answer with this language "
                                        "model ('self': the evaluated model, unedited; or a "
                                        "model alias, Hub id or local path), reported beside "
                                        "containment as judged_* (`eval.answer_judge`)")

    @model_validator(mode="after")
    def _default_task(self) -> EvalConfig:
        if self.data is None and self.task is None:
            self.task = DEFAULT_TASK
        return self

    @model_validator(mode="after")
    def _app_facts(self) -> EvalConfig:
        if self.app_facts and self.task != "updates":
            raise ValueError("app_facts belongs to the updates task: give task='updates'")
        return self

    @model_validator(mode="after")
    def _memory_options(self) -> EvalConfig:
        if (self.routing_only or self.gate_file is not None) and not self.memory_size:
            raise ValueError("routing_only and gate_file belong to the memory setting: "
                             "give memory_size > 0")
        if self.gate_file is not None and self.gate == "threshold":
            raise ValueError("gate_file is a learned gate; it cannot go with gate='threshold'")
        return self
