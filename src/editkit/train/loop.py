"""`Trainer`: the teacher's forwards, the student's loss, validation, and the optimisation loop.

The teacher is the frozen model under a longer prompt that already behaves as wanted (the IKE
prompt with 32 demonstrations, the plain `New Fact:` prompt, or the unedited model, chosen per
question kind); the student is the same model reading the question under the P-Token layout.
Both score exactly the token ids `PromptBuilder.build` makes for `ask` (chat template included
for chat pairs), so what training optimises is what the product sends. Only the 2m P-Token rows
get gradients; a batch's pairs are packed into as few forwards as `forest_tokens` allows.

What a pair costs is objective.py; which pairs exist is pairs.py; the cache of the teacher's
distributions is teacher.py; the files written are artifact.py. This file wires them together.
Called by `editkit train` (cli/app.py), benchmarks/throughput.py and scripts/learning_curve.py.
"""
from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError
from ..fileio import cache_dir
from ..ike import DemoStore, default_train_file
from ..layouts import Mode, PromptBuilder
from ..ptokens import PTokens, fingerprint
from ..runtime.scoring import ScoreItem, forests, packed_logprobs_many, target_logprobs
from .artifact import (
    OPTIM_NAME,
    STATE_NAME,
    _load_optimizer,
    read_checkpoint_state,
    save_checkpoint,
    save_final,
)
from .config import TrainConfig
from .objective import answer_margin, margin_applies, pair_loss, pair_weight
from .pairs import Pair, _groups, build_pairs, load_training_records
from .teacher import TeacherCache, _scatter, file_digest, teacher_cache_key, topk_with_rest


