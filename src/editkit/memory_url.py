"""Moved to `editkit.retrieval.urls` (the retrieval package); this name keeps old imports
working, with a DeprecationWarning."""
from ._moved import moved

__getattr__ = moved(__name__, "editkit.retrieval.urls")
