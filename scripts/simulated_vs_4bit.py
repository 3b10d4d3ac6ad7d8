"""The float32 twin of the 4-bit model (`loading.simulate_quantized`) against the real 4-bit
model: ROME scores of the shipped m10 on the first N records of counterfact-rome-test.

    .venv/bin/python scripts/simulated_vs_4bit.py --limit 20
"""
from __future__ import annotations

import argparse
import time

from editkit import EditableLM, EditMemory
from editkit.eval import evaluate
from editkit.loading import load_model, simulate_quantized
from editkit.ptokens import PTokens

M10 = "results/ptokens-2026-11-30/m10-previous-default"  # the m10 that m10-4bit was trained from


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--data", default=None,
                    help="data file (default: the packaged counterfact-rome-test.json)")
    args = ap.parse_args()
    q = load_model(quantization="4bit")
    twin = simulate_quantized(load_model(), q)
    for name, loaded in [("4bit", q), ("float32 twin", twin)]:
        pt = PTokens.from_pretrained(M10, loaded.model, loaded.tokenizer, name=loaded.name)
        lm = EditableLM(loaded, pt, EditMemory(None), "ptokens")
        t = time.perf_counter()
        r = evaluate(lm, data=args.data, mode="ptokens", limit=args.limit)
        print(name, {k: round(v.value, 1) for k, v in r.metrics.items()
                     if k in ("ES", "PS", "NS", "S")}, f"{time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
