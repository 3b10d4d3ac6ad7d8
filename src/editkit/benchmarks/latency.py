"""Ask/score latency and prompt tokens per mode: none vs P-Tokens vs prompt vs IKE.

    python -m editkit.benchmarks.latency --n 50 [--dtypes float32,bfloat16]

Each question is about a fresh edit (the fact is passed in, so nothing is cached and the memory
plays no part; editkit.benchmarks.memory_scale times retrieval). `ask` generates 8 new tokens
greedily;
`score` scores the new and the true object. IKE is then timed again with its prefix KV cache
(`EditableLM(prefix_cache=...)`) on repeated questions about one edit: the rewrite prompt and its
two paraphrases, timing the 2nd and 3rd. All ratios come from this one run.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from .common import data_file, pct, save, table, timed

MODES = ("none", "ptokens", "prompt", "ike")


def questions(n: int) -> list[dict[str, Any]]:
    """Real ROME CounterFact rewrites: fact, question, paraphrases, new and true objects."""
    recs = json.loads(data_file("counterfact", "counterfact-rome-test.json").read_text())
    out = []
    for r in recs[:n]:
        rw = r["requested_rewrite"]
        q = rw["prompt"].format(rw["subject"])
        out.append({"fact": f"{q} {rw['target_new']['str']}.", "question": q,
                    "paraphrases": r["paraphrase_prompts"][:2],
                    "candidates": [rw["target_new"]["str"], rw["target_true"]["str"]]})
    return out


def time_modes(lm: Any, qs: list[dict[str, Any]], modes: tuple[str, ...]) -> dict[str, dict]:
    """Per mode: ask (8 tokens) and score latency over the questions, and prompt tokens.

    The modes take turns on each question (not one mode after the other), so a slow spell of a
    shared machine lands on every mode alike and the same-run ratios stay fair.
    """
    ask_t: dict[str, list[float]] = {m: [] for m in modes}
    score_t: dict[str, list[float]] = {m: [] for m in modes}
    toks: dict[str, list[int]] = {m: [] for m in modes}
    new: dict[str, list[int]] = {m: [] for m in modes}
    for q in qs:
        for mode in modes:
            def ask(q: dict = q, mode: str = mode) -> None:
                a = lm.ask(q["question"], fact=q["fact"], mode=mode, max_new_tokens=8,
                           stop=())
                toks[mode].append(a.prompt_tokens)
                new[mode].append(a.completion_tokens)
            ask_t[mode] += timed(ask, repeat=1, warmup=0)
            score_t[mode] += timed(lambda q=q, mode=mode: lm.score(
                q["question"], q["candidates"], fact=q["fact"], mode=mode), repeat=1, warmup=0)
    return {mode: {"ask_p50_ms": 1e3 * pct(ask_t[mode], .5),
                   "ask_p95_ms": 1e3 * pct(ask_t[mode], .95),
                   "score_p50_ms": 1e3 * pct(score_t[mode], .5),
                   "score_p95_ms": 1e3 * pct(score_t[mode], .95),
                   "prompt_tokens": sum(toks[mode]) / len(toks[mode]),
                   "new_tokens": sum(new[mode]) / len(new[mode])} for mode in modes}


def time_cached(lm: Any, qs: list[dict[str, Any]], modes: tuple[str, ...]) -> dict[str, dict]:
    """Repeated questions about one edit with the prefix cache: time the 2nd and 3rd (the modes
    take turns per edit, as in `time_modes`)."""
    ask_t: dict[str, list[float]] = {m: [] for m in modes}
    score_t: dict[str, list[float]] = {m: [] for m in modes}
    for q in qs:
        for mode in modes:
            for i, text in enumerate([q["question"], *q["paraphrases"]]):
                a = timed(lambda t=text, m=mode, q=q: lm.ask(
                    t, fact=q["fact"], mode=m, max_new_tokens=8, stop=()), repeat=1, warmup=0)
                s = timed(lambda t=text, m=mode, q=q: lm.score(
                    t, q["candidates"], fact=q["fact"], mode=m), repeat=1, warmup=0)
                if i:  # the first question of an edit fills the cache
                    ask_t[mode] += a
                    score_t[mode] += s
    return {f"{m} (prefix cached)": {
        "ask_p50_ms": 1e3 * pct(ask_t[m], .5), "ask_p95_ms": 1e3 * pct(ask_t[m], .95),
        "score_p50_ms": 1e3 * pct(score_t[m], .5), "score_p95_ms": 1e3 * pct(score_t[m], .95)}
        for m in modes}


def time_mixed(lm: Any, mixed: Any, qs: list[dict[str, Any]],
               modes: tuple[str, ...]) -> dict[str, dict]:
    """`ask` with fp32 decoding vs a bf16/fp16 decode copy after the fp32 prefill
    (`EditableLM(decode_dtype=...)`), alternating per question and mode."""
    full: dict[str, list[float]] = {m: [] for m in modes}
    fast: dict[str, list[float]] = {m: [] for m in modes}
    same: dict[str, int] = {m: 0 for m in modes}
    for q in qs:
        for mode in modes:
            out: list[str] = []
            for model, times in ((lm, full[mode]), (mixed, fast[mode])):
                times += timed(lambda model=model, q=q, mode=mode, out=out: out.append(model.ask(
                    q["question"], fact=q["fact"], mode=mode, max_new_tokens=8, stop=()).text),
                    repeat=1, warmup=0)
            same[mode] += out[0] == out[1]
    return {mode: {"ask_p50_ms_fp32_decode": 1e3 * pct(full[mode], .5),
                   "ask_p50_ms_mixed_decode": 1e3 * pct(fast[mode], .5),
                   "speedup": pct(full[mode], .5) / pct(fast[mode], .5),
                   "identical_answers": same[mode] / len(qs)} for mode in modes}


def sweep(lm: Any, qs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How P-Token score latency grows with distractors, m and question length (fp32)."""
    from editkit import EditableLM
    from editkit.building import shipped_ptokens_dir
    from editkit.ptokens import PTokens

    others = [q["fact"] for q in questions(150)][50:]  # real facts of other records
    rows = []

    def run(label: str, value: Any, model: Any, **kw: Any) -> None:
        t, toks = [], []
        for q in qs:
            t += timed(lambda q=q: toks.append(model.score(
                kw.get("prefix", "") + q["question"], q["candidates"], fact=q["fact"],
                mode="ptokens", distractors=kw.get("distractors")).prompt_tokens),
                repeat=1, warmup=0)
        rows.append({"input": label, "value": value, "prompt_tokens": sum(toks) / len(toks),
                     "score_p50_ms": 1e3 * pct(t, .5)})

    for k in (0, 1, 10, 100):
        run("distractors", k, lm, distractors=others[:k])
    for m in (1, 3, 5, 10):
        path = shipped_ptokens_dir(lm.name, m)
        if path is not None:
            pt = PTokens.from_pretrained(path, lm.model, lm.tokenizer, name=lm.name)
            run("m", m, EditableLM(_loaded(lm), pt, lm.memory))
    filler = "In a recent survey of encyclopedic knowledge, one question stood out. "
    for reps in (0, 4, 16):
        run("question length (filler sentences)", reps, lm, prefix=filler * reps)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="questions (fresh edits)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--dtypes", default="float32,bfloat16",
                    help="each is timed in this run; the first is the reference")
    ap.add_argument("--model", default=None, help="model id or path (default: embedded)")
    ap.add_argument("--sweep", action="store_true",
                    help="also time P-Token scoring vs distractors, m and question length")
    ap.add_argument("--decode-dtype", default=None, choices=["bfloat16", "float16"],
                    help="only time ask with fp32 vs this decode dtype after an fp32 prefill")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from editkit import EditableLM

    if args.decode_dtype:
        return _main_mixed(args)

    qs = questions(args.n)
    modes = tuple(args.modes.split(","))
    result: dict[str, Any] = {"n": args.n, "by_dtype": {}}
    for dtype in args.dtypes.split(","):
        lm = EditableLM.from_pretrained(args.model, device="cpu", dtype=dtype)
        lm.ask("Warm up:", max_new_tokens=2)
        lm.score("Warm up:", ["a"], mode="ptokens", fact="Warm up.")
        res = time_modes(lm, qs, modes)
        if "ike" in modes:
            cached = EditableLM(_loaded(lm), lm.ptokens, lm.memory, demos=lm.demos,
                                prefix_cache=2)
            res.update(time_cached(cached, qs, ("ike", "ptokens")))
        result["by_dtype"][dtype] = res
        if args.sweep and dtype == args.dtypes.split(",")[0]:
            result["sweep"] = sweep(lm, qs[:20])
        del lm
    ref = result["by_dtype"][args.dtypes.split(",")[0]]
    rows = []
    for dtype, res in result["by_dtype"].items():
        for mode, r in res.items():
            rows.append([dtype, mode, r.get("prompt_tokens", "-"), r["ask_p50_ms"],
                         r["ask_p95_ms"], r["score_p50_ms"], r["score_p95_ms"],
                         r["ask_p50_ms"] / ref["none"]["ask_p50_ms"] if "none" in ref else "-",
                         r["score_p50_ms"] / ref["prompt"]["score_p50_ms"]
                         if "prompt" in ref else "-"])
    print(table(["dtype", "mode", "prompt tokens", "ask p50 ms", "ask p95 ms", "score p50 ms",
                 "score p95 ms", "ask / none (fp32)", "score / prompt (fp32)"], rows))
    if {"ptokens", "ike"} <= set(ref):
        result["ratios"] = {
            "ask_ptokens_over_none": ref["ptokens"]["ask_p50_ms"] / ref["none"]["ask_p50_ms"],
            "score_ptokens_over_prompt": ref["ptokens"]["score_p50_ms"]
            / ref["prompt"]["score_p50_ms"],
            "ike_over_ptokens_score": ref["ike"]["score_p50_ms"] / ref["ptokens"]["score_p50_ms"],
            "ike_over_ptokens_ask": ref["ike"]["ask_p50_ms"] / ref["ptokens"]["ask_p50_ms"],
            "ptokens_over_ike_prompt_tokens": ref["ptokens"]["prompt_tokens"]
            / ref["ike"]["prompt_tokens"]}
        print("\n" + "\n".join(f"{k}: {v:.3f}" for k, v in result["ratios"].items()))
    if "sweep" in result:
        print("\n" + table(["input", "value", "prompt tokens", "score p50 ms"],
                           [[r["input"], r["value"], r["prompt_tokens"], r["score_p50_ms"]]
                            for r in result["sweep"]]))
    result["torch_threads"] = torch.get_num_threads()
    print("wrote", save("latency", result, args.json))
    return result


