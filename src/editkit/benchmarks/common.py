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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_process(cmd: list[str], ready_url: str, *, timeout_s: float = 300.0,
                  cwd: Path | None = None) -> Any:
    """Start a server (`cmd`) in its own process group, offline, and wait until `ready_url`
    answers 200; the benchmarks' and tests' servers on loopback start here."""
    import subprocess

    import httpx

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode} before it answered")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"{cmd[:3]} did not answer {ready_url} within {timeout_s:.0f} s")


def stop_process(proc: Any, sig: int | None = None) -> None:
    """Stop the process group of a server started by `start_process` (by its pid)."""
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM if sig is None else sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
