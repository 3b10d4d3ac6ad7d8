"""What a training run writes: the selected P-Tokens with their training record, and checkpoints.

OUT/ is a normal P-Token artifact (what `EditableLM.from_pretrained` and `editkit eval --ptokens`
load) whose `ptokens_config.json` carries `training`: the objective, the full config, the data
sizes, the validation it was selected at, timings, and the device and weights it was trained on
(tokens trained on a quantized model ship apart). OUT/checkpoint/ holds what `--resume` continues
from: the rows, the AdamW moments (safetensors, no pickle) and the loop's state as JSON.

Kept apart from the loop so that the files' contents can be read in one place; `Trainer.run`
(loop.py) decides when to write (at every validation, the final artifact only when it improved)
and reads the checkpoint back on resume.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError
from ..fileio import atomic_write
from ..ptokens import PTokens

STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"


def save_final(trainer: Any, pt: PTokens, out: Path, state: dict[str, Any],
               teacher_s: float, t0: float) -> None:
    """Save `pt` in `out` as the run's result, with the training record of the last
    validation in `state` (the one that selected it). `trainer`: the `train.loop.Trainer` that
    ran (not imported here: the loop imports this module)."""
    cfg, last = trainer.cfg, state["history"][-1]
    objective = (f"KL(teacher || student) at answer positions, T=1, teacher top-k {cfg.topk}"
                 " + tail")
    if cfg.margin_weight:
        objective += f" + {cfg.margin_weight} x answer-margin hinge ({cfg.margin} nats)"
    model = trainer.model
    pt.config.trained = True
    pt.config.training = {
        "objective": objective,
        "config": json.loads(cfg.model_dump_json()),
        "train_records": len(trainer.train_records), "val_records": len(trainer.val_records),
        "train_pairs": len(trainer.train_pairs), "val_pairs": len(trainer.val_pairs),
        "best_epoch": round(last["records_seen"] / len(trainer.train_records), 3),
        "best_step": last["step"], "best_records_seen": last["records_seen"],
        "best_val_kl": last["val_kl"], "best_val_scores": last["val_scores"],
        "selected_by": cfg.select_by,
        "teacher_seconds": round(teacher_s, 1),
        "epoch_seconds": _epoch_seconds(state["history"], len(trainer.train_records)),
        "seconds": round(time.perf_counter() - t0, 1),
        # where it ran and on which weights: tokens trained on a quantized model ship apart
        "device": str(model.device),
        "quantization": ("8bit" if getattr(model, "is_loaded_in_8bit", False) else
                         "4bit" if getattr(model, "is_loaded_in_4bit", False) else
                         getattr(model.config, "editkit_simulated_quantization", None)),
        "quantization_simulated": bool(getattr(model.config,
                                               "editkit_simulated_quantization", None)),
        "init_from": cfg.init_from,
    }
    pt.save_pretrained(out)


def _epoch_seconds(history: list[dict[str, Any]], n_train: int) -> float | None:
    """Wall time of one epoch (training and its validations), from the validations' time stamps
    (the teacher and the first validation excluded); None before any training step."""
    first, last = history[0], history[-1]
    seen = last["records_seen"] - first["records_seen"]
    if not seen:
        return None
    return round((last["seconds"] - first["seconds"]) / seen * n_train, 1)


def save_checkpoint(pt: PTokens, opt: Any, ckpt: Path, state: dict[str, Any]) -> None:
    """The rows, the optimiser's moments and the loop's state: what `resume` continues from."""
    pt.save_pretrained(ckpt)
    _save_optimizer(opt, ckpt / OPTIM_NAME)
    atomic_write(ckpt / STATE_NAME, lambda p: p.write_text(json.dumps(state, indent=1)))


def read_checkpoint_state(ckpt: Path, state: dict[str, Any]) -> None:
    """Update `state` from the checkpoint's; a checkpoint of an older editkit is refused."""
    state.update(json.loads((ckpt / STATE_NAME).read_text()))
    if "bad_evals" not in state or not isinstance(state["best"], list | None):
        raise InvalidInputError(
            f"{ckpt} was written by an older editkit (per-epoch checkpoints); it cannot "
            "be resumed by this one. Train again without --resume.")


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
