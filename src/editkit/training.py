"""P-Token training: distil the IKE prompt into persuasion tokens (the model stays frozen).

For each training record five kinds of pairs are built (edit, paraphrase, neighbour, distractor,
empty edit). The teacher is the model under the IKE layout (32 demonstrations) — or, optionally for
neighbour pairs, the unedited model, which is the ideal locality reference; the empty-edit teacher
is always the unedited model. The student is the same question under the P-Token layout. The loss
is KL(teacher ‖ student) of the next-token distributions at every answer position (teacher forced
along the answer), temperature 1. The teacher never changes, so its distributions are computed
once and cached as top-k log-probs plus the remaining mass; epochs then only run the short student
sequences.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from .datasets import CounterFactRecord, load_counterfact
from .embedder import DEFAULT_EMBEDDER
from .errors import InvalidInputError
from .fileio import atomic_write, cache_dir
from .ike import DEMO_SCHEDULE_VERSION, DemoStore, default_train_file
from .layouts import LAYOUT_VERSION, Mode, PromptBuilder
from .ptokens import DEFAULT_INIT_TEXT, DEFAULT_M, PTokens, fingerprint
from .runtime.scoring import ScoreItem, packed_logprobs

Kind = Literal["edit", "paraphrase", "neighbour", "distractor", "empty"]
KINDS: tuple[Kind, ...] = ("edit", "paraphrase", "neighbour", "distractor", "empty")
QUESTION_KINDS = KINDS[:3]  # the questions a record asks; distractor pairs reuse one of them
STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"


class TrainConfig(BaseModel):
    """Everything a training run depends on (saved with the artifact as provenance)."""

    model_config = ConfigDict(extra="forbid")
    m: int = Field(DEFAULT_M, ge=1, le=64, description="begin (and end) tokens; the default is "
                   "editkit.ptokens.DEFAULT_M, the m that from_pretrained loads")
    data: Path | None = Field(None, description="EasyEdit CounterFact file (default: vendored)")
    demos: Path | None = Field(None, description="IKE demonstration file (default: vendored)")
    n_train: int = Field(200, ge=1, description="records used for training (first N, shuffled)")
    n_val: int = Field(40, ge=1, description="records held out for early stopping")
    max_distractors: int = Field(10, ge=1, le=100)
    edit_teacher: Literal["ike", "prompt"] = Field(
        "ike", description="teacher layout for edit/paraphrase/distractor pairs: the IKE prompt "
        "(the paper) or the plain `New Fact: ...\nPrompt: ...` layout")
    neighbour_teacher: Literal["ike", "unedited"] = "ike"
    distractor_teacher: Literal["clean", "ike"] = Field(
        "clean", description="clean: the teacher sees the fact without the distractors (what "
        "the answer should be); ike: the IKE prompt with the distractors")
    weights: dict[Kind, float] = Field(
        default_factory=lambda: {k: 1.0 for k in KINDS},
        description="loss weight per pair kind (a kind left out weighs 1; an unknown kind, "
        "e.g. the spelling 'neighbor', is an error)")
    init: Literal["text", "vocab_mean", "random"] = "text"
    init_text: str = DEFAULT_INIT_TEXT
    lr: float = Field(5e-3, gt=0)
    batch_size: int = Field(8, ge=1, description="records per optimiser step")
    epochs: int = Field(10, ge=1)
    patience: int = Field(3, ge=1)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    topk: int = Field(64, ge=1, le=4096, description="teacher log-probs kept per position")
    ce_weight: float = Field(0.0, ge=0, description="weight of an added cross-entropy term on "
                             "the gold answer (0 = pure distillation)")
    ce_kinds: tuple[Kind, ...] = Field(("edit", "paraphrase", "distractor"),
                                       description="pair kinds that get the cross-entropy term")
    seed: int = 0


# How each TrainConfig field reaches the teacher cache (tests check that every field is listed):
TEACHER_FIELDS = frozenset({"edit_teacher", "neighbour_teacher", "distractor_teacher", "topk"})
"""Fields that change the teacher's distributions for a given pair: hashed into the cache key."""
PAIR_FIELDS = frozenset({"data", "n_train", "n_val", "max_distractors", "seed"})
"""Fields that choose the pairs: the key hashes the pairs themselves, so these reach it that way."""
DEMO_FIELDS = frozenset({"demos"})
"""The IKE teacher's demonstration file: the key hashes its content, not its path."""
STUDENT_FIELDS = frozenset({"m", "weights", "init", "init_text", "lr", "batch_size", "epochs",
                            "patience", "weight_decay", "betas", "ce_weight", "ce_kinds"})
