"""Moved: P-Token training lives in the package `editkit.train` (config, pairs, teacher,
objective, loop, artifact; its docstring says what each holds). This name keeps old imports
working, with a DeprecationWarning naming the new home."""
from ._moved import moved

__getattr__ = moved(__name__, "editkit.train", "editkit.train.config", "editkit.train.pairs",
                    "editkit.train.teacher", "editkit.train.objective", "editkit.train.loop",
                    "editkit.train.artifact")
