"""Cold start of `EditableLM.from_pretrained()` (first time and cached) and peak RSS of the demo.

    python -m editkit.benchmarks.cold_start [--repeat 3]

Every measurement is a fresh Python process, as a user would start one. "First time" points
EDITKIT_CACHE at an empty folder, so the GGUF is dequantised and converted again; "cached" reuses
the converted copy. Each child reports the seconds it spent importing editkit, in
from_pretrained(), and on its first answer (which loads the sentence embedder for retrieval).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from .common import pct, save, table

CHILD = r"""
import json, time
t0 = time.perf_counter()
from editkit import EditableLM
t1 = time.perf_counter()
lm = EditableLM.from_pretrained()
t2 = time.perf_counter()
lm.edit("The Eiffel Tower is located in Rome.")
lm.ask("The Eiffel Tower is located in the city of", max_new_tokens=4)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "from_pretrained_s": t2 - t1, "first_answer_s": t3 - t2}))
"""

# The floor under any start: importing the libraries editkit builds on, in a fresh process, with
# nothing loaded. The cached start minus this is editkit's own cost.
LIBS = r"""
import json, time
t0 = time.perf_counter()
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama import modeling_llama  # noqa: F401 (the default's architecture)
t1 = time.perf_counter()
import sentence_transformers  # noqa: F401 (loaded by the first retrieval)
t2 = time.perf_counter()
print(json.dumps({"torch_transformers_s": t1 - t0, "sentence_transformers_s": t2 - t1}))
"""


def child(env: dict[str, str], code: str = CHILD) -> dict[str, float]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t
    return row


def demo_peak_rss_mb() -> float:
    """Peak resident memory of `editkit demo` in a child process (ru_maxrss of the children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "editkit.cli", "demo"], check=True,
                   capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="cached starts to time")
    ap.add_argument("--skip-first", action="store_true", help="skip the uncached start")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    rows: list[list] = []
    result: dict = {}
    if not args.skip_first:
        with tempfile.TemporaryDirectory() as tmp:
            first = child({**env, "EDITKIT_CACHE": tmp})
        result["first"] = first
        rows.append(["first time (empty cache)", first["import_s"], first["from_pretrained_s"],
                     first["first_answer_s"], first["process_s"]])
    child(env)  # make sure the cache exists
    cached = [child(env) for _ in range(args.repeat)]
    med = {k: pct([c[k] for c in cached], 0.5) for k in cached[0]}
    result["cached_median"] = med
    result["cached"] = cached
    rows.append([f"cached (median of {args.repeat})", med["import_s"], med["from_pretrained_s"],
                 med["first_answer_s"], med["process_s"]])
    libs = [child(env, LIBS) for _ in range(args.repeat)]
    floor = {k: pct([c[k] for c in libs], 0.5) for k in libs[0]}
    result["library_imports_median"] = floor
    rows.append([f"libraries only (median of {args.repeat})", floor["torch_transformers_s"],
                 "-", floor["sentence_transformers_s"], floor["process_s"]])
    result["demo_peak_rss_mb"] = demo_peak_rss_mb()
    print(table(["start", "import s", "from_pretrained s", "first answer s", "process s"], rows))
    print("\nlibraries only: 'import s' = torch + transformers (+ the llama modules), "
          "'first answer s' = sentence-transformers")
    print(f"\n`editkit demo` peak RSS: {result['demo_peak_rss_mb']:.0f} MB")
    print("wrote", save("cold_start", result, args.json))
    return result


if __name__ == "__main__":
    main()
