"""editkit in process, `editkit serve`, a bare inference engine and `editkit serve --engine` in
front of it: the same held-out edits and questions, one-by-one and concurrent, in one run.

    editkit bench engines --clients 16 --max-tokens 16 --rounds 2

The engine is `transformers serve --continuous-batching` (it ships with transformers) on an
`editkit export` of the default model with its shipped P-Tokens. Four ways to answer the same
`--clients` CounterFact questions (each about its own held-out edit, greedy, `--max-tokens`
tokens, no stop: the same work everywhere):

- `ask_many`: the in-process runtime, all questions in one call (retrieval and gate included);
- `editkit serve`: the in-process engine behind editkit's HTTP API (`/v1/completions`);
- bare engine: the export's rendered prompts (built client-side beforehand, not timed) sent
  straight to the engine's `/v1/completions`;
- `editkit serve --engine`: editkit's API, memory, retrieval, gate and layout in front of the
  same engine.

Each server runs in its own process on loopback, started and stopped by this benchmark; a warm-up
request per client first. Per round: every client once, one after another (p50 latency), then all
clients at once (wall time). Ratios are against the bare engine of the same run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .common import free_port, pct, save, start_process, stop_process, table


def _load(post: Any, bodies: list[dict[str, Any]]) -> tuple[list[float], float]:
    """(one-by-one latencies, wall time of all at once)."""
    seq = []
    for b in bodies:
        t = time.perf_counter()
        post(b)
        seq.append(time.perf_counter() - t)
    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return seq, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import httpx

    from editkit import EditableLM
    from editkit.export import export_hf

    from .latency import questions

    qs = questions(args.clients)  # held-out CounterFact rewrites: fact and question
    facts, prompts = [q["fact"] for q in qs], [q["question"] for q in qs]
    local = EditableLM.from_pretrained()
    local.edit(facts)
    tmp = Path(tempfile.mkdtemp(prefix="editkit-engines-"))
    export = export_hf(local.model, local.tokenizer, local.ptokens, tmp / "export")
    exe = str(Path(sys.executable).parent / "transformers")
    ports = [free_port() for _ in range(3)]
    engine_url = f"http://127.0.0.1:{ports[0]}/v1"
    # continuous batching with a bounded KV cache (unbounded, it takes ~14 GB on a CPU)
    procs = [start_process([exe, "serve", str(export), "--continuous-batching",
                            "--cb-num-blocks", "256", "--cb-block-size", "32", "--host",
                            "127.0.0.1", "--port", str(ports[0]), "--device", "cpu",
                            "--log-level", "warning"], f"{engine_url}/models")]
    cli = [sys.executable, "-m", "editkit.cli", "serve", "--host", "127.0.0.1"]
    serve_urls = [f"http://127.0.0.1:{p}/v1" for p in ports[1:]]
    try:
        procs.append(start_process(cli + ["--port", str(ports[1])], f"{serve_urls[0]}/models"))
        procs.append(start_process(cli + ["--port", str(ports[2]), "--model", str(export),
                                   "--engine", engine_url], f"{serve_urls[1]}/models"))
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64))
        for url in serve_urls:
            client.post(f"{url}/edits", json={"facts": facts}).raise_for_status()
        remote = EditableLM.from_pretrained(export, engine=engine_url)
        remote.edit(facts)
        texts = [remote.engine.prompt_text(remote.prompt(q)[0]) for q in prompts]
        served_model = remote.engine.model
        common = {"max_tokens": args.max_tokens, "temperature": 0.0}
        targets = {
            "editkit serve": (serve_urls[0], [{"model": "editkit", "prompt": q, **common}
                                              for q in prompts]),
            "bare engine (transformers serve, continuous batching)": (
                engine_url, [{"model": served_model, "prompt": t, **common} for t in texts]),
            "editkit serve --engine (same engine)": (
                serve_urls[1], [{"model": "editkit", "prompt": q, **common} for q in prompts]),
        }
        answers: dict[str, list[str]] = {}

        def poster(url: str, name: str) -> Any:
            def post(body: dict[str, Any]) -> None:
                r = client.post(f"{url}/completions", json=body)
                r.raise_for_status()
                answers.setdefault(name, []).append(r.json()["choices"][0]["text"])
            return post

        for name, (url, bodies) in targets.items():  # warm-up, untimed
            for b in bodies:
                poster(url, name)(b)
        results: dict[str, dict[str, list[float]]] = {n: {"seq": [], "wall": []}
                                                      for n in ["ask_many", *targets]}
        for _ in range(args.rounds):
            t = time.perf_counter()
            local.ask_many(prompts, max_new_tokens=args.max_tokens, stop=())
            results["ask_many"]["wall"].append(time.perf_counter() - t)
            for name, (url, bodies) in targets.items():
                answers.pop(name, None)
                seq, wall = _load(poster(url, name), bodies)
                results[name]["seq"] += seq
                results[name]["wall"].append(wall)
    finally:
        for p in procs:
            stop_process(p)
    base = "bare engine (transformers serve, continuous batching)"
    base_wall = pct(results[base]["wall"], 50)
    base_p50 = pct(results[base]["seq"], 50)
    rows = []
    for name, r in results.items():
        wall = pct(r["wall"], 50)
        p50 = pct(r["seq"], 50) if r["seq"] else None
        rows.append([name, f"{p50 * 1000:.0f}" if p50 else "-",
                     f"{p50 / base_p50:.2f}x" if p50 else "-", f"{wall:.2f}",
                     f"{args.clients / wall:.1f}", f"{base_wall / wall:.2f}x"])
    print(table(["", "one-by-one p50 ms", "p50 vs bare", f"{args.clients} at once, s",
                 "req/s", "speed vs bare"], rows))
    # editkit strips the answer's surrounding whitespace; a bare engine returns it raw
    same = len({tuple(sorted(x.strip() for x in a)) for a in answers.values()}) == 1
    print(f"same answers from editkit serve, the bare engine and editkit serve --engine: {same}")
    out = {"clients": args.clients, "max_tokens": args.max_tokens, "rounds": args.rounds,
           "results": results, "same_answers": same}
    save("engines", out, args.json)
    return out
