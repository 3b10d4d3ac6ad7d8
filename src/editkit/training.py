"""Compatibility module: P-Token training now lives in the package `editkit.train`.

This module kept training in one file until it passed 700 lines; the code is now split by concept
(`editkit.train.config`, `.pairs`, `.teacher`, `.objective`, `.loop`, `.artifact`; the package
docstring says what each holds). Every name this module defined is re-exported here, unchanged
and without a warning, so `from editkit.training import Trainer, TrainConfig, ...` keeps working;
new code imports from `editkit.train`.
"""
# Every import below is a re-export (the private names too: tests and old scripts import them).
# ruff: noqa: F401

from .train.artifact import (
    OPTIM_NAME,
    STATE_NAME,
    _epoch_seconds,
    _load_optimizer,
    _save_optimizer,
)
from .train.config import (
    DEMO_FIELDS,
    KINDS,
    PAIR_FIELDS,
    QUESTION_KINDS,
    STUDENT_FIELDS,
    TEACHER_FIELDS,
    Kind,
    TrainConfig,
)
from .train.loop import Trainer
from .train.objective import answer_margin, kl_topk, margin_loss
from .train.pairs import (
    _FUNCTION_WORDS,
    Pair,
    _chat_pair,
    _contrast,
    _groups,
    _round_robin,
    _subject_words,
    build_pairs,
    load_training_records,
)
from .train.teacher import (
    CACHE_FORMAT,
    TeacherCache,
    _scatter,
    file_digest,
    teacher_cache_key,
    topk_with_rest,
)
