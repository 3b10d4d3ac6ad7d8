"""Shared helpers: the data sets (`data_dir`, `data_file`: the one home is `editkit.data_files`),
timing statistics, the machine description, and result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from editkit.data_files import data_dir, data_file
from editkit.fileio import atomic_write

__all__ = ["RESULTS", "data_dir", "data_file", "machine", "pct", "save", "table", "timed"]

RESULTS = Path("results") / "bench"


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they mean little without it)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.is_available()}


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeat` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1), linear between order statistics."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    return statistics.quantiles(v, n=1000, method="inclusive")[max(0, int(q * 1000) - 1)] \
        if 0 < q < 1 else (v[0] if q == 0 else v[-1])


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pasted into docs/benchmarks.md as printed)."""
    def cell(x: Any) -> str:
        return f"{x:.3g}" if isinstance(x, float) and abs(x) < 1000 else (
            f"{x:,.0f}" if isinstance(x, float) else str(x))
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def save(name: str, payload: dict[str, Any], out: str | None = None) -> Path:
    """Write the JSON result (atomically) next to the others and return its path."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    text = json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2)
    return atomic_write(path, lambda tmp: tmp.write_text(text))
