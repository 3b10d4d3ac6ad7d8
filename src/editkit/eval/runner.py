"""`evaluate`: run one mode over a published data file and report the field's metrics.

The runner is format-agnostic: it loads the file (`EvalConfig.data`, else the task's default data
set, `registry.data_for`), looks the task up by the detected format
(`registry.get_task`; `EvalConfig.task` picks another task that reads the format), skips records
the task cannot use (counted in the report), and loops. The task decides the probes, the contexts
and the metrics (`editkit/eval/tasks/`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..data_files import describe
from ..datasets import load_records
from ..errors import DatasetError
from ..ike import DemoStore
from ..layouts import Mode
from ..retrieval import gate_for
from . import tasks as _tasks  # noqa: F401  (registers the tasks)
from .config import EvalConfig
from .registry import RunContext, check_judge, data_for, distractor_pool, get_task
from .report import EvalReport, lm_settings, ptokens_label
from .teacher_forcing import Scorer

Progress = Callable[[int, int], None]


def ike_settings(cfg: EvalConfig, demos: DemoStore | None) -> dict[str, Any] | None:
    """The IKE variant a report ran with (None outside mode ike)."""
    if cfg.mode is not Mode.IKE:
        return None
    return {"variant": "self-copy (original IKE)" if cfg.ike_self_copy
            else "no self-copy (EasyEdit >= 2024-12)",
            "self_copy": cfg.ike_self_copy, "demonstrations": 32 + int(cfg.ike_self_copy),
            "kinds": "4 copy / 12 update / 16 retain, shuffled per record (seeded by the fact)",
            "demo_file": (str(cfg.demos) if cfg.demos else "vendored train split")
            if demos is not None else "EditableLM.demos"}


def evaluate(lm: Any, config: EvalConfig | None = None, *, progress: Progress | None = None,
             **kwargs: Any) -> EvalReport:
    """Evaluate an EditableLM on a data file: `evaluate(lm, data=..., mode="ike", limit=50)`;
    without `data`, on the task's packaged data set: `evaluate(lm, task="zsre", limit=50)`."""
    cfg = config or EvalConfig(**kwargs)
    path = data_for(cfg)
    fmt, all_records = load_records(path)
    task = get_task(cfg.task or fmt, fmt)
    check_judge(cfg, task)
    usable, skipped = [], []
    for i, r in enumerate(all_records):
        reason = task.skip_reason(r)
        if reason is None:
            usable.append(r)
        else:
            skipped.append({"index": i, "reason": reason})
    usable, dropped = task.setting_records(cfg, usable)
    index = {id(r): i for i, r in enumerate(all_records)}
    skipped += [{"index": index[id(r)], "reason": why} for r, why in dropped]
    skipped.sort(key=lambda s: s["index"])
    if not usable:
        raise DatasetError(f"{path}: no record can be evaluated "
                           f"({skipped[0]['reason']}, all {len(skipped)}).")
    records = (usable[: cfg.limit] if cfg.limit else usable) + task.extra_records(cfg)
    demos = None
    if cfg.mode is Mode.IKE and task.demo_file is not None:
        demos = (DemoStore.from_file(cfg.demos) if cfg.demos
                 else DemoStore.default(task.demo_file))
    update: dict[str, Any] = {}
    if cfg.gate is not None:
        update["gate"] = cfg.gate
    if cfg.gate_file is not None:
        update.update(gate="learned", gate_file=str(cfg.gate_file))
    retrieval = lm.retrieval.model_copy(update=update)
    if retrieval.gate_file is not None:  # a wrong gate fails now, not after minutes of filling
        gate_for(getattr(lm.memory, "embedder", None), retrieval)
    run = RunContext(lm=lm, cfg=cfg, pool=distractor_pool(usable),
                     scorer=Scorer.for_lm(lm, demos, self_copy=cfg.ike_self_copy),
                     retrieval=retrieval)
    task.prepare(run, records, usable)
    started = time.perf_counter()
    rows = []
    for n, rec in enumerate(records):
        rows.append(task.run_record(run, rec))
        if progress:
            progress(n + 1, len(records))
    seconds = time.perf_counter() - started
    q = run.questions
    timing = {"seconds": seconds, "records": float(len(records)), "questions": float(q),
              "ms_per_question": 1000 * seconds / max(q, 1),
              "prompt_tokens_per_question": run.prompt_tokens / max(q, 1)}
    settings = {**lm_settings(lm), "retrieval": retrieval.model_dump(), **task.settings(run),
                "ike": ike_settings(cfg, demos), "skipped": skipped}
    return EvalReport(config=json.loads(cfg.model_dump_json()), format=fmt, data=describe(path),
                      model=lm.name, ptokens=ptokens_label(lm), settings=settings,
                      metrics=task.report_metrics(run, rows), timing=timing, records=rows)
