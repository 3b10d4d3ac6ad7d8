"""Typed exceptions. Every error a user can cause is an `EditkitError` whose message says what
to do."""
from __future__ import annotations


class EditkitError(Exception):
    """Base class of every error editkit raises on purpose."""


class InvalidInputError(EditkitError, ValueError):
    """A fact, question, candidate or option failed validation (empty, wrong type, bad
    characters)."""


class FactTooLongError(InvalidInputError):
    """A fact (or question) is longer than the configured limit."""


class UnsafeFactError(InvalidInputError):
    """A fact contains prompt-control text (special tokens, P-Token or chat-role markers, layout
    markers such as `New Fact:`) that the `FactPolicy` refuses; see docs/reliability.md."""


class UnknownModeError(InvalidInputError):
    """The editing mode is not one of ptokens, ike, prompt, none."""


class ModelLoadError(EditkitError):
    """The base model or tokenizer could not be found or loaded."""


class QuantizationUnavailableError(ModelLoadError):
    """8-bit/4-bit loading was requested where bitsandbytes cannot provide it."""


class ArtifactError(EditkitError):
    """A saved P-Token artifact is missing, truncated, corrupted or inconsistent."""


class PTokenMismatchError(ArtifactError):
    """P-Tokens were trained for a different base model than the one they are loaded onto."""


class EditMemoryError(EditkitError):
    """Base class of edit-memory errors."""


class MemoryCorruptError(EditMemoryError):
    """The edit-memory database file is not a readable editkit database; it was left untouched."""


class MemoryUnavailableError(EditMemoryError):
    """The edit memory's database cannot be reached (down, restarting, refusing connections).

    The call that raised it was not acknowledged: an add may or may not have been stored, a
    forget or clear may or may not have happened. The next call reconnects on its own once the
    database answers again."""


class MemorySchemaError(EditMemoryError):
    """The database holds an editkit schema this editkit cannot use (a newer version, written by
    a newer editkit), or lacks what the schema needs (the pgvector extension)."""


class MemoryBackendMissingError(EditMemoryError, ImportError):
    """The memory named a backend whose optional packages are not installed (e.g. a
    postgresql:// URL without `editkit[postgres]`)."""


class EditConflictError(EditMemoryError):
    """An edit gives a new value for a slot that a live edit already holds, and the update policy
    is `refuse`; nothing of the call was stored. `conflicts` lists the live edits it would have
    replaced (forget them first, or edit with on_update='latest')."""

    def __init__(self, message: str, conflicts: list[object] | None = None) -> None:
        super().__init__(message)
        self.conflicts = list(conflicts or [])


class EditNotFoundError(EditMemoryError, KeyError):
    """`forget(id)` named an edit that is not in the memory."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "edit not found"


class DatasetError(EditkitError):
    """A data file is missing or not in the expected published format."""


class EngineError(EditkitError):
    """The inference engine behind a remote `EditableLM` refused or failed a request; the
    message carries what it said."""


class EngineUnavailableError(EngineError):
    """The inference engine cannot be reached (down, restarting, timing out). No edit is lost:
    the memory is editkit's and is untouched; retry once the engine answers again."""


class EngineCapabilityError(EngineError):
    """The engine cannot do what was asked (e.g. `score` needs prompt log-probabilities, which
    not every OpenAI-compatible engine returns); the message names the missing capability."""
