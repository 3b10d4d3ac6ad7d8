"""The `editkit` command line, installed as `editkit.cli` (`python -m editkit.cli ...`)."""
from .app import app, main

__all__ = ["app", "main"]
