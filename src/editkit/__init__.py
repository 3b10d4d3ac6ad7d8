"""editkit: change what a language model believes about facts, in context, and measure it.

The public API is what `__all__` lists: the facade (`EditableLM`), what it takes and returns,
the edit memory, P-Tokens and their training and export, evaluation, and every error type.
Building blocks stay in their modules and are imported from there when needed:
`editkit.layouts.PromptBuilder` (prompts are built by `EditableLM.prompt()`; the builder's
signature follows the layout work), `editkit.retrieval.select`, `editkit.runtime.*` (the decode
and scoring stack) and `editkit.eval.tasks.mquake_multihop.MultiHopConfig` (the hop-by-hop
MQuAKE runner: an evaluation experiment, run by scripts/mquake_multihop.py, not a supported API
yet).
"""
from .editable import AnswerStream, EditableLM
from .errors import (
    ArtifactError,
    DatasetError,
    EditkitError,
    EditMemoryError,
    EditNotFoundError,
    FactTooLongError,
    InvalidInputError,
    MemoryBackendMissingError,
    MemoryCorruptError,
    MemorySchemaError,
    MemoryUnavailableError,
    ModelLoadError,
    PTokenMismatchError,
    QuantizationUnavailableError,
    UnknownModeError,
    UnsafeFactError,
)
from .eval import EvalConfig, EvalReport, evaluate
from .export import export_hf
from .layouts import Mode, Prompt
from .ptokens import PTokenConfig, PTokens
from .records import Answer, Edit, RetrievedEdit, ScoreResult
from .retrieval import EditMemory, EditStore, RetrievalSettings, Selection
from .safety import FactPolicy
from .train import TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "AnswerStream",
    "ArtifactError",
    "DatasetError",
    "Edit",
    "EditMemory",
    "EditMemoryError",
    "EditNotFoundError",
    "EditStore",
    "EditableLM",
    "EditkitError",
    "EvalConfig",
    "EvalReport",
    "FactPolicy",
    "FactTooLongError",
    "InvalidInputError",
    "MemoryBackendMissingError",
    "MemoryCorruptError",
    "MemorySchemaError",
    "MemoryUnavailableError",
    "Mode",
    "ModelLoadError",
    "PTokenConfig",
    "PTokenMismatchError",
    "PTokens",
    "Prompt",
    "QuantizationUnavailableError",
    "RetrievalSettings",
    "RetrievedEdit",
    "ScoreResult",
    "Selection",
    "TrainConfig",
    "Trainer",
    "UnknownModeError",
    "UnsafeFactError",
    "__version__",
    "evaluate",
    "export_hf",
]
