"""What the retrieval policy costs an `ask`: the policy alone against the ask it serves.

    python -m editkit.benchmarks.retrieval --memory-size 10000 --n 20

A memory holds the evaluated ROME CounterFact facts plus real-looking filler facts (cached
vectors, `editkit.benchmarks.facts`) up to `--memory-size`. For each question (a record's rewrite
prompt, one paraphrase and one neighbourhood prompt), in turn on the same question:
- `select`: the retrieval policy alone (embedding the question's views, the index search, the
  relevance gate), for the learned and the threshold gate;
- `ask`: an 8-token P-Token answer with the record's fact given (no retrieval);
- `ask via memory`: the same question answered through the memory (policy + generation).
The overhead the policy adds to an ask is select p50 / ask p50, from this one run.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from .common import data_file, pct, save, table, timed
from .facts import facts, vectors


def _records(n: int) -> list[dict[str, Any]]:
    recs = json.loads(data_file("counterfact", "counterfact-rome-test.json").read_text())
    out = []
    for r in recs[:n]:
        rw = r["requested_rewrite"]
        q = rw["prompt"].format(rw["subject"])
        out.append({"fact": f"{q} {rw['target_new']['str']}.",
                    "questions": [q, r["paraphrase_prompts"][0], r["neighborhood_prompts"][0]]})
    return out


def run(memory_size: int, n: int) -> dict[str, Any]:
    from editkit import EditableLM, EditMemory
    from editkit.embedder import shared_embedder
    from editkit.retrieval import RetrievalSettings, select

    recs = _records(n)
    fillers = [f for f in facts(memory_size) if f not in {r["fact"] for r in recs}]
    fillers = fillers[: memory_size - len(recs)]
    memory = EditMemory(None)
    # independent records, not updates of each other: stored side by side
    memory.add([r["fact"] for r in recs], namespace="bench", on_update="keep-both")
    memory.add_embedded(fillers, vectors(fillers, f"retrieval-fillers-n{n}"), namespace="bench",
                        on_update="keep-both")
    lm = EditableLM.from_pretrained(memory=memory, namespace="bench")
    shared_embedder().encode(["warm up"])
    lm.ask(recs[0]["questions"][0], fact=recs[0]["fact"], max_new_tokens=8)  # warm up
    settings = {g: RetrievalSettings(gate=g, namespace="bench") for g in ("learned", "threshold")}
    t: dict[str, list[float]] = {k: [] for k in (
        "select learned", "select threshold", "ask (fact given)", "ask via memory")}
    placed = 0
    for r in recs:
        for q in r["questions"]:
            for g, s in settings.items():
                t[f"select {g}"] += timed(lambda q=q, s=s: select(memory, q, s),
                                          repeat=1, warmup=0)
            t["ask (fact given)"] += timed(lambda q=q, r=r: lm.ask(
                q, fact=r["fact"], max_new_tokens=8, stop=()), repeat=1, warmup=0)
            t["ask via memory"] += timed(lambda q=q: lm.ask(q, max_new_tokens=8, stop=()),
                                         repeat=1, warmup=0)
            placed += select(memory, q, settings["learned"]).edit is not None
    ask = pct(t["ask (fact given)"], .5)
    rows = {k: {"p50_ms": 1e3 * pct(v, .5), "p95_ms": 1e3 * pct(v, .95),
                "share_of_ask_p50": pct(v, .5) / ask} for k, v in t.items()}
    return {"memory_size": len(memory), "questions": 3 * len(recs),
            "placed_an_edit": placed, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m editkit.benchmarks.retrieval",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory-size", type=int, default=10000)
    ap.add_argument("--n", type=int, default=20, help="records (3 questions each)")
    ap.add_argument("--json", default=None, help="output file (default results/bench/)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.memory_size < args.n:
        ap.error("need --n >= 1 and --memory-size >= --n")
    res = run(args.memory_size, args.n)
    print(table(["", "p50 ms", "p95 ms", "÷ ask p50"],
                [[k, f"{v['p50_ms']:.1f}", f"{v['p95_ms']:.1f}", f"{v['share_of_ask_p50']:.3f}"]
                 for k, v in res["rows"].items()]))
    print(f"{res['memory_size']} edits in memory, {res['questions']} questions, "
          f"{res['placed_an_edit']} placed an edit (learned gate)")
    save("retrieval", res, args.json)
    return res


if __name__ == "__main__":
    main()
