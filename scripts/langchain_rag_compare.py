"""P-Token RAG vs plain-context RAG on CounterFact, through the LangChain integration.

Corpus: the new (counterfactual) fact of each of the first N records of ROME's CounterFact, one
LangChain Document each ("{prompt.format(subject)} {target_new}"), indexed in an
InMemoryVectorStore with editkit's MiniLM embeddings. For every question the retriever returns
the top k documents, which reach the model in one of these ways:

  none     no retrieval, the question alone (the model's prior)
  stuff    plain-context RAG: all k documents as lines before the question
  prompt   plain-context RAG, editkit layout: best document as `New Fact:`, the rest distractors
  ptokens  P-Token RAG: best document wrapped in P-Tokens, the rest distractors

Metric (ROME protocol, inline scoring, no chat template): `lm.score(question, [new, true])`;
paraphrase and rewrite prompts count as right when P(new) > P(true) (the edit generalises),
neighbourhood prompts (other subjects) when P(true) > P(new) (the edit does not leak). Prompt
tokens are the mean prompt length per question.

    .venv/bin/python scripts/langchain_rag_compare.py --n 50 --k 3
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

CONDITIONS = ("none", "stuff", "prompt", "ptokens")
LABELS = {
    "none": "no RAG (question alone)",
    "stuff": "plain-context RAG (k docs stuffed)",
    "prompt": "plain-context RAG (best as `New Fact:`, rest distractors)",
    "ptokens": "P-Token RAG (best as P-Token edit, rest distractors)",
}


def default_data() -> Path:
    from editkit.data_files import data_file

    return data_file("counterfact", "counterfact-rome-test.json")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (100 * (c - h), 100 * (c + h))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--n", type=int, default=50, help="records (corpus size)")
    ap.add_argument("--k", type=int, default=3, help="documents retrieved per question")
    ap.add_argument("--neighborhood", type=int, default=2, help="neighbourhood prompts/record")
    ap.add_argument("--json", type=Path, default=None, help="write per-question results here")
    args = ap.parse_args(argv)

    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from editkit import EditableLM
    from editkit.datasets import load_records
    from editkit.integrations.langchain import EditkitEmbeddings, docs_to_edit_kwargs
    from editkit.integrations.langchain.rag import stuffed_question

    t0 = time.time()
    _, records = load_records(args.data, "counterfact-rome")
    records = records[: args.n]
    lm = EditableLM.from_pretrained()  # embedded SmolLM2-135M-Instruct, default P-Tokens
    corpus = [Document(r.fact, id=str(r.case_id), metadata={"case_id": r.case_id})
              for r in records]
    retriever = InMemoryVectorStore.from_documents(corpus, EditkitEmbeddings()).as_retriever(
        search_kwargs={"k": args.k})

    questions: list[dict[str, Any]] = []
    for r in records:
        rw = r.requested_rewrite
        new, true = rw.target_new.text, rw.target_true.text
        items = [("rewrite", rw.text)] + [("paraphrase", p) for p in r.paraphrase_prompts]
        items += [("neighborhood", p) for p in r.neighborhood_prompts[: args.neighborhood]]
        for kind, q in items:
            questions.append({"case_id": r.case_id, "kind": kind, "question": q,
                              "new": new, "true": true})

    rows: list[dict[str, Any]] = []
    for i, item in enumerate(questions):
        docs = retriever.invoke(item["question"])
        own = [int(d.metadata["case_id"]) for d in docs]
        row = {**item, "retrieved": own, "hit1": bool(own) and own[0] == item["case_id"]}
        for cond in CONDITIONS:
            if cond == "none":
                kw: dict[str, Any] = {"mode": "none"}
                question = item["question"]
            elif cond == "stuff":
                kw, question = {"mode": "none"}, stuffed_question(docs, item["question"])
            else:
                kw, question = docs_to_edit_kwargs(docs, mode=cond), item["question"]
            s = lm.score(question, [item["new"], item["true"]], chat=False, **kw)
            lp = s.as_dict()
            row[cond] = {"new": lp[item["new"]], "true": lp[item["true"]],
                         "prompt_tokens": s.prompt_tokens}
        rows.append(row)
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(questions)} questions ({time.time() - t0:.0f} s)",
                  file=sys.stderr)

    def right(row: dict[str, Any], cond: str) -> bool:
        r = row[cond]
        return r["true"] > r["new"] if row["kind"] == "neighborhood" else r["new"] > r["true"]

    kinds = ("paraphrase", "rewrite", "neighborhood")
    count = {k: sum(1 for r in rows if r["kind"] == k) for k in kinds}
    print(f"\nCounterFact (ROME test file), first {len(records)} records; corpus = their "
          f"{len(corpus)} new facts; k = {args.k}; {lm.name}; P-Tokens: {lm.ptokens_source}.")
    print(f"Questions: {count['paraphrase']} paraphrase, {count['rewrite']} rewrite, "
          f"{count['neighborhood']} neighbourhood prompts. Retrieval hit@1 (own fact first): "
          + ", ".join(f"{k} {100 * sum(r['hit1'] for r in rows if r['kind'] == k) / count[k]:.0f}%"
                      for k in ("paraphrase", "rewrite")) + ".\n")
    print("| condition | paraphrase P(new)>P(true) | rewrite P(new)>P(true) "
          "| neighbourhood P(true)>P(new) | mean prompt tokens (paraphrase) |")
    print("|---|---|---|---|---|")
    for cond in CONDITIONS:
        cells = []
        for k in kinds:
            hits = sum(right(r, cond) for r in rows if r["kind"] == k)
            lo, hi = wilson(hits, count[k])
            cells.append(f"{100 * hits / count[k]:.1f}% ({hits}/{count[k]}; 95% CI "
                         f"{lo:.0f}–{hi:.0f})")
        toks = [r[cond]["prompt_tokens"] for r in rows if r["kind"] == "paraphrase"]
        print(f"| {LABELS[cond]} | " + " | ".join(cells) + f" | {sum(toks) / len(toks):.1f} |")
    print(f"\n({time.time() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
