"""Moved to `editkit.eval.teacher_forcing` (a name that says what it holds); this name keeps old
imports working, with a DeprecationWarning."""
from .._moved import moved

__getattr__ = moved(__name__, "editkit.eval.teacher_forcing")
