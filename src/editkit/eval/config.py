"""`EvalConfig`: what `editkit eval` / `editkit.evaluate` runs."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..layouts import Mode


class EvalConfig(BaseModel):
    """What to evaluate. `memory_size` > 0 answers every question through retrieval from a memory
    holding that many edits (the evaluated records' facts plus unrelated fillers).

    `ike_self_copy` selects the IKE variant (audit D-2): False (default) is EasyEdit's current IKE,
    32 retrieved demonstrations; True appends original IKE's copy demonstration of the evaluated
    fact itself (33 in all), as in the IKE paper and EasyEdit before 2024-12.
    """

    model_config = ConfigDict(extra="forbid")
    data: Path
    mode: Mode = Mode.PTOKENS
    limit: int | None = Field(None, ge=1)
    distractors: int = Field(0, ge=0, le=1000)
    memory_size: int = Field(0, ge=0, le=1_000_000)
    demos: Path | None = None
    ike_self_copy: bool = Field(False, description="IKE: also a copy demonstration of the fact")
    seed: int = 0
    max_new_tokens: int = Field(16, ge=1, le=256, description="MQuAKE generations")
    task: str | None = Field(
        None, description="evaluation task (default: the one registered for the file's format); "
                          "e.g. 'counterfact-probes' scores EasyEdit CounterFact with ROME's "
                          "ES/PS/NS/S")
    gate: Literal["learned", "threshold"] | None = Field(
        None, description="memory setting: the retrieval policy's relevance gate "
                          "(None: the model's `retrieval.gate`)")
    oracle: bool = Field(True, description="memory setting: also score every record with its "
                                           "own edit given (the oracle row, oracle_* metrics)")
