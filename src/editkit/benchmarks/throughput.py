"""Evaluation throughput per mode (records/s, and FLOP/s against this machine's matmul peak) and
P-Token training step time with and without the teacher cache.

    python -m editkit.benchmarks.throughput --records 300 --ike-records 30

FLOPs are counted on the tokens the model actually processed (a forward hook sees every packed
sequence): 2 x non-embedding parameters per token, the attention score/value products over the
full mask (T^2 per layer, as SDPA computes it), and the output projection only for the rows kept
(`logits_to_keep`). The peak is an fp32 matmul measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import torch

from .common import data_file, save, table

MODES = ("none", "ptokens", "prompt", "ike")


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of an fp32 n x n matmul (best of `repeat`), this machine's practical ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_t(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _t(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class FlopCounter:
    """Counts processed tokens and FLOPs of every forward pass of a causal LM."""

    def __init__(self, model: Any) -> None:
        cfg = model.config
        emb = model.get_input_embeddings().weight
        self.hidden, self.layers, self.vocab = cfg.hidden_size, cfg.num_hidden_layers, emb.shape[0]
        params = sum(p.numel() for p in model.parameters())
        out = model.get_output_embeddings().weight
        tied = out.data_ptr() == emb.data_ptr()
        self.body = params - emb.numel() - (0 if tied else out.numel())
        self.tokens = self.flops = 0
        self._h = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _mod: Any, args: tuple, kwargs: dict) -> None:
        x = kwargs.get("inputs_embeds")
        x = x if x is not None else kwargs.get("input_ids", args[0] if args else None)
        t = int(x.shape[1])
        past = kwargs.get("past_key_values")
        past = kwargs.get("cache") if past is None else past
        ctx = t + (past.get_seq_length() if past is not None else 0)
        keep = kwargs.get("logits_to_keep")
        rows = t if keep is None or (isinstance(keep, int) and keep == 0) else (
            keep if isinstance(keep, int) else len(keep))
        self.tokens += t
        self.flops += (2 * self.body * t + 4 * self.layers * t * ctx * self.hidden
                       + 2 * rows * self.hidden * self.vocab)

    def close(self) -> None:
        self._h.remove()


def eval_throughput(lm: Any, records: int, ike_records: int, peak: float) -> list[dict]:
    from editkit.eval import evaluate

    data = data_file("counterfact", "counterfact-rome-test.json")
    rows = []
    for mode in MODES:
        n = ike_records if mode == "ike" else records
        counter = FlopCounter(lm.model)
        t = time.perf_counter()
        rep = evaluate(lm, data=data, mode=mode, limit=n)
        s = time.perf_counter() - t
        counter.close()
        rows.append({"mode": mode, "records": n, "seconds": s, "records_per_s": n / s,
                     "tokens_per_s": counter.tokens / s, "gflop_per_s": counter.flops / s / 1e9,
                     "pct_of_peak": 100 * counter.flops / s / 1e9 / peak,
                     "S": rep.metrics["S"].value if "S" in rep.metrics else None})
    return rows


def training_steps(loaded: Any, steps: int = 3) -> dict[str, float]:
    """Seconds per optimiser step (4 records, 20 pairs, IKE teacher) with and without the cache."""
    from editkit.ptokens import PTokens
    from editkit.train import TrainConfig, Trainer

    cfg = TrainConfig(n_train=4 * steps, n_val=1, batch_size=4, edit_teacher="ike")
    old = os.environ.get("EDITKIT_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EDITKIT_CACHE"] = tmp  # a cold teacher cache, whatever ran before
        try:
            tr = Trainer(loaded.model, loaded.tokenizer, loaded.name, cfg)
            pt = PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, m=3,
                                init="text")
            opt = torch.optim.AdamW(pt.parameters(), lr=1e-2, betas=(0.9, 0.98),
                                    weight_decay=0.01)
            batches = tr._batches(0)[:steps]
            t = time.perf_counter()
            teacher = tr.teacher(tr.train_pairs)
            teacher_s = time.perf_counter() - t
            t = time.perf_counter()
            tr.teacher(tr.train_pairs)  # read back from the disk cache
            cached_s = time.perf_counter() - t
            t = time.perf_counter()
            for idx in batches:
                opt.zero_grad()
                loss, _ = tr.student_loss(pt, tr.train_pairs, teacher, idx)
                loss.backward()
                opt.step()
            student = (time.perf_counter() - t) / len(batches)
        finally:
            if old is None:
                os.environ.pop("EDITKIT_CACHE", None)
            else:
                os.environ["EDITKIT_CACHE"] = old
    per_step_teacher = teacher_s / len(batches)
    return {"student_step_s": student, "teacher_per_step_s": per_step_teacher,
            "cache_read_per_step_s": cached_s / len(batches),
            "step_without_cache_s": student + per_step_teacher,
            "step_with_cache_s": student + cached_s / len(batches),
            "speedup": (student + per_step_teacher) / (student + cached_s / len(batches))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--ike-records", type=int, default=30)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from editkit import EditableLM
    from editkit.loading import LoadedModel

    peak = matmul_peak()
    lm = EditableLM.from_pretrained(device="cpu")
    lm.score("Warm up:", ["a"], mode="ptokens", fact="Warm up.")
    rows = eval_throughput(lm, args.records, args.ike_records, peak)
    print(f"fp32 matmul peak here: {peak:.0f} GFLOP/s ({torch.get_num_threads()} threads)\n")
    print(table(["mode", "records", "seconds", "records/s", "tokens/s", "GFLOP/s", "% of peak",
                 "S"], [[r["mode"], r["records"], r["seconds"], r["records_per_s"],
                         r["tokens_per_s"], r["gflop_per_s"], r["pct_of_peak"],
                         r["S"] if r["S"] is not None else "-"] for r in rows]))
    train = training_steps(LoadedModel(model=lm.model, tokenizer=lm.tokenizer, name=lm.name),
                           args.train_steps)
    print()
    print(table(["training step (4 records, 20 pairs)", "seconds"],
                [[k, v] for k, v in train.items()]))
    payload = {"matmul_peak_gflops": peak, "eval": rows, "training": train}
    print("wrote", save("throughput", payload, args.json))
    return payload


if __name__ == "__main__":
    main()
