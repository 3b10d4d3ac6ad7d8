"""Evaluation tasks, registered by data-format name (lm-evaluation-harness style).

A task owns everything format-specific: which probes a record gets (`probes`), how one record is
run and scored (`run_record`), and how per-record values become the reported metrics
(`aggregate`). The runner (`editkit.eval.runner.evaluate`) only loads the file, looks the task up by
the detected format and loops. A new format is one new module in `editkit/eval/tasks/` that calls
`register_task`.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..data_files import data_file
from ..errors import InvalidInputError
from ..metrics import MetricValue
from ..retrieval import EditMemory, RetrievalSettings
from .config import DEFAULT_TASK, EvalConfig
from .teacher_forcing import Probe, Scorer


class UnknownTaskError(InvalidInputError):
    """No evaluation task is registered for a data format."""


@dataclass
class RunContext:
    """What a task sees while one evaluation runs: the model, the config, the scorer, the pool of
    distractor facts, the scratch edit memory (memory setting, MQuAKE), and the counters behind
    the report's timing columns."""

    lm: Any
    cfg: EvalConfig
    scorer: Scorer
    pool: list[tuple[int, str]]
    memory: EditMemory | None = None
    retrieval: RetrievalSettings | None = None
    """The retrieval policy's settings for this run (the model's, with `cfg.gate` applied)."""
    namespace: str = "eval"
    questions: int = 0
    prompt_tokens: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    """A task's own objects for this run (made in `prepare`); tasks are registered once and
    shared, so per-run state lives here, not on the task."""

    def rng(self, record: Any) -> random.Random:
        """A generator seeded by the config's seed and the record (order-independent)."""
        return random.Random(f"{self.cfg.seed}-{record.case_id}")

    def distractors_for(self, record: Any) -> list[str]:
        """`cfg.distractors` facts of other records (never the record's own), in random order."""
        return sample_distractors(self.pool, self.cfg.distractors, record.case_id,
                                  self.rng(record))

    def scratch_memory(self) -> EditMemory:
        """An in-RAM edit memory with the model's embedder, made on first use."""
        if self.memory is None:
            self.memory = EditMemory(None, embedder=self.lm.memory.embedder)
        return self.memory

    def count(self, questions: int, prompt_tokens: int) -> None:
        self.questions += questions
        self.prompt_tokens += prompt_tokens


def distractor_pool(records: Sequence[Any]) -> list[tuple[int, str]]:
    """(case_id, fact) of every edit in the file; MQuAKE cases contribute all their rewrites."""
    pool = []
    for r in records:
        facts = getattr(r, "facts", None) or [r.fact]
        pool += [(r.case_id, f) for f in facts]
    return pool


def sample_distractors(pool: Sequence[tuple[int, str]], k: int, case_id: int,
                       rng: random.Random) -> list[str]:
    """k facts of other records (never the record's own), in random order."""
    if k == 0:
        return []
    others = [f for cid, f in pool if cid != case_id]
    if k > len(others):
        raise InvalidInputError(f"{k} distractors asked, only {len(others)} other facts exist.")
    return rng.sample(others, k)


