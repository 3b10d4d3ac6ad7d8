"""A real inference engine on loopback: `transformers serve` (it ships with transformers) on an
`editkit export` of the default model with its shipped P-Tokens. Started once per session by the
fixture, stopped by the process id it started."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# one home for starting and stopping servers on loopback, shared with the benchmarks
from editkit.benchmarks.common import free_port, start_process, stop_process

# Continuous batching sizes its KV cache from free memory unless told: on a CPU that was ~14 GB,
# and two such servers on one machine run it out of memory. 256 blocks of 32 tokens hold 8k
# tokens (~0.4 GB on the default model), ample for 16 concurrent answers.
ENGINE_FLAGS = ("--continuous-batching", "--cb-num-blocks", "256", "--cb-block-size", "32")


def serve_export(export_dir: Path) -> tuple[subprocess.Popen, str]:
    """`transformers serve --continuous-batching` on an export (concurrent requests proceed
    together, as in production; without it they queue, and a queued one gets no byte for
    minutes on a loaded 2-core machine)."""
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    proc = start_process([str(exe), "serve", str(export_dir), *ENGINE_FLAGS,
                          "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                          "--log-level", "warning"],
                         f"http://127.0.0.1:{port}/v1/models", cwd=export_dir.parent)
    return proc, f"http://127.0.0.1:{port}/v1"


@dataclass
class ServedExport:
    path: Path
    url: str
    proc: subprocess.Popen


@pytest.fixture(scope="session")
def default_export(tmp_path_factory, default_model, shipped_ptokens) -> Path:
    from editkit.export import export_hf

    return export_hf(default_model.model, default_model.tokenizer, shipped_ptokens,
                     tmp_path_factory.mktemp("export") / "smollm2-ptokens")


@pytest.fixture(scope="session")
def served_export(default_export) -> Iterator[ServedExport]:
    proc, url = serve_export(default_export)
    try:
        yield ServedExport(default_export, url, proc)
    finally:
        stop_process(proc)
