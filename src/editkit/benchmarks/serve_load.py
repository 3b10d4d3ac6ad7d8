"""Load on `editkit serve` over loopback: concurrent clients against sequential requests, same run.

    editkit bench serve_load --clients 16 --requests 4 --max-tokens 16

The server runs in this process (uvicorn on 127.0.0.1, a free port) with the default model and
an in-RAM memory. Each client has its own API key, hence its own namespace, holding one edit;
it asks about its edit `--requests` times (greedy chat completions). Baselines measured in the
same run: the same questions sent one at a time over HTTP, and in-process `ask` (the latency a
single client should stay near). Errors are counted, and afterwards every key must list exactly
its own edit (tenants isolated). Bounded: it stops after clients × requests requests.
"""
from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from .common import pct, save, table
from .latency import questions


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="per client")
    ap.add_argument("--max-tokens", type=int, default=16)
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

    try:
        request(0)  # warm
        # in-process ask, one at a time: the floor a single client is compared with
        inproc = []
        for i in range(args.clients):
            t = time.perf_counter()
            lm.ask(qs[i]["question"], namespace=f"tenant-{i}", max_new_tokens=args.max_tokens)
            inproc.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        seq = [request(i) for i in range(args.clients)]
        seq_s = time.perf_counter() - t0
        lat: list[float] = []
        results: list[dict[str, Any] | None] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            for _ in range(args.requests):
                s, out = request(i)
                with lock:
                    lat.append(s)
                    results.append(out)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        load_s = time.perf_counter() - t0
        isolated = all(
            [e["text"] for e in httpx.get(f"{url}/v1/edits", timeout=60,
                                          headers={"Authorization": f"Bearer key-{i}"})
             .json()["data"]] == [qs[i]["fact"]] for i in range(args.clients))
    finally:
        srv.should_exit = True
    n = args.clients * args.requests
    errors = sum(r is None for r in results) + sum(o is None for _, o in seq)
    seq_lat = [s for s, _ in seq]
    rows = [["in-process ask, one at a time", pct(inproc, 0.5), pct(inproc, 0.95),
             args.clients / sum(inproc), 1.0],
            ["HTTP, one request at a time", pct(seq_lat, 0.5), pct(seq_lat, 0.95),
             args.clients / seq_s, (args.clients / seq_s) / (args.clients / sum(inproc))],
            [f"HTTP, {args.clients} clients × {args.requests}", pct(lat, 0.5), pct(lat, 0.95),
             n / load_s, (n / load_s) / (args.clients / sum(inproc))]]
    print(table(["", "p50 s", "p95 s", "requests/s", "× in-process one at a time"], rows))
    print(f"errors: {errors}; tenants isolated: {isolated}; micro-batches: "
          f"{lm.batcher.batches} for {lm.batcher.requests} requests")
    result = {"clients": args.clients, "requests_per_client": args.requests,
              "max_tokens": args.max_tokens, "errors": errors, "tenants_isolated": isolated,
              "inprocess_p50_s": pct(inproc, 0.5), "http_sequential_p50_s": pct(seq_lat, 0.5),
              "http_sequential_rps": args.clients / seq_s, "load_p50_s": pct(lat, 0.5),
              "load_p95_s": pct(lat, 0.95), "load_rps": n / load_s,
              "speedup_over_sequential_http": (n / load_s) / (args.clients / seq_s),
              "batches": lm.batcher.batches, "batched_requests": lm.batcher.requests}
    print(f"wrote {save('serve_load', result, args.json)}")
    return result


if __name__ == "__main__":
    main()
