"""Load on `editkit serve` over loopback: concurrent clients against sequential requests, same run.

    editkit bench serve_load --clients 16 --requests 4 --max-tokens 16
    editkit bench serve_load --clients 16 --requests 100 --edit-every 10 --skip-baselines

The server runs in this process (uvicorn on 127.0.0.1, a free port) with the default model and
an in-RAM memory. Each client has its own API key, hence its own namespace, holding one edit,
and its own HTTP connection (kept open, as the `openai` client keeps one); it asks about its
edit (greedy chat completions): the CounterFact question, or with `--paraphrases` the question
and its two paraphrases in turn (longer and unequal prompts: more prefill, uneven rows).

First every client sends one request, untimed: the server then holds what it holds after
running a while (each tenant's edit prefix, `--prefix-store-mb`). Then `--rounds` rounds, each
one pass of the baselines followed by the load, so that a slow spell of a shared machine lands
on both: the baselines are the same questions sent one at a time over HTTP, alternating with
in-process `ask` (the latency a single client should stay near); the load is every client
sending `--requests` requests at once, each after its previous answer. The speed-up is the
load's requests/s over the sequential requests/s, pooled over the rounds (and per round).

With `--edit-every N` each client also adds an edit over HTTP before every N-th request. Errors
are counted, and afterwards every key must list exactly its own edits, each one acknowledged
(tenants isolated, no acknowledged edit lost). Bounded: it stops after its rounds.
"""
from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from .common import pct, save, table
from .latency import questions


