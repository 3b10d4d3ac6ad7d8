"""P-Token training: distil the IKE prompt into persuasion tokens (the model stays frozen).

For each training record five kinds of pairs are built (edit, paraphrase, neighbour, distractor,
empty edit). The teacher is the model under the IKE layout (32 demonstrations) — or, optionally for
neighbour pairs, the unedited model, which is the ideal locality reference; the empty-edit teacher
is always the unedited model. The student is the same question under the P-Token layout. The loss
is KL(teacher ‖ student) of the next-token distributions at every answer position (teacher forced
along the answer), temperature 1. The teacher never changes, so its distributions are computed
once and cached as top-k log-probs plus the remaining mass; epochs then only run the short student
sequences.

One module per concept, so that a change reads one file:

- `config`: `TrainConfig`, the pair kinds, and how each field reaches the teacher cache;
- `pairs`: the records read and the pairs built from them;
- `targets`: chat pairs' targets from the teacher's generated replies (`answers="generated"`);
- `teacher`: the teacher cache (format, key, top-k reduction);
- `objective`: the loss of one pair (KL, cross-entropy, answer-margin hinge) and its weight;
- `loop`: `Trainer` (teacher and student forwards, validation, the optimisation loop, resume);
- `artifact`: the files a run writes (the selected P-Tokens with their record, checkpoints);
- `gate`: training the relevance gate (`editkit.retrieval.gate`), a separate, numpy-only model.

`editkit.training` (the module before this package) still hands out its names, with a
DeprecationWarning.
"""
from .config import (
    DEMO_FIELDS,
    KINDS,
    PAIR_FIELDS,
    STUDENT_FIELDS,
    TEACHER_FIELDS,
    Kind,
    TrainConfig,
)
from .gate import GateTrainConfig, train_gate
from .loop import Trainer
from .objective import (
    answer_margin,
    kl_topk,
    margin_applies,
    margin_loss,
    pair_loss,
    pair_weight,
)
from .pairs import Pair, build_pairs, load_training_records
from .teacher import CACHE_FORMAT, TeacherCache, file_digest, teacher_cache_key, topk_with_rest

__all__ = [
    "CACHE_FORMAT",
    "DEMO_FIELDS",
    "GateTrainConfig",
    "KINDS",
    "PAIR_FIELDS",
    "STUDENT_FIELDS",
    "TEACHER_FIELDS",
    "Kind",
    "Pair",
    "TeacherCache",
    "TrainConfig",
    "Trainer",
    "answer_margin",
    "build_pairs",
    "file_digest",
    "kl_topk",
    "load_training_records",
    "margin_applies",
    "margin_loss",
    "pair_loss",
    "pair_weight",
    "teacher_cache_key",
    "topk_with_rest",
    "train_gate",
]
