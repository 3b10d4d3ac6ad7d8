"""editkit: change what a language model believes about facts, in context, and measure it."""
from .editable import AnswerStream, EditableLM, RetrievalSettings
from .errors import (
    ArtifactError,
    DatasetError,
    EditkitError,
    EditMemoryError,
    EditNotFoundError,
    FactTooLongError,
    InvalidInputError,
    MemoryCorruptError,
    ModelLoadError,
    PTokenMismatchError,
    QuantizationUnavailableError,
    UnknownModeError,
    UnsafeFactError,
)
from .eval import EvalConfig, EvalReport, evaluate
from .layouts import Mode, Prompt, PromptBuilder
from .memory import EditMemory
from .ptokens import PTokenConfig, PTokens
from .records import Answer, Edit, RetrievedEdit, ScoreResult
from .safety import FactPolicy

__version__ = "0.1.0"

__all__ = [
    "Answer", "AnswerStream", "FactPolicy", "UnsafeFactError", "EvalConfig", "EvalReport", "evaluate", "ArtifactError", "DatasetError", "Edit", "EditMemory",
    "EditMemoryError", "EditNotFoundError", "EditableLM", "EditkitError", "FactTooLongError",
    "InvalidInputError", "MemoryCorruptError", "Mode", "ModelLoadError", "PTokenConfig",
    "PTokenMismatchError", "PTokens", "Prompt", "PromptBuilder", "QuantizationUnavailableError",
    "RetrievalSettings", "RetrievedEdit", "ScoreResult", "UnknownModeError", "__version__",
]