class Task(ABC):
    """One data format's evaluation: probes, per-record metrics, aggregation."""

    name: ClassVar[str]
    """The task's registered name: the data format (`editkit.datasets.Format`) it evaluates, or,
    for a task chosen explicitly (`EvalConfig.task`), its own name."""
    formats: ClassVar[frozenset[str] | None] = None
    """The data formats this task reads; None: only the format named `name`."""
    default_data: ClassVar[str | None] = None
    """The data set evaluated when no data file is given: its name in the data layout
    (`editkit.data_files.data_file`, e.g. 'counterfact/counterfact-rome-test.json'), packaged with
    editkit; None: the task needs a data file."""
    judges_answers: ClassVar[bool] = False
    """Whether the task generates free-form answers that `EvalConfig.judge_model` can grade."""
    demo_file: ClassVar[str | None] = "counterfact"
    """The vendored IKE demonstration file for this format; None: the task does not score IKE
    contexts itself (MQuAKE asks `EditableLM.ask`, which uses `lm.demos`)."""

    def reads(self, fmt: str) -> bool:
        """Whether this task can evaluate records of data format `fmt`."""
        return fmt in (self.formats or {self.name})

    def skip_reason(self, record: Any) -> str | None:
        """Why a record cannot be evaluated (it is then skipped and counted), or None."""
        return None

    def setting_records(self, cfg: EvalConfig, usable: Sequence[Any]
                        ) -> tuple[list[Any], list[tuple[Any, str]]]:
        """The records the run's setting can evaluate, and the others with why; default: all."""
        return list(usable), []

    def extra_records(self, cfg: EvalConfig) -> list[Any]:
        """Records the task evaluates beyond the data file's (after `cfg.limit` is applied to
        those), e.g. generated ones; default: none."""
        return []

    def prepare(self, run: RunContext, records: Sequence[Any], usable: Sequence[Any]) -> None:
        """Once before the loop (e.g. fill the memory of the memory setting); default: nothing."""
        return None

    def settings(self, run: RunContext) -> dict[str, Any]:
        """Task-specific settings recorded in the report."""
        return {}

    @abstractmethod
    def probes(self, record: Any) -> list[Probe]:
        """The questions asked about one record."""

    @abstractmethod
    def run_record(self, run: RunContext, record: Any) -> dict[str, Any]:
        """Evaluate one record: its per-record metric values and details."""

    @abstractmethod
    def aggregate(self, rows: Sequence[dict[str, Any]]) -> dict[str, MetricValue]:
        """The reported metrics from the per-record rows."""

    def report_metrics(self, run: RunContext, rows: Sequence[dict[str, Any]]
                       ) -> dict[str, MetricValue]:
        """The report's metrics: `aggregate(rows)`, plus what a task adds for the run's setting
        (the memory setting's routing and oracle rows)."""
        return self.aggregate(rows)


TASKS: dict[str, Task] = {}
T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    """Class decorator: register a task under its `name` (one per data format)."""
    if cls.name in TASKS:
        raise ValueError(f"an evaluation task for {cls.name!r} is already registered")
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str, fmt: str | None = None) -> Task:
    """The task registered under `name` (a data format, or an explicit task's name);
    `UnknownTaskError` lists the known ones. With `fmt`, the task must read that format."""
    try:
        task = TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"No evaluation task {name!r}; known tasks: "
                               f"{', '.join(sorted(TASKS))}.") from None
    if fmt is not None and not task.reads(fmt):
        readers = sorted(n for n, t in TASKS.items() if t.reads(fmt))
        raise UnknownTaskError(f"Task {name!r} does not read {fmt!r} records; tasks that do: "
                               f"{', '.join(readers)}.")
    return task


def refuse_ike_self_copy(cfg: EvalConfig, task: str, asks: str) -> None:
    """`ike_self_copy` is the scored tasks' IKE variant: a task that generates through
    `EditableLM` (`asks`) gets the lm's own IKE, so the option would silently do nothing."""
    if cfg.ike_self_copy:
        raise InvalidInputError(f"ike_self_copy applies to the scored tasks; {task} asks "
                                f"through {asks}, which uses the lm's IKE.")


def check_judge(cfg: EvalConfig, task: Task) -> None:
    """`judge_model` grades generated answers: refused (before any model loads) for a task that
    scores probabilities, where it would silently do nothing."""
    if cfg.judge_model is not None and not task.judges_answers:
        readers = sorted(n for n, t in TASKS.items() if t.judges_answers)
        raise InvalidInputError(f"judge_model grades generated answers; task {task.name!r} does "
                                f"not generate them. Tasks that do: {', '.join(readers)}.")


def data_for(cfg: EvalConfig) -> Path:
    """The data file a config evaluates: `cfg.data`, else its task's `default_data` (from
    `$EDITKIT_DATA` if set, else the package; `DatasetError` naming EDITKIT_DATA when missing).
    Raises before any model loads: an unknown task is an `UnknownTaskError`."""
    if cfg.data is not None:
        return cfg.data
    task = get_task(cfg.task or DEFAULT_TASK)
    if task.default_data is None:
        raise InvalidInputError(f"Task {task.name!r} has no default data set; give a data file "
                                "(--data).")
    return data_file(task.default_data)