"""Fields that only change the student (optimisation, P-Token shape): a teacher cache is reused."""


class Pair(BaseModel):
    """One training question: the fact (None for empty edits), distractors and the answer."""

    kind: Kind
    record: int
    case_id: int = -1  # the teacher's IKE demonstrations never come from this record
    asks: Literal["edit", "paraphrase", "neighbour", ""] = ""  # distractor pairs: which question
    fact: str | None
    distractors: list[str] = Field(default_factory=list)
    question: str
    answer: str


def build_pairs(records: Sequence[CounterFactRecord], cfg: TrainConfig,
                pool: Sequence[str], rng: random.Random) -> list[Pair]:
    """Five pairs per record. Distractor pairs carry 1..max_distractors other facts."""
    pairs = []
    for i, r in enumerate(records):
        qa = [(r.prompt, r.target_new), (r.rephrase_prompt, r.target_new),
              (r.locality_prompt, r.locality_ground_truth)]
        for kind, (q, a) in zip(QUESTION_KINDS, qa):
            pairs.append(Pair(kind=kind, record=i, case_id=r.case_id, fact=r.fact, question=q,
                              answer=a))
        k = rng.randint(1, cfg.max_distractors)
        others = rng.sample([f for f in pool if f != r.fact], k)
        asks, (q, a) = rng.choice(list(zip(QUESTION_KINDS, qa)))
        pairs.append(Pair(kind="distractor", record=i, case_id=r.case_id, fact=r.fact,
                          distractors=others, question=q, answer=a, asks=asks))
        pairs.append(Pair(kind="empty", record=i, case_id=r.case_id, fact=None,
                          question=r.prompt, answer=r.ground_truth))
    return pairs


