"""Moved to `editkit.retrieval.postgres` (the retrieval package); this name keeps old imports
working, with a DeprecationWarning."""
from ._moved import moved

__getattr__ = moved(__name__, "editkit.retrieval.postgres", "editkit.retrieval.store")
