"""Which chat-template wording makes the default model use a fact in its free answer?

A research probe for the training issue (what users read): the plain-prompt mode is the P-Tokens'
teacher and the baseline they must beat, so a wording under which the unedited model follows the
fact more often is a stronger teacher. Each variant puts the record's own fact and the question
into SmolLM2's chat template differently; the model answers greedily (up to 64 tokens, to its end
of turn) and the answer is judged as the wild task judges it (contains the new object,
`eval.matching.matches`). Validation records only (the wild-val split of the training run).

    .venv/bin/python scripts/chat_layout_probe.py results/wild-val-2026-12-04/zsre-val.json --out X
"""
from __future__ import annotations

import argparse
import json
import time

from editkit import EditableLM
from editkit.datasets import ZsreRecord
from editkit.eval.matching import matches

VARIANTS = {
    "current": lambda f, q: ([("user", f"New Fact: {f}\nPrompt: {q}")], ""),
    "bare": lambda f, q: ([("user", f"{f}\n{q}")], ""),
    "instruct": lambda f, q: ([("user", f"Fact: {f}\nAnswer the question using this fact.\n"
                                        f"Question: {q}")], ""),
    "system": lambda f, q: ([("system", "You are a helpful AI assistant. Use this fact when you "
                                        f"answer: {f}"), ("user", q)], ""),
    "prefill": lambda f, q: ([("user", f"New Fact: {f}\nPrompt: {q}")],
                             "According to the new fact,"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    lm = EditableLM.from_pretrained(mode="prompt")
    tok = lm.tokenizer
    recs = [ZsreRecord(**r) for r in json.load(open(args.data))]
    recs = [r for r in recs if r.alt.strip()][: args.limit]
    out: dict = {"data": args.data, "records": len(recs), "variants": {}}
    gen = lm.engine.generator  # the product's batched greedy decoder
    for name in args.variants.split(","):
        t0, hits, rows = time.time(), {"edit": [], "rephrase": []}, []
        asked = [(r, kind, q) for r in recs for kind, q in (("edit", r.src),
                                                            ("rephrase", r.rephrase))]
        ids = []
        for r, _, q in asked:
            msgs, prefill = VARIANTS[name](r.fact, q)
            text = tok.apply_chat_template([{"role": a, "content": c} for a, c in msgs],
                                           tokenize=False, add_generation_prompt=True)
            ids.append(tok(text + prefill, add_special_tokens=False)["input_ids"])
        outs = gen.generate_many(ids, max_new_tokens=64, stop=(), batch_size=16)
        for (r, kind, q), g in zip(asked, outs):
            ans = g.text
            hit = matches(ans, [r.alt])
            hits[kind].append(hit)
            rows.append({"kind": kind, "question": q, "new": r.alt, "answer": ans, "hit": hit})
        res = {k: 100 * sum(v) / len(v) for k, v in hits.items()}
        out["variants"][name] = {**res, "seconds": round(time.time() - t0), "rows": rows}
        print(f"{name:10s} edit {res['edit']:5.1f}  rephrase {res['rephrase']:5.1f}  "
              f"({time.time() - t0:.0f} s)", flush=True)
        json.dump(out, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
