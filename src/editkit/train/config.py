"""What a P-Token training run is told: `TrainConfig`, the pair kinds, and the teacher-cache sets.

`TrainConfig` is the whole input of a run (the `editkit train --config` file, command-line
overrides on top); it is saved with the artifact as provenance, so a field added here is recorded
without further work. The four *_FIELDS sets say how each field reaches the teacher cache: a new
field must go into exactly one of them (tests/test_training.py checks), so that a new teacher
option cannot silently reuse distributions cached under another setting.

Read by the P-Token modules of `editkit.train` (not by gate.py); the CLI (`editkit train`)
builds a `TrainConfig` from the config file and the options.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..ptokens import DEFAULT_INIT_TEXT, DEFAULT_M

Kind = Literal["edit", "paraphrase", "neighbour", "distractor", "empty", "absent"]
KINDS: tuple[Kind, ...] = ("edit", "paraphrase", "neighbour", "distractor", "empty", "absent")
QUESTION_KINDS = KINDS[:3]  # the questions a record asks; distractor pairs reuse one of them


class TrainConfig(BaseModel):
    """Everything a training run depends on (saved with the artifact as provenance)."""

    model_config = ConfigDict(extra="forbid")
    m: int = Field(DEFAULT_M, ge=1, le=64, description="begin (and end) tokens; the default is "
                   "editkit.ptokens.DEFAULT_M, the m that from_pretrained loads")
    data: list[Path] | None = Field(
        None, description="training files, EasyEdit CounterFact or zsRE (default: the vendored "
        "CounterFact train split); several files contribute in turn, one record each")
    demos: Path | None = Field(None, description="IKE demonstration file (default: vendored)")
    n_train: int = Field(200, ge=1, description="records used for training (after the "
                         "validation records, shuffled)")
    n_val: int = Field(40, ge=1, description="records held out for validation (drawn first, "
                       "so they stay the same when n_train changes)")
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
    init_from: str | None = Field(None, description="start from the rows of this P-Token "
                                  "directory (same model and m) instead of `init`: fine-tune "
                                  "tokens, e.g. full-precision ones on a quantized model")
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
    margin_weight: float = Field(0.0, ge=0, description="weight of the answer-margin hinge "
                                 "(0 = off); see `margin_loss`")
    margin: float = Field(1.0, ge=0, description="the margin, in nats of mean token log-prob")
    margin_kinds: tuple[Kind, ...] = Field(
        ("edit", "paraphrase", "neighbour", "distractor", "empty", "absent"),
        description="pair kinds that get the margin term")
    hard_neighbours: bool = Field(False, description="add, per record, a neighbour question "
                                  "about another record whose subject shares a word with this "
                                  "one's (the case a relevance gate lets through)")
    absent_pairs: bool = Field(False, description="add, per record, a pair whose context holds "
                               "only other facts: the answer must stay the unedited one")
    older_value_pairs: bool = Field(False, description="add, per record, a distractor pair "
                                    "whose distractors hold the same slot's older value (the "
                                    "fact with the true object): the answer must follow the "
                                    "fact, the newer value (memories that keep both)")
    select_by: Literal["val_s", "val_kl", "val_wild"] = Field(
        "val_s", description="what picks the saved P-Tokens among the validations: ROME S on "
        "the validation records (ties: lower KL), the validation KL, or the generated answers "
        "to the validation chat questions (train/wild_val.py; needs chat_questions)")
    eval_every: int | None = Field(None, ge=1, description="validate (and checkpoint) every "
                                   "this many training records, besides each epoch's end")
    forest_tokens: int = Field(1024, ge=64, description="most tokens in one packed forward "
                               "(a batch's pairs go through in as few forwards as fit)")
    chat_questions: bool = Field(False, description="lay out every pair whose question reads "
                                 "as one (`layouts.reads_as_question`) in the model's chat "
                                 "template, for teacher and student, as `EditableLM(chat='auto')` "
                                 "sends it; sentences to complete stay inline")
    answers: Literal["gold", "generated"] = Field(
        "gold", description="chat pairs' targets: the gold object, or the teacher's own greedy "
        "answer (edit questions: the plain-prompt teacher's, where it contains the new object; "
        "questions whose answer must stay: the unedited model's), so training sees the answers "
        "users read (train/targets.py)")
    answer_tokens: int = Field(48, ge=4, le=256, description="longest generated target")
    seed: int = 0

    @model_validator(mode="after")
    def _wild_needs_chat(self) -> TrainConfig:
        if self.select_by == "val_wild" and not self.chat_questions:
            raise ValueError("select_by='val_wild' judges answers to the chat questions; set "
                             "chat_questions=True (without it no question is asked in chat)")
        return self

    @field_validator("data", mode="before")
    @classmethod
    def _one_file_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | os.PathLike) else value


# How each TrainConfig field reaches the teacher cache (tests check that every field is listed):
TEACHER_FIELDS = frozenset({"edit_teacher", "neighbour_teacher", "distractor_teacher", "topk"})
"""Fields that change the teacher's distributions for a given pair: hashed into the cache key."""
PAIR_FIELDS = frozenset({"data", "n_train", "n_val", "max_distractors", "seed",
                         "hard_neighbours", "absent_pairs", "older_value_pairs",
                         "chat_questions", "answers",
                         "answer_tokens"})
"""Fields that choose the pairs: the key hashes the pairs themselves, so these reach it that way."""
DEMO_FIELDS = frozenset({"demos"})
"""The IKE teacher's demonstration file: the key hashes its content, not its path."""
STUDENT_FIELDS = frozenset({"m", "weights", "init", "init_text", "init_from", "lr", "batch_size",
                            "epochs", "patience", "weight_decay", "betas", "ce_weight", "ce_kinds",
                            "margin_weight", "margin", "margin_kinds", "select_by",
                            "eval_every", "forest_tokens"})
"""Fields that only change the student (optimisation, P-Token shape, selection): a teacher cache
is reused. (`forest_tokens` also groups the teacher's forwards, which changes nothing but float
rounding.)"""
