"""The objective: what one training pair costs the student, and how much it weighs.

Per pair, the loss is KL(teacher ‖ student) of the next-token distributions at every answer
position (teacher forced along the answer, temperature 1), with the teacher's tail beyond its
cached top-k lumped into one bucket. Two optional terms sit on top: a cross-entropy on the gold
answer (`ce_weight`, `ce_kinds`) and an answer-margin hinge (`margin_weight`, `margin`,
`margin_kinds`) that asks for the ranking ES/PS/NS count rather than matching distributions.
Pairs are weighted by kind (`weights`). docs/training.md ("Objective") says why each choice.

All of the objective is here, so changing it means reading this file only. `Trainer._loss_sum`
(loop.py) runs the student's forwards and calls `pair_loss` and `pair_weight` for each pair;
`Trainer.student_trees` asks `margin_applies` whether to score the competing answer too; the
teacher (loop.py) caches the unedited model's `answer_margin` that `margin_loss` keeps.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..runtime.scoring import target_logprobs
from .config import TrainConfig
from .pairs import Pair

if TYPE_CHECKING:
    from .teacher import TeacherCache


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


def answer_margin(answer_logp: torch.Tensor, contrast_logp: torch.Tensor) -> torch.Tensor:
    """Mean token log-prob of the answer minus that of the competing answer: the quantity whose
    sign ROME's ES/PS/NS compare (the evaluation scores mean token NLLs)."""
    return answer_logp.mean() - contrast_logp.mean()


def margin_loss(student_margin: torch.Tensor, margin: float, unedited_margin: torch.Tensor,
                keeps_old: bool) -> torch.Tensor:
    """Hinge on the answer margin: the distillation matches distributions, this asks for the
    ranking that ES/PS/NS count.

    Edit questions: the new object must beat the old one by `margin`. Questions whose answer must
    stay (neighbours, no fact, absent fact): the student must keep the unedited model's margin up
    to `margin`. Where the unedited model itself ranked the edit's object first, only that smaller
    margin is asked: the tokens should not fix the model, only leave it alone.
    """
    target = torch.clamp(unedited_margin, max=margin) if keeps_old else torch.tensor(margin)
    return torch.relu(target - student_margin)


def margin_applies(cfg: TrainConfig, p: Pair) -> bool:
    """Whether the margin term scores this pair (then its competing answer is scored too)."""
    return bool(cfg.margin_weight) and p.contrast is not None and p.kind in cfg.margin_kinds


def pair_weight(cfg: TrainConfig, p: Pair) -> float:
    """The pair's weight in the batch mean: its kind's weight (1 for a kind left out)."""
    return cfg.weights.get(p.kind, 1.0)


def pair_loss(cfg: TrainConfig, p: Pair, targets: Sequence[Sequence[int]],
              dists: Sequence[torch.Tensor], teacher: TeacherCache, i: int) -> torch.Tensor:
    """The loss of pair `i` (`p`) under the student, before its weight.

    dists: the student's teacher-forced log-distributions along `targets` (the answer, then the
    competing answer where `margin_applies`); teacher: the cache, indexed like the pairs.
    """
    loss = kl_topk(teacher.values[i], teacher.indices[i], teacher.rest[i], dists[0]).mean()
    if cfg.ce_weight and p.kind in cfg.ce_kinds:
        # The teacher (IKE on a 135M model) often fails to flip the answer; a small gold-answer
        # term lets the student beat it, as the paper's students did.
        loss = loss - cfg.ce_weight * target_logprobs(dists[0], targets[0]).mean()
    if len(dists) > 1:
        loss = loss + cfg.margin_weight * margin_loss(
            answer_margin(target_logprobs(dists[0], targets[0]),
                          target_logprobs(dists[1], targets[1])),
            cfg.margin, teacher.margins[i], p.keeps_old_answer)
    return loss
