"""Moved to `editkit.retrieval.pg_local` (the retrieval package, `editkit/retrieval/`); this name
keeps old imports working, with a DeprecationWarning."""
from ._moved import moved

__getattr__ = moved(__name__, "editkit.retrieval.pg_local")
