"""Moved: the gate at question time to `editkit.retrieval.gate`, its training to
`editkit.train.gate`; this name keeps old imports working, with a DeprecationWarning."""
from ._moved import moved

__getattr__ = moved(__name__, "editkit.retrieval.gate", "editkit.train.gate")
