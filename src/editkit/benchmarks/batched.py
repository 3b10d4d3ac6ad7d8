"""Many questions at once: `ask_many` / `score_many` against one call per question, same run.

    editkit bench batched --n 16 --max-new-tokens 16 --batch-sizes 4,16

The questions are real ROME CounterFact rewrite prompts whose edits are stored in the memory, so
both columns include retrieval. Each question is answered greedily (`ask`, `max_new_tokens`) and
scored on its new and true object (`score`), once per question and then through the batched call;
the ratios are throughput over the one-at-a-time calls measured in this run, and the batched
answers are checked against the single ones. Each `ask_many` runs twice: with the model's prefix
store emptied first (nothing asked before), then again, when every edit's prefix is stored from
the first call (what a process that keeps answering about its edits sees); a lone `ask` never
reuses stored prefixes.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from .common import save, table
from .latency import questions


def _seconds(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="questions")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="4,16")
    ap.add_argument("--mode", default="ptokens")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from editkit import EditableLM

    lm = EditableLM.from_pretrained(mode=args.mode)
    qs = questions(args.n)
    lm.edit([q["fact"] for q in qs])
    texts = [q["question"] for q in qs]
    cands = [q["candidates"] for q in qs]
    lm.ask(texts[0], max_new_tokens=2)  # warm: first-call allocations, embedder load
    lm.score(texts[0], cands[0])
    k = args.max_new_tokens
    base_ask, single = _seconds(lambda: [lm.ask(t, max_new_tokens=k, stop=()) for t in texts])
    base_score, scored = _seconds(lambda: [lm.score(t, c) for t, c in zip(texts, cands)])
    rows: list[list[Any]] = [["ask, one at a time", base_ask, args.n / base_ask, 1.0, "-"],
                             ["score, one at a time", base_score, args.n / base_score, 1.0, "-"]]
    result: dict[str, Any] = {"n": args.n, "max_new_tokens": k, "mode": args.mode,
                              "ask_one_at_a_time_s": base_ask,
                              "score_one_at_a_time_s": base_score, "batched": []}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        lm.generator.prefixes.clear()
        for stored in (False, True):
            s, many = _seconds(lambda bs=bs: lm.ask_many(texts, max_new_tokens=k,
                                                                  batch_size=bs, stop=()))
            same = sum(a.text == b.text for a, b in zip(single, many))
            rows.append([f"ask_many, batches of {bs}" + (", edit prefixes stored" if stored
                                                          else ""),
                         s, args.n / s, base_ask / s, f"{same}/{args.n}"])
            result["batched"].append({"call": "ask_many", "batch_size": bs,
                                      "prefixes_stored": stored, "seconds": s,
                                      "speedup": base_ask / s, "answers_equal": same})
    s, many_scores = _seconds(lambda: lm.score_many(texts, cands))
    same = sum(abs(a.scores[0].mean_logprob - b.scores[0].mean_logprob) < 1e-3
               for a, b in zip(scored, many_scores))
    rows.append(["score_many", s, args.n / s, base_score / s, f"{same}/{args.n}"])
    result["batched"].append({"call": "score_many", "seconds": s, "speedup": base_score / s,
                              "scores_equal": same})
    print(table(["call", "seconds", "questions/s", "× one at a time", "same answers"], rows))
    print(f"wrote {save('batched', result, args.json)}")
    return result


if __name__ == "__main__":
    main()
