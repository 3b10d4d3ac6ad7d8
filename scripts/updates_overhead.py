"""Does history slow retrieval? Times the retrieval policy (`select`: candidates + relevance gate,
what every `ask` runs before the model) over 300 questions through an SQLite memory of 10,000
CounterFact train and validation facts, and, where this editkit keeps history, the same memory
after 1,000 of them were updated (1,000 superseded rows beside the 10,000 live ones).

Run once per editkit tree (PYTHONPATH=<tree>/src) and compare the medians of the same machine:
    python scripts/updates_overhead.py --out a.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from editkit import EditMemory
from editkit.datasets import load_counterfact
from editkit.ike import default_train_file
from editkit.retrieval import RetrievalSettings, select


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--updates", type=int, default=1_000)
    args = ap.parse_args()
    val = (Path(__file__).resolve().parents[1]
           / "src/editkit/data/eval/counterfact/counterfact-val.json")
    recs = load_counterfact(default_train_file()) + load_counterfact(val)
    facts = list(dict.fromkeys(r.fact for r in recs))[: args.n]
    questions = [r.fact.rsplit(" ", 1)[0] for r in recs[:300]]
    mem = EditMemory(Path(tempfile.mkdtemp()) / "m.sqlite", index="exact")
    vecs = mem.embedder.encode(facts, batch_size=256)
    history = hasattr(mem, "slot_judge_setting")
    keyed = [{"text": f, "key": f"k{i}"} if history else f for i, f in enumerate(facts)]
    extra = {"on_update": "keep-both"} if history else {}
    for i in range(0, len(facts), 2000):
        mem.add_embedded(keyed[i:i + 2000], vecs[i:i + 2000], **extra)
    if history and args.updates:  # new values for 1,000 keys: 1,000 superseded rows
        upd = [{"text": f"{facts[i]} (updated)", "key": f"k{i}"} for i in range(args.updates)]
        mem.add_embedded(upd, mem.embedder.encode([u["text"] for u in upd]))
        assert len(mem) == len(facts) and len(mem.edits(history=True)) == len(facts) + args.updates
    settings = RetrievalSettings()
    for q in questions[:20]:
        select(mem, q, settings)  # warm: gate loaded, index built
    times = []
    for _ in range(3):
        for q in questions:
            t = time.perf_counter()
            select(mem, q, settings)
            times.append(time.perf_counter() - t)
    out = {"history": history, "rows": len(facts) + (args.updates if history else 0),
           "median_ms": 1000 * statistics.median(times),
           "p90_ms": 1000 * sorted(times)[int(0.9 * len(times))]}
    args.out.write_text(json.dumps(out))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