def _groups(pairs: Sequence[Pair], idx: Sequence[int]) -> dict[tuple[Any, ...], list[int]]:
    """Pairs (by index) that share a context (fact, distractors): one packed pass each."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for i in idx:
        p = pairs[i]
        out.setdefault((p.record, p.fact, tuple(p.distractors)), []).append(i)
    return out


def load_training_records(cfg: TrainConfig) -> list[CounterFactRecord]:
    """The records of `cfg.data` (default: vendored), refusing sizes the file cannot supply."""
    path = cfg.data or default_train_file()
    records = load_counterfact(path)
    if cfg.n_train + cfg.n_val > len(records):
        raise InvalidInputError(
            f"n_train + n_val = {cfg.n_train} + {cfg.n_val} = {cfg.n_train + cfg.n_val}, but "
            f"{path} holds {len(records)} records. Lower --n-train / --n-val, or pass a larger "
            "--data file.")
    return records


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def teacher_cache_key(cfg: TrainConfig, pairs: Sequence[Pair], *, base_model: str,
                      demos_digest: str, embedder: str = DEFAULT_EMBEDDER,
                      layout_version: int = LAYOUT_VERSION) -> str:
    """The teacher cache's name: a hash of everything the teacher's distributions depend on.

    base_model: the fingerprint (JSON) of the model; pairs: the questions, answers and contexts;
    the TEACHER_FIELDS of `cfg`; the demonstration file's content digest and the embedder that
    retrieves from it (the IKE teacher's demonstrations) and how it orders their kinds; the prompt
    layout version.
    """
    h = hashlib.sha256()
    parts = {"base_model": base_model, "pairs": [p.model_dump() for p in pairs],
             "teacher": cfg.model_dump(mode="json", include=set(TEACHER_FIELDS)),
             "demos": demos_digest, "embedder": embedder, "layout": layout_version,
             "demo_schedule": DEMO_SCHEDULE_VERSION}
    h.update(json.dumps(parts, sort_keys=True).encode())
    return h.hexdigest()[:20]


class TeacherCache:
    """Top-k teacher log-probs per pair and answer position, plus the log of the remaining mass."""

    def __init__(self, values: list[torch.Tensor], indices: list[torch.Tensor],
                 rest: list[torch.Tensor]) -> None:
        self.values, self.indices, self.rest = values, indices, rest

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for i, (v, ix, r) in enumerate(zip(self.values, self.indices, self.rest)):
            tensors[f"{i}.v"], tensors[f"{i}.i"], tensors[f"{i}.r"] = v, ix.to(torch.int32), r
        atomic_write(path, lambda p: save_file(tensors, str(p)))

    @classmethod
    def load(cls, path: Path, n: int) -> TeacherCache | None:
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
        except Exception:  # noqa: BLE001 - a damaged cache is simply recomputed
            return None
        if len(t) != 3 * n:
            return None
        return cls([t[f"{i}.v"] for i in range(n)], [t[f"{i}.i"].long() for i in range(n)],
                   [t[f"{i}.r"] for i in range(n)])


def topk_with_rest(logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values, indices, log remaining mass) of a (T, V) log-distribution."""
    v, ix = logp.topk(min(k, logp.shape[-1]), dim=-1)
    rest = torch.log1p(-v.exp().sum(-1).clamp(max=1 - 1e-6))
    return v, ix, rest


def kl_topk(teacher_v: torch.Tensor, teacher_ix: torch.Tensor, teacher_rest: torch.Tensor,
            student_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) per position, with the teacher's tail lumped into one bucket.

    Exact when k covers the vocabulary; otherwise a lower bound that is tight where the teacher
    is peaked (which is where editing happens).
    """
    s_top = student_logp.gather(-1, teacher_ix)
    s_rest = torch.log1p(-s_top.exp().sum(-1).clamp(max=1 - 1e-6))
    p_top, p_rest = teacher_v.exp(), teacher_rest.exp()
    return (p_top * (teacher_v - s_top)).sum(-1) + p_rest * (teacher_rest - s_rest)


class Trainer:
    """Train P-Tokens for one loaded model. `run()` returns the best P-Tokens found."""

    def __init__(self, model: Any, tokenizer: Any, name: str, cfg: TrainConfig,
                 log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.model, self.tokenizer, self.name, self.cfg = model, tokenizer, name, cfg
        self.log = log or (lambda row: None)
        rng = random.Random(cfg.seed)
        records = load_training_records(cfg)
        order = list(range(len(records)))
        rng.shuffle(order)
        self.train_records = [records[i] for i in order[: cfg.n_train]]
        self.val_records = [records[i] for i in order[cfg.n_train: cfg.n_train + cfg.n_val]]
        pool = [r.fact for r in records]
        self.train_pairs = build_pairs(self.train_records, cfg, pool, rng)
        self.val_pairs = build_pairs(self.val_records, cfg, pool, rng)
        self.teacher_layouts = PromptBuilder(tokenizer)
        self._demos: DemoStore | None = None
        self._demos_digest: str | None = None

    # ---- teacher ----------------------------------------------------------------------------
    def _teacher_mode(self, p: Pair) -> Mode:
        """Empty edits: the unedited model. Neighbour questions (also inside distractor pairs):
        `neighbour_teacher`. Edit and paraphrase questions: `edit_teacher`."""
        if p.kind == "empty":
            return Mode.NONE
        if "neighbour" in (p.kind, p.asks):
            return Mode.NONE if self.cfg.neighbour_teacher == "unedited" else Mode.IKE
        return Mode.PROMPT if self.cfg.edit_teacher == "prompt" else Mode.IKE

    def _items(self, layouts: Any, mode: Mode, pairs: Sequence[Pair]) -> list[ScoreItem]:
        edited = mode is not Mode.NONE
        return [ScoreItem(question=layouts.text_ids(layouts.question_text(mode, p.question,
                                                                          edited)),
                          targets=[layouts.target_ids(p.answer)]) for p in pairs]

    def _cache_path(self, pairs: Sequence[Pair]) -> Path:
        if self._demos_digest is None:
            self._demos_digest = file_digest(self.cfg.demos or default_train_file())
        key = teacher_cache_key(
            self.cfg, pairs,
            base_model=fingerprint(self.model, self.tokenizer, self.name).model_dump_json(),
            demos_digest=self._demos_digest)
        return cache_dir() / "teacher" / f"{key}.safetensors"

    @torch.no_grad()
    def teacher(self, pairs: Sequence[Pair]) -> TeacherCache:
        """Teacher distributions for `pairs`, from the disk cache or computed once."""
        path = self._cache_path(pairs)
        cached = TeacherCache.load(path, len(pairs))
        if cached is not None:
            return cached
        if self._demos is None:
            self._demos = (DemoStore.from_file(self.cfg.demos) if self.cfg.demos
                           else DemoStore.default())
        out: list[Any] = [None] * len(pairs)
        lay = self.teacher_layouts
        clean = self.cfg.distractor_teacher == "clean"
        teacher_pairs = [p.model_copy(update={"distractors": []}) if clean else p for p in pairs]
        for (_, fact, dis), idx in _groups(teacher_pairs, range(len(pairs))).items():
            by_mode: dict[Mode, list[int]] = {}
            for i in idx:
                by_mode.setdefault(self._teacher_mode(pairs[i]), []).append(i)
            for mode, ids in by_mode.items():
                demos = (self._demos.retrieve(fact, exclude=[pairs[ids[0]].case_id]).text
                         if mode is Mode.IKE else "")
                ctx, _ = lay.context(mode, fact if mode is not Mode.NONE else None, dis, demos)
                dists = packed_logprobs(self.model, None, lay.bos + ctx,
                                        self._items(lay, mode, [pairs[i] for i in ids]))
                for i, d in zip(ids, dists):
                    out[i] = topk_with_rest(d[0], self.cfg.topk)
        cache = TeacherCache([o[0].half().float() for o in out], [o[1] for o in out],
                             [o[2] for o in out])
        cache.save(path)
        return cache

    # ---- student ----------------------------------------------------------------------------
    def student_loss(self, pt: PTokens, pairs: Sequence[Pair], teacher: TeacherCache,
                     idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted mean KL over the pairs `idx` (grad flows to the P-Token rows only)."""
        total, weight_sum, per_kind = self._loss_sum(pt, pairs, teacher, idx)
        return total / max(weight_sum, 1e-9), {k: sum(v) / len(v) for k, v in per_kind.items()}

    def _weight(self, pairs: Sequence[Pair], idx: Sequence[int]) -> float:
        return sum(self.cfg.weights.get(pairs[i].kind, 1.0) for i in idx)

    def _loss_sum(self, pt: PTokens, pairs: Sequence[Pair], teacher: TeacherCache,
                  idx: Sequence[int]) -> tuple[torch.Tensor, float, dict[str, list[float]]]:
        """Weighted sum of the per-pair losses, the weight sum and the losses by kind."""
        lay = PromptBuilder(self.tokenizer, pt)
        total, weight_sum, per_kind = torch.zeros(()), 0.0, {}
        for (_, fact, dis), chosen in _groups(pairs, idx).items():
            ctx, _ = lay.context(Mode.PTOKENS, "" if fact is None else fact, dis)
            items = self._items(lay, Mode.PTOKENS, [pairs[i] for i in chosen])
            dists = packed_logprobs(self.model, pt, lay.bos + ctx, items)
            for i, item, d in zip(chosen, items, dists):
                kl = kl_topk(teacher.values[i], teacher.indices[i], teacher.rest[i], d[0]).mean()
                w = self.cfg.weights.get(pairs[i].kind, 1.0)
                if self.cfg.ce_weight and pairs[i].kind in self.cfg.ce_kinds:
                    # The teacher (IKE on a 135M model) often fails to flip the answer; a small
                    # gold-answer term lets the student beat it, as the paper's students did.
                    gold = torch.tensor(item.targets[0], device=d[0].device)
                    ce = -d[0].gather(-1, gold[:, None]).mean()
                    kl = kl + self.cfg.ce_weight * ce
                total = total + w * kl
                weight_sum += w
                per_kind.setdefault(pairs[i].kind, []).append(float(kl.detach()))
        return total, weight_sum, per_kind

    def _batches(self, epoch: int) -> list[list[int]]:
        by_record: dict[int, list[int]] = {}
        for i, p in enumerate(self.train_pairs):
            by_record.setdefault(p.record, []).append(i)
        recs = list(by_record)
        random.Random(f"{self.cfg.seed}-{epoch}").shuffle(recs)
        b = self.cfg.batch_size
        return [[i for r in recs[s: s + b] for i in by_record[r]] for s in range(0, len(recs), b)]

    @torch.no_grad()
    def validate(self, pt: PTokens, teacher: TeacherCache) -> tuple[float, dict[str, float]]:
        loss, kinds = self.student_loss(pt, self.val_pairs, teacher, range(len(self.val_pairs)))
        return float(loss), kinds

    @torch.no_grad()
    def val_scores(self, pt: PTokens) -> dict[str, float]:
        """ROME-style ES/PS/NS/S (in %) of the validation records under the P-Token layout.

        Scored by `editkit eval`'s ROME CounterFact task (same scorer, per-record metrics and
        aggregation), here on the EasyEdit records (one paraphrase and one neighbour each), so it
        tracks the real metric cheaply during training rather than replacing it.
        """
        from .eval.scorer import Scorer
        from .eval.tasks.counterfact_rome import CounterFactRomeTask
        from .layouts import PromptBuilder

        task = CounterFactRomeTask()
        scorer = Scorer(self.model, PromptBuilder(self.tokenizer, pt), pt)
        rows = [task.score_record(scorer, Mode.PTOKENS, r.fact, task.probes_from_easyedit(r))
                for r in self.val_records]
        values = task.aggregate(rows)
        return {k: values[k].value for k in ("ES", "PS", "NS", "S")}

    # ---- loop -------------------------------------------------------------------------------
    def run(self, out: str | os.PathLike[str], *, resume: bool = False,
            stop_after_steps: int | None = None) -> PTokens:
        """Train, checkpoint each epoch under out/checkpoint, keep the best (val KL) in out/.

        `stop_after_steps` ends the call after that many optimiser steps without saving, as a
        kill would (used to test `resume`).
        """
        from accelerate import Accelerator

        cfg, out = self.cfg, Path(out)
        ckpt = out / "checkpoint"
        accel = Accelerator(cpu=self.model.device.type == "cpu")
        # Data parallel (`accelerate launch` / torchrun): process r owns the training records
        # with index % world == r, computes (and caches) only their teacher, and the gradients
        # of each step are summed over processes. The global batches are the same as in one
        # process, so the result is the same up to float rounding.
        world, rank = accel.num_processes, accel.process_index
        mine = [i for i, p in enumerate(self.train_pairs) if p.record % world == rank]
        t0 = time.perf_counter()
        local = self.teacher([self.train_pairs[i] for i in mine])
        teacher_train = _scatter(local, mine, len(self.train_pairs))
        teacher_val = self.teacher(self.val_pairs)  # small: every process has all of it
        teacher_s = time.perf_counter() - t0
        accel.wait_for_everyone()
        log = self.log if accel.is_main_process else (lambda row: None)
        state = {"epoch": 0, "best": math.inf, "bad_epochs": 0, "history": [], "steps": 0}
        if resume and (ckpt / STATE_NAME).is_file():
            pt = PTokens.from_pretrained(ckpt, self.model, self.tokenizer, name=self.name)
            state = json.loads((ckpt / STATE_NAME).read_text())
        else:
            pt = PTokens.create(self.model, self.tokenizer, name=self.name, m=cfg.m,
                                init=cfg.init, init_text=cfg.init_text, seed=cfg.seed)
        pt.layer.weight.requires_grad_(True)
        opt = torch.optim.AdamW(pt.parameters(), lr=cfg.lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
        if resume and (ckpt / OPTIM_NAME).is_file():
            _load_optimizer(opt, ckpt / OPTIM_NAME, state)
        opt = accel.prepare(opt)
        if state["epoch"] == 0 and not state["history"]:
            val, kinds = self.validate(pt, teacher_val)
            scores = self.val_scores(pt)
            state["history"].append({"epoch": 0, "val_kl": val, "val_kinds": kinds,
                                     "val_scores": scores})
            log({"epoch": 0, "val_kl": val, **{f"val_{k}": v for k, v in kinds.items()},
                      **{f"val_{k}": v for k, v in scores.items()}})
        taken = 0
        while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
            epoch = state["epoch"] + 1
            losses = []
            for batch in self._batches(epoch):
                owned = [i for i in batch if self.train_pairs[i].record % world == rank]
                total, _, _ = self._loss_sum(pt, self.train_pairs, teacher_train, owned)
                if not owned:  # this rank got no record of the batch: contribute a zero gradient
                    total = pt.layer.weight.sum() * 0.0
                loss = total / self._weight(self.train_pairs, batch)  # global-batch mean
                opt.zero_grad()
                accel.backward(loss)
                if world > 1:
                    grad = pt.layer.weight.grad
                    pt.layer.weight.grad = accel.reduce(
                        grad if grad is not None else torch.zeros_like(pt.layer.weight), "sum")
                    loss = accel.reduce(loss.detach(), "sum")
                opt.step()
                losses.append(float(loss.detach()))
                state["steps"] += 1
                taken += 1
                if stop_after_steps is not None and taken >= stop_after_steps:
                    return pt  # simulated interruption (tests): no checkpoint for this epoch
            val, kinds = self.validate(pt, teacher_val)
            scores = self.val_scores(pt)
            improved = val < state["best"]
            state.update(epoch=epoch, best=min(val, state["best"]),
                         bad_epochs=0 if improved else state["bad_epochs"] + 1)
            state["history"].append({"epoch": epoch, "train_kl": sum(losses) / len(losses),
                                     "val_kl": val, "val_kinds": kinds, "val_scores": scores,
                                     "seconds": round(time.perf_counter() - t0, 1)})
            log({"epoch": epoch, "train_kl": sum(losses) / len(losses), "val_kl": val,
                      **{f"val_{k}": v for k, v in kinds.items()},
                      **{f"val_{k}": v for k, v in scores.items()}})
            if accel.is_main_process:
                if improved:
                    self._save_final(pt, out, state, teacher_s, t0)
                pt.save_pretrained(ckpt)
                _save_optimizer(opt, ckpt / OPTIM_NAME)
                atomic_write(ckpt / STATE_NAME,
                             lambda p: p.write_text(json.dumps(state, indent=1)))
            accel.wait_for_everyone()
        return PTokens.from_pretrained(out, self.model, self.tokenizer, name=self.name)

    def _save_final(self, pt: PTokens, out: Path, state: dict[str, Any], teacher_s: float,
                    t0: float) -> None:
        pt.config.trained = True
        pt.config.training = {
            "objective": "KL(teacher || student) at answer positions, T=1, teacher top-k "
                         f"{self.cfg.topk} + tail",
            "config": json.loads(self.cfg.model_dump_json()),
            "train_pairs": len(self.train_pairs), "val_pairs": len(self.val_pairs),
            "best_epoch": state["epoch"], "best_val_kl": state["best"],
            "best_val_scores": state["history"][-1].get("val_scores"),
            "teacher_seconds": round(teacher_s, 1),
            "epoch_seconds": _mean_epoch_seconds(state["history"], teacher_s),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        pt.save_pretrained(out)


def _scatter(local: TeacherCache, positions: Sequence[int], n: int) -> TeacherCache:
    """A cache indexed like all n pairs, holding entries only at `positions` (this shard's)."""
    full: list[list[Any]] = [[None] * n for _ in range(3)]
    for j, i in enumerate(positions):
        full[0][i], full[1][i], full[2][i] = local.values[j], local.indices[j], local.rest[j]
    return TeacherCache(*full)


def _mean_epoch_seconds(history: list[dict[str, Any]], teacher_s: float) -> float | None:
    """Mean wall time of one student epoch (training + validation), teacher excluded."""
    stamps = [h["seconds"] for h in history if "seconds" in h]
    if not stamps:
        return None
    return round((stamps[-1] - teacher_s) / len(stamps), 1) if len(stamps) == 1 else round(
        (stamps[-1] - stamps[0]) / (len(stamps) - 1), 1)


def _save_optimizer(opt: Any, path: Path) -> None:
    """AdamW moments as safetensors (no pickle) plus the step count in the tensor names."""
    from safetensors.torch import save_file

    inner = getattr(opt, "optimizer", opt)
    tensors = {}
    for i, st in enumerate(inner.state.values()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                tensors[f"{i}.{key}"] = torch.as_tensor(st[key]).detach().clone().float()
    atomic_write(path, lambda p: save_file(tensors, str(p)))


def _load_optimizer(opt: Any, path: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    t = load_file(str(path))
    for i, p in enumerate(opt.param_groups[0]["params"]):
        if f"{i}.exp_avg" in t:
            opt.state[p] = {"exp_avg": t[f"{i}.exp_avg"], "exp_avg_sq": t[f"{i}.exp_avg_sq"],
                            "step": t[f"{i}.step"]}