def _batcher_counts(batcher: Any) -> dict[str, int]:
    return {k: getattr(batcher, k) for k in ("requests", "batches", "joined", "steps",
                                             "row_steps", "prefills")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="per client and round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="baseline pass + load, this many times (1 with --skip-baselines)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--edit-every", type=int, default=0,
                    help="each client adds an edit before every N-th request (0: never)")
    ap.add_argument("--paraphrases", action="store_true",
                    help="ask the question and its two paraphrases in turn")
    ap.add_argument("--prefix-store-mb", type=float, default=64.0,
                    help="the server's store of edit prefixes (0: off)")
    ap.add_argument("--skip-baselines", action="store_true",
                    help="only the concurrent load (for long runs); no speed-up is computed")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rounds = 1 if args.skip_baselines else args.rounds
    import httpx

    from editkit import EditableLM
    from editkit.serve import serve_in_thread

    lm = EditableLM.from_pretrained(prefix_store_mb=args.prefix_store_mb)
    qs = questions(args.clients)
    keys = {f"key-{i}": f"tenant-{i}" for i in range(args.clients)}
    for i, q in enumerate(qs):
        lm.edit(q["fact"], namespace=f"tenant-{i}")
    srv, url = serve_in_thread(lm, keys)
    # one HTTP client per tenant, kept open (keep-alive), as the `openai` client holds one: a
    # fresh `httpx.Client` per request costs ~17 ms of CPU (its TLS context) on this machine,
    # which 16 clients would spend on the server's cores and under its GIL
    http = [httpx.Client(base_url=url, timeout=600,
                         headers={"Authorization": f"Bearer key-{i}"})
            for i in range(args.clients)]

    def asked(i: int, n: int) -> str:
        """Client i's n-th question: its question (and paraphrases in turn)."""
        variants = [qs[i]["question"], *(qs[i]["paraphrases"] if args.paraphrases else [])]
        return variants[(i + n) % len(variants)]

    def request(i: int, n: int) -> tuple[float, dict[str, Any] | None]:
        body = {"model": "editkit", "max_tokens": args.max_tokens,
                "messages": [{"role": "user", "content": asked(i, n)}]}
        t = time.perf_counter()
        try:
            r = http[i].post("/v1/chat/completions", json=body)
            out = r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            out = None
        return time.perf_counter() - t, out

    acked: dict[int, list[str]] = {i: [qs[i]["fact"]] for i in range(args.clients)}
    edit_errors = 0

    def add_edit(i: int, r: int) -> None:
        nonlocal edit_errors
        fact = f"The code word of tenant {i} for round {r} is w{r}x{i}."
        try:
            resp = http[i].post("/v1/edits", json={"facts": [fact]})
            ok = resp.status_code == 200 and resp.json()["data"][0]["text"] == fact
        except httpx.HTTPError:
            ok = False
        with lock:
            if ok:
                acked[i].append(fact)
            else:
                edit_errors += 1

    lock = threading.Lock()
    inproc: list[float] = []
    seq: list[tuple[float, Any]] = []
    lat: list[float] = []
    results: list[dict[str, Any] | None] = []
    per_round: list[dict[str, float]] = []
    b = dict.fromkeys(("requests", "batches", "joined", "steps", "row_steps", "prefills"), 0)
    store = lm.generator.prefixes
    hits = misses = 0
    try:
        for i in range(args.clients):  # warm: every tenant once, untimed
            request(i, 0)
        for rnd in range(rounds):
            seq_s = 0.0
            if not args.skip_baselines:
                # one at a time, alternating in-process `ask` (the floor a single client is
                # compared with) and the same question over HTTP
                for i in range(args.clients):
                    t = time.perf_counter()
                    lm.ask(asked(i, rnd), namespace=f"tenant-{i}", chat=lm.has_chat_template,
                           stop=(), max_new_tokens=args.max_tokens)  # what the server runs
                    inproc.append(time.perf_counter() - t)
                    s, out = request(i, rnd)
                    seq.append((s, out))
                    seq_s += s

            def client(i: int, rnd: int = rnd) -> None:
                for r in range(args.requests):
                    if args.edit_every and r % args.edit_every == 0:
                        add_edit(i, r)
                    s, out = request(i, rnd * args.requests + r)
                    with lock:
                        lat.append(s)
                        results.append(out)

            counts = _batcher_counts(lm.batcher)
            h0, m0 = store.hits, store.misses
            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            load_s = time.perf_counter() - t0
            for k, v in _batcher_counts(lm.batcher).items():  # the load only
                b[k] += v - counts[k]
            hits, misses = hits + store.hits - h0, misses + store.misses - m0
            per_round.append({"load_seconds": load_s, "sequential_seconds": seq_s,
                              "speedup": ((args.clients * args.requests / load_s)
                                          / (args.clients / seq_s)) if seq_s else 0.0})
        # each key lists exactly its own edits: every acknowledged one, nobody else's
        listed = {i: [e["text"] for e in http[i].get("/v1/edits").json()["data"]]
                  for i in range(args.clients)}
    finally:
        for c in http:
            c.close()
        srv.should_exit = True
    isolated = all(set(listed[i]) <= set(acked[i]) for i in range(args.clients))
    lost = sum(len(set(acked[i]) - set(listed[i])) for i in range(args.clients))
    n = args.clients * args.requests * rounds
    load_total = sum(r["load_seconds"] for r in per_round)
    seq_total = sum(r["sequential_seconds"] for r in per_round)
    load_rps = n / load_total
    errors = sum(r is None for r in results) + sum(o is None for _, o in seq) + edit_errors
    seq_lat = [s for s, _ in seq]
    rows = [[f"HTTP, {args.clients} clients × {args.requests}" + (
        f", {rounds} rounds" if rounds > 1 else ""), pct(lat, 0.5), pct(lat, 0.95), load_rps,
        load_rps / (len(inproc) / sum(inproc)) if inproc else "-"]]
    if inproc:
        rows[:0] = [["in-process ask, one at a time", pct(inproc, 0.5), pct(inproc, 0.95),
                     len(inproc) / sum(inproc), 1.0],
                    ["HTTP, one request at a time", pct(seq_lat, 0.5), pct(seq_lat, 0.95),
                     len(seq) / seq_total, (len(seq) / seq_total) / (len(inproc) / sum(inproc))]]
    print(table(["", "p50 s", "p95 s", "requests/s", "× in-process one at a time"], rows))
    speedup = load_rps / (len(seq) / seq_total) if seq else None
    each = ", ".join(f"{r['speedup']:.1f}x" for r in per_round)
    if inproc:
        print(f"one client over HTTP: p50 {pct(seq_lat, 0.5) / pct(inproc, 0.5) - 1:+.0%} against "
              f"in-process ask; {args.clients} clients: {speedup:.1f}x one request at a time "
              f"over HTTP (per round: {each})")
    print(f"errors: {errors}; edits acknowledged: {sum(map(len, acked.values()))}, lost: {lost}; "
          f"tenants isolated: {isolated}; under load: batches started: {b['batches']}, requests "
          f"that joined a running batch: {b['joined']} of {b['requests']}, prefill forwards: "
          f"{b['prefills']}, decode steps: {b['steps']} with "
          f"{b['row_steps'] / max(b['steps'], 1):.1f} rows on average; edit prefixes reused: "
          f"{hits} of {hits + misses} looked up (store {args.prefix_store_mb:g} MB)")
    result = {"clients": args.clients, "requests_per_client": args.requests, "rounds": rounds,
              "paraphrases": args.paraphrases,
              "max_tokens": args.max_tokens, "edit_every": args.edit_every,
              "prefix_store_mb": args.prefix_store_mb, "errors": errors,
              "edits_acknowledged": sum(map(len, acked.values())), "edits_lost": lost,
              "tenants_isolated": isolated, "load_p50_s": pct(lat, 0.5),
              "load_p95_s": pct(lat, 0.95), "load_rps": load_rps, "load_seconds": load_total,
              "batches": b["batches"], "joined": b["joined"], "batched_requests": b["requests"],
              "decode_steps": b["steps"], "prefills": b["prefills"],
              "mean_rows_per_step": b["row_steps"] / max(b["steps"], 1),
              "prefix_hits": hits, "prefix_lookups": hits + misses, "per_round": per_round}
    if inproc:
        result.update({"inprocess_p50_s": pct(inproc, 0.5),
                       "http_sequential_p50_s": pct(seq_lat, 0.5),
                       "http_sequential_rps": len(seq) / seq_total,
                       "one_client_p50_over_inprocess": pct(seq_lat, 0.5) / pct(inproc, 0.5),
                       "speedup_over_sequential_http": speedup})
    print(f"wrote {save('serve_load', result, args.json)}")
    return result


if __name__ == "__main__":
    main()
