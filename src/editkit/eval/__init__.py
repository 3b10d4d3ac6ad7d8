"""Evaluation as registered tasks (lm-evaluation-harness style).

- `config.EvalConfig`: what to run; `runner.evaluate`: the format-agnostic loop;
- `registry`: `Task`, `register_task`, `get_task` (keyed by data-format name);
- `tasks/`: one module per data format (ROME / EasyEdit CounterFact, zsRE, MQuAKE single shot) and
  the MQuAKE hop-by-hop evaluation (`tasks.mquake_multihop`);
- `scorer`: teacher-forced scoring through the `PromptBuilder`'s public API (also used by
  `Trainer.val_scores`); `matching`: answer extraction and MQuAKE's exact match;
  `answerer`: the hop-by-hop answerer; `report`: `Report`, `EvalReport` and recorded settings.
"""
from .config import EvalConfig
from .registry import TASKS, RunContext, Task, UnknownTaskError, get_task, register_task
from .report import EvalReport, Report
from .runner import evaluate
from .teacher_forcing import Probe, Scorer

__all__ = ["TASKS", "EvalConfig", "EvalReport", "Probe", "Report", "RunContext", "Scorer", "Task",
           "UnknownTaskError", "evaluate", "get_task", "register_task"]
