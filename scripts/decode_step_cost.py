"""Cost of one prefill and one decode step of `DecodeBatch` against the number of rows, on the
default model (why batched decoding pays and prefill bounds it; docs/benchmarks.md).

    .venv/bin/python scripts/decode_step_cost.py
"""
from __future__ import annotations

import time

from editkit import EditableLM


def main() -> None:
    lm = EditableLM.from_pretrained()
    lm.edit("The mother tongue of Danielle Darrieux is English.")
    p = lm.prompt("The mother tongue of Danielle Darrieux is", max_new_tokens=40)[0]
    for n in (1, 4, 16):
        rows = [lm.generator.batch_row(p.ids, ptokens=lm.ptokens, max_new_tokens=40)
                for _ in range(n)]
        batch = lm.generator.new_batch(lm.ptokens)
        t = time.perf_counter()
        batch.add(rows)
        prefill = time.perf_counter() - t
        steps = []
        for _ in range(20):
            t = time.perf_counter()
            batch.step()
            steps.append(time.perf_counter() - t)
        print(f"{n} rows: prefill {prefill:.3f} s, step median {sorted(steps)[10]:.4f} s")


if __name__ == "__main__":
    main()
