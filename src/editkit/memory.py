"""Moved to `editkit.retrieval` (`store.py`, `sqlite.py`); this name keeps old imports
working, with a DeprecationWarning."""
from ._moved import moved

__getattr__ = moved(__name__, "editkit.retrieval.store", "editkit.retrieval.settings",
                     "editkit.retrieval.sqlite")