class Trainer:
    """Train P-Tokens for one loaded model. `run()` returns the best P-Tokens found."""

    def __init__(self, model: Any, tokenizer: Any, name: str, cfg: TrainConfig,
                 log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.model, self.tokenizer, self.name, self.cfg = model, tokenizer, name, cfg
        self.log = log or (lambda row: None)
        records = load_training_records(cfg)  # shuffled; validation records first
        self.val_records = records[: cfg.n_val]
        self.train_records = records[cfg.n_val: cfg.n_val + cfg.n_train]
        # Separate streams: the validation pairs do not change with n_train (a learning curve
        # compares runs on the same validation pairs).
        self.val_pairs = build_pairs(self.val_records, cfg, records,
                                     random.Random(f"{cfg.seed}-val"))
        self.train_pairs = build_pairs(self.train_records, cfg, records,
                                       random.Random(f"{cfg.seed}-train"))
        self.teacher_layouts = PromptBuilder(tokenizer)
        self.device = model.device  # where the teacher's distributions are kept for the loss
        self._demos: DemoStore | None = None
        self._demos_digest: str | None = None
        self._chat_frame: tuple[list[int], list[int]] | None = None

    # ---- teacher ----------------------------------------------------------------------------
    def _teacher_mode(self, p: Pair) -> Mode:
        """Empty edits and absent facts: the unedited model. Neighbour questions (also inside
        distractor pairs): `neighbour_teacher`. Edit and paraphrase questions: `edit_teacher`."""
        if p.kind in ("empty", "absent"):
            return Mode.NONE
        if "neighbour" in (p.kind, p.asks):
            return Mode.NONE if self.cfg.neighbour_teacher == "unedited" else Mode.IKE
        return Mode.PROMPT if self.cfg.edit_teacher == "prompt" else Mode.IKE

    def _items(self, layouts: Any, mode: Mode, pairs: Sequence[Pair]) -> list[ScoreItem]:
        """The pairs' questions (with the chat template's tail in chat pairs) and answers, laid
        out as `PromptBuilder.build` lays them out: what training scores is what `ask` sends."""
        edited = mode is not Mode.NONE
        return [ScoreItem(question=layouts.text_ids(layouts.question_text(mode, p.question,
                                                                          edited))
                          + (self._frame(layouts, p.chat)[1]),
                          targets=[layouts.target_ids(p.answer, chat=p.chat)]) for p in pairs]

    def _frame(self, layouts: Any, chat: bool) -> tuple[list[int], list[int]]:
        """Ids before the context and after the question: BOS inline; the chat template's head
        (its default system turn included) and tail (the assistant's turn opened) in chat."""
        if not chat:
            return list(layouts.bos), []
        if self._chat_frame is None:  # the template renders the same for every pair: once
            self._chat_frame = layouts.frame(True)
        return self._chat_frame

    def _contrast_ids(self, layouts: Any, p: Pair) -> list[int]:
        return layouts.target_ids(p.contrast or "", chat=p.chat)

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
            return cached.to(self.device)
        if self._demos is None:
            self._demos = (DemoStore.from_file(self.cfg.demos) if self.cfg.demos
                           else DemoStore.default())
        out: list[Any] = [None] * len(pairs)
        lay = self.teacher_layouts
        clean = self.cfg.distractor_teacher == "clean"
        teacher_pairs = [p.model_copy(update={"distractors": []}) if clean else p for p in pairs]
        trees = []
        for (_, fact, dis, chat), idx in _groups(teacher_pairs, range(len(pairs))).items():
            by_mode: dict[Mode, list[int]] = {}
            for i in idx:
                by_mode.setdefault(self._teacher_mode(pairs[i]), []).append(i)
            for mode, ids in by_mode.items():
                demos = (self._demos.retrieve(fact, exclude=[pairs[ids[0]].case_id]).text
                         if mode is Mode.IKE else "")
                ctx, _ = lay.context(mode, fact if mode is not Mode.NONE else None, dis, demos)
                trees.append((self._frame(lay, chat)[0] + ctx,
                              self._items(lay, mode, [pairs[i] for i in ids]), ids))
        for run in forests(trees, self.cfg.forest_tokens):
            for (_, _, ids), dists in zip(run, packed_logprobs_many(
                    self.model, None, [(pre, items) for pre, items, _ in run])):
                for i, d in zip(ids, dists):
                    out[i] = topk_with_rest(d[0], self.cfg.topk)
        margins = self._unedited_margins(pairs)
        cache = TeacherCache([o[0].half().float() for o in out], [o[1] for o in out],
                             [o[2] for o in out], margins)
        cache.save(path)
        return cache.to(self.device)

    def _unedited_margins(self, pairs: Sequence[Pair]) -> list[torch.Tensor]:
        """`answer_margin` under the unedited model (the question alone) for the pairs that must
        keep their answer and have a competing one; NaN for the others."""
        lay = self.teacher_layouts
        margins = [torch.tensor(float("nan")) for _ in pairs]
        wanted = [i for i, p in enumerate(pairs) if p.contrast is not None and p.keeps_old_answer]
        step = max(1, self.cfg.forest_tokens // 32)  # questions are short: ~32 tokens a branch
        by_chat = [[i for i in wanted if pairs[i].chat == c] for c in (False, True)]
        for ids in (b[s: s + step] for b in by_chat for s in range(0, len(b), step)):
            items = self._items(lay, Mode.NONE, [pairs[i] for i in ids])
            for i, item in zip(ids, items):
                item.targets.append(self._contrast_ids(lay, pairs[i]))
            head = self._frame(lay, pairs[ids[0]].chat)[0]
            [dists] = packed_logprobs_many(self.model, None, [(head, items)])
            for i, item, (a, c) in zip(ids, items, dists):
                margins[i] = answer_margin(target_logprobs(a, item.targets[0]),
                                           target_logprobs(c, item.targets[1]))
        return margins

    # ---- student ----------------------------------------------------------------------------
    def student_loss(self, pt: PTokens, pairs: Sequence[Pair], teacher: TeacherCache,
                     idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted mean KL over the pairs `idx` (grad flows to the P-Token rows only)."""
        total, weight_sum, per_kind = self._loss_sum(pt, pairs, teacher, idx)
        return total / max(weight_sum, 1e-9), {k: sum(v) / len(v) for k, v in per_kind.items()}

    def _weight(self, pairs: Sequence[Pair], idx: Sequence[int]) -> float:
        return sum(pair_weight(self.cfg, pairs[i]) for i in idx)

    def _loss_sum(self, pt: PTokens, pairs: Sequence[Pair], teacher: TeacherCache,
                  idx: Sequence[int]) -> tuple[torch.Tensor, float, dict[str, list[float]]]:
        """Weighted sum of the per-pair losses (`objective.pair_loss`), the weight sum and the
        losses by kind.

        The pairs of one context are one packed tree; the trees go through in forests of at most
        `forest_tokens` tokens (one forward each)."""
        cfg = self.cfg
        total, weight_sum, per_kind = torch.zeros(()), 0.0, {}
        trees = self.student_trees(pt, pairs, idx)
        for run in forests(trees, cfg.forest_tokens):
            outs = packed_logprobs_many(self.model, pt, [(pre, items) for pre, items, _ in run])
            for (_, items, chosen), dists in zip(run, outs):
                for i, item, d in zip(chosen, items, dists):
                    loss = pair_loss(cfg, pairs[i], item.targets, d, teacher, i)
                    w = pair_weight(cfg, pairs[i])
                    total = total + w * loss
                    weight_sum += w
                    per_kind.setdefault(pairs[i].kind, []).append(float(loss.detach()))
        return total, weight_sum, per_kind

    def student_trees(self, pt: PTokens, pairs: Sequence[Pair], idx: Sequence[int]
                      ) -> list[tuple[list[int], list[ScoreItem], list[int]]]:
        """(prefix, items, pair indices) per shared context, under the P-Token layout: prefix +
        item.question is exactly the prompt `PromptBuilder.build` makes for `ask`; item.targets
        are the answer (and the margin's competing answer where it applies)."""
        lay = PromptBuilder(self.tokenizer, pt)
        trees = []
        for (_, fact, dis, chat), chosen in _groups(pairs, idx).items():
            ctx, _ = lay.context(Mode.PTOKENS, "" if fact is None else fact, dis)
            items = self._items(lay, Mode.PTOKENS, [pairs[i] for i in chosen])
            for i, item in zip(chosen, items):
                if margin_applies(self.cfg, pairs[i]):
                    item.targets.append(self._contrast_ids(lay, pairs[i]))
            trees.append((self._frame(lay, chat)[0] + ctx, items, chosen))
        return trees

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
        from ..eval.tasks.counterfact_rome import CounterFactRomeTask
        from ..eval.teacher_forcing import Scorer

        task = CounterFactRomeTask()
        scorer = Scorer(self.model, PromptBuilder(self.tokenizer, pt), pt)
        rows = [task.score_record(scorer, Mode.PTOKENS, r.fact, task.probes_from_easyedit(r))
                for r in self.val_records]
        values = task.aggregate(rows)
        return {k: values[k].value for k in ("ES", "PS", "NS", "S")}

    # ---- loop -------------------------------------------------------------------------------
    def run(self, out: str | os.PathLike[str], *, resume: bool = False,
            stop_after_steps: int | None = None) -> PTokens:
        """Train; validate at each epoch's end and every `eval_every` records; checkpoint at each
        validation under out/checkpoint; keep the best validation (`select_by`) in out/.

        A resumed run skips the batches its checkpoint had done, so it ends where an
        uninterrupted run ends. `stop_after_steps` ends the call after that many optimiser steps
        without saving, as a kill would (used to test `resume`).
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
        # epoch: epochs finished; batch: batches done in the next one; best: the selection key
        state: dict[str, Any] = {"epoch": 0, "batch": 0, "records_seen": 0, "best": None,
                                 "bad_evals": 0, "history": [], "steps": 0}
        if resume and (ckpt / STATE_NAME).is_file():
            pt = PTokens.from_pretrained(ckpt, self.model, self.tokenizer, name=self.name)
            read_checkpoint_state(ckpt, state)
        elif cfg.init_from is not None:
            pt = PTokens.from_pretrained(cfg.init_from, self.model, self.tokenizer,
                                         name=self.name)
            if pt.m != cfg.m:
                raise InvalidInputError(f"init_from {cfg.init_from} holds m={pt.m} tokens, the "
                                        f"config asks for m={cfg.m}.")
        else:
            pt = PTokens.create(self.model, self.tokenizer, name=self.name, m=cfg.m,
                                init=cfg.init, init_text=cfg.init_text, seed=cfg.seed)
        pt.layer.weight.requires_grad_(True)
        opt = torch.optim.AdamW(pt.parameters(), lr=cfg.lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
        if resume and (ckpt / OPTIM_NAME).is_file():
            _load_optimizer(opt, ckpt / OPTIM_NAME, state)
        opt = accel.prepare(opt)

        def validate_and_keep(losses: list[float]) -> None:
            """One validation: log it, save the P-Tokens if they are the best so far, and write
            the checkpoint (rows, optimiser, state) that `resume` continues from."""
            val, kinds = self.validate(pt, teacher_val)
            scores = self.val_scores(pt)
            key = [scores["S"], -val] if cfg.select_by == "val_s" else [-val]
            improved = state["best"] is None or key > state["best"]
            row = {"epoch": state["epoch"] + (state["batch"] > 0), "step": state["steps"],
                   "records_seen": state["records_seen"], "val_kl": val}
            if losses:
                row["train_kl"] = sum(losses) / len(losses)
            state["history"].append({**row, "val_kinds": kinds, "val_scores": scores,
                                     "seconds": round(time.perf_counter() - t0, 1)})
            state.update(best=key if improved else state["best"],
                         bad_evals=0 if improved else state["bad_evals"] + 1)
            log({**row, **{f"val_{k}": v for k, v in kinds.items()},
                 **{f"val_{k}": v for k, v in scores.items()}})
            if accel.is_main_process:
                if improved:
                    save_final(self, pt, out, state, teacher_s, t0)
                save_checkpoint(pt, opt, ckpt, state)
            accel.wait_for_everyone()

        if not state["history"]:
            validate_and_keep([])  # the initial rows: the reference every step is measured from
        every = math.ceil(cfg.eval_every / cfg.batch_size) if cfg.eval_every else None
        taken = 0
        while state["epoch"] < cfg.epochs and state["bad_evals"] < cfg.patience:
            batches = self._batches(state["epoch"] + 1)
            losses: list[float] = []
            while state["batch"] < len(batches) and state["bad_evals"] < cfg.patience:
                batch = batches[state["batch"]]
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
                state["batch"] += 1
                state["records_seen"] += len({self.train_pairs[i].record for i in batch})
                taken += 1
                if stop_after_steps is not None and taken >= stop_after_steps:
                    return pt  # simulated interruption (tests): no checkpoint for these steps
                if state["batch"] == len(batches):
                    state.update(epoch=state["epoch"] + 1, batch=0)
                    validate_and_keep(losses)
                    break
                if every and state["batch"] % every == 0:
                    validate_and_keep(losses)
                    losses = []
        return PTokens.from_pretrained(out, self.model, self.tokenizer, name=self.name)