def _main_mixed(args: Any) -> dict:
    from editkit import EditableLM

    lm = EditableLM.from_pretrained(args.model, device="cpu")
    mixed = EditableLM(_loaded(lm), lm.ptokens, lm.memory, demos=lm.demos,
                       decode_dtype=args.decode_dtype)
    for m in (lm, mixed):
        m.ask("Warm up:", max_new_tokens=2)
    res = time_mixed(lm, mixed, questions(args.n), tuple(args.modes.split(",")))
    print(table(["mode", "ask p50 ms (fp32 decode)", f"ask p50 ms ({args.decode_dtype} decode)",
                 "speedup", "identical answers"],
                [[m, r["ask_p50_ms_fp32_decode"], r["ask_p50_ms_mixed_decode"], r["speedup"],
                  r["identical_answers"]] for m, r in res.items()]))
    result = {"n": args.n, "decode_dtype": args.decode_dtype, "by_mode": res,
              "torch_threads": torch.get_num_threads()}
    print("wrote", save("latency-mixed-decode", result, args.json))
    return result


def _loaded(lm: Any) -> Any:
    from editkit.loading import LoadedModel

    return LoadedModel(model=lm.model, tokenizer=lm.tokenizer, name=lm.name)


if __name__ == "__main__":
    main()
