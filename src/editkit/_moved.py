"""Old import paths that still work: a module that moved leaves a `__getattr__` made here, which
hands out the name from its new home with a DeprecationWarning naming that home."""
from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved(old: str, *new: str) -> Callable[[str], Any]:
    """A module `__getattr__` for `old` that looks names up in the `new` modules, in order."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for target in new:
                module = importlib.import_module(target)
                if hasattr(module, name):
                    warnings.warn(f"{old}.{name} moved to {target}.{name}; import it from there "
                                  f"({old} goes away in a later release).",
                                  DeprecationWarning, stacklevel=2)
                    return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__
