"""Moved to `editkit.eval.hop_answering` (a name that says what it holds); this name keeps old
imports working, with a DeprecationWarning."""
from .._moved import moved

__getattr__ = moved(__name__, "editkit.eval.hop_answering")
