"""Load on `editkit serve` over loopback: concurrent clients against sequential requests, same run.

    editkit bench serve_load --clients 16 --requests 4 --max-tokens 16
    editkit bench serve_load --clients 16 --requests 100 --edit-every 10 --skip-baselines

The server runs in this process (uvicorn on 127.0.0.1, a free port) with the default model and
an in-RAM memory. Each client has its own API key, hence its own namespace, holding one edit;
it asks about its edit `--requests` times (greedy chat completions). Baselines measured in the
same run: the same questions sent one at a time over HTTP, and in-process `ask` (the latency a
single client should stay near). With `--edit-every N` each client also adds an edit over HTTP
before every N-th request. Errors are counted, and afterwards every key must list exactly its
own edits, each one acknowledged (tenants isolated, no acknowledged edit lost). Bounded: it stops
after clients × requests requests.
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
    ap.add_argument("--requests", type=int, default=4, help="per client")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--edit-every", type=int, default=0,
                    help="each client adds an edit before every N-th request (0: never)")
    ap.add_argument("--skip-baselines", action="store_true",
                    help="only the concurrent load (for long runs); no speed-up is computed")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import httpx

    from editkit import EditableLM
    from editkit.serve import serve_in_thread

    lm = EditableLM.from_pretrained()
    qs = questions(args.clients)
    keys = {f"key-{i}": f"tenant-{i}" for i in range(args.clients)}
    for i, q in enumerate(qs):
        lm.edit(q["fact"], namespace=f"tenant-{i}")
    srv, url = serve_in_thread(lm, keys)

    def request(i: int) -> tuple[float, dict[str, Any] | None]:
        body = {"model": "editkit", "max_tokens": args.max_tokens,
                "messages": [{"role": "user", "content": qs[i]["question"]}]}
        t = time.perf_counter()
        try:
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600,
                           headers={"Authorization": f"Bearer key-{i}"})
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
            resp = httpx.post(f"{url}/v1/edits", json={"facts": [fact]}, timeout=600,
                              headers={"Authorization": f"Bearer key-{i}"})
            ok = resp.status_code == 200 and resp.json()["data"][0]["text"] == fact
        except httpx.HTTPError:
            ok = False
        with lock:
            if ok:
                acked[i].append(fact)
            else:
                edit_errors += 1

    lock = threading.Lock()
    try:
        request(0)  # warm
        inproc: list[float] = []
        seq: list[tuple[float, Any]] = []
        seq_s = 0.0
        if not args.skip_baselines:
            # one at a time, alternating in-process `ask` (the floor a single client is compared
            # with) and the same question over HTTP, so that drift in the machine's speed hits
            # both alike
            for i in range(args.clients):
                t = time.perf_counter()
                lm.ask(qs[i]["question"], namespace=f"tenant-{i}",
                       max_new_tokens=args.max_tokens)
                inproc.append(time.perf_counter() - t)
                seq.append(request(i))
            seq_s = sum(s for s, _ in seq)
        lat: list[float] = []
        results: list[dict[str, Any] | None] = []

        def client(i: int) -> None:
            for r in range(args.requests):
                if args.edit_every and r % args.edit_every == 0:
                    add_edit(i, r)
                s, out = request(i)
                with lock:
                    lat.append(s)
                    results.append(out)

        counts = _batcher_counts(lm.batcher)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        load_s = time.perf_counter() - t0
        b = {k: v - counts[k] for k, v in _batcher_counts(lm.batcher).items()}  # the load only
        # each key lists exactly its own edits: every acknowledged one, nobody else's
        listed = {i: [e["text"] for e in httpx.get(
            f"{url}/v1/edits", timeout=60, headers={"Authorization": f"Bearer key-{i}"})
            .json()["data"]] for i in range(args.clients)}
    finally:
        srv.should_exit = True
    isolated = all(set(listed[i]) <= set(acked[i]) for i in range(args.clients))
    lost = sum(len(set(acked[i]) - set(listed[i])) for i in range(args.clients))
    n = args.clients * args.requests
    errors = sum(r is None for r in results) + sum(o is None for _, o in seq) + edit_errors
    seq_lat = [s for s, _ in seq]
    rows = [[f"HTTP, {args.clients} clients × {args.requests}", pct(lat, 0.5), pct(lat, 0.95),
             n / load_s, (n / load_s) / (args.clients / sum(inproc)) if inproc else "-"]]
    if inproc:
        rows[:0] = [["in-process ask, one at a time", pct(inproc, 0.5), pct(inproc, 0.95),
                     args.clients / sum(inproc), 1.0],
                    ["HTTP, one request at a time", pct(seq_lat, 0.5), pct(seq_lat, 0.95),
                     args.clients / seq_s, (args.clients / seq_s) / (args.clients / sum(inproc))]]
    print(table(["", "p50 s", "p95 s", "requests/s", "× in-process one at a time"], rows))
    if inproc:
        print(f"one client over HTTP: p50 {pct(seq_lat, 0.5) / pct(inproc, 0.5) - 1:+.0%} against "
              f"in-process ask; {args.clients} clients: "
              f"{(n / load_s) / (args.clients / seq_s):.1f}x one request at a time over HTTP")
    print(f"errors: {errors}; edits acknowledged: {sum(map(len, acked.values()))}, lost: {lost}; "
          f"tenants isolated: {isolated}; under load: batches started: {b['batches']}, requests "
          f"that joined a running batch: {b['joined']} of {b['requests']}, prefill forwards: "
          f"{b['prefills']}, decode steps: {b['steps']} with "
          f"{b['row_steps'] / max(b['steps'], 1):.1f} rows on average")
    result = {"clients": args.clients, "requests_per_client": args.requests,
              "max_tokens": args.max_tokens, "edit_every": args.edit_every, "errors": errors,
              "edits_acknowledged": sum(map(len, acked.values())), "edits_lost": lost,
              "tenants_isolated": isolated, "load_p50_s": pct(lat, 0.5),
              "load_p95_s": pct(lat, 0.95), "load_rps": n / load_s, "load_seconds": load_s,
              "batches": b["batches"], "joined": b["joined"], "batched_requests": b["requests"],
              "decode_steps": b["steps"], "prefills": b["prefills"],
              "mean_rows_per_step": b["row_steps"] / max(b["steps"], 1)}
    if inproc:
        result.update({"inprocess_p50_s": pct(inproc, 0.5),
                       "http_sequential_p50_s": pct(seq_lat, 0.5),
                       "http_sequential_rps": args.clients / seq_s,
                       "one_client_p50_over_inprocess": pct(seq_lat, 0.5) / pct(inproc, 0.5),
                       "speedup_over_sequential_http": (n / load_s) / (args.clients / seq_s)})
    print(f"wrote {save('serve_load', result, args.json)}")
    return result


if __name__ == "__main__":
    main()
