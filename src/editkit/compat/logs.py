"""Quieting the libraries: a warning that repeats on every call shown once per process
(bitsandbytes' 8-bit matmul logs the same line for every layer of every forward), and the
progress bars off (the CLI, unless --verbose), the GGUF conversion's included."""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence


class _OncePerProcess(logging.Filter):
    """Lets each distinct message through once (the same text again is dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_ONCE = _OncePerProcess()
REPEATING_LOGGERS = ("bitsandbytes",)
"""Libraries whose warnings repeat per call (their loggers and every child logger get `_ONCE`)."""


def quiet_repeated_logs(prefixes: Sequence[str] = REPEATING_LOGGERS) -> None:
    """Show each message of these libraries' loggers once per process.

    A logger's filters only see the records created on that logger, not its children's, so the
    filter goes on every logger under each prefix that exists now: call this after the library
    is imported (`load_model` does, for quantized models). Idempotent.
    """
    names = [n for n in logging.root.manager.loggerDict
             if any(n == p or n.startswith(p + ".") for p in prefixes)]
    for name in [*prefixes, *names]:
        log = logging.getLogger(name)
        if _ONCE not in log.filters:
            log.addFilter(_ONCE)


def quiet_progress_bars() -> None:
    """Turn off the libraries' progress bars in this process: transformers' ("Loading weights",
    "Writing model shards"), huggingface_hub's downloads, and so the GGUF conversion's
    (`gguf_progress_follows_transformers`). The CLI calls this unless `--verbose`; the Python
    API never does, so a library user keeps the libraries' defaults.

    Cheap when transformers is not imported yet (the CLI's `--help` stays fast): transformers
    reads huggingface_hub's switch when it is imported, so setting that one is enough; once it
    is imported, its own switch is set too.
    """
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:
        hf_logging.disable_progress_bar()


def gguf_progress_follows_transformers() -> None:
    """Make the GGUF conversion's bar ("Converting and de-quantizing GGUF tensors") obey
    transformers' progress-bar switch (`transformers.utils.logging.disable_progress_bar`), as its
    other bars do: transformers draws that one with `tqdm.auto` directly. The switch is on by
    default, so nothing changes unless someone (the CLI) turned it off. Idempotent."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
        from transformers.utils import logging as hf_logging
    except ImportError:  # a transformers without this module: nothing to route
        return
    if hasattr(gguf_utils, "tqdm"):
        gguf_utils.tqdm = hf_logging.tqdm
