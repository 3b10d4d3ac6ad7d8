"""Where editkit keeps files: the cache directory, and atomic writes (a reader sees the old file
or the whole new one, never half of it)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import EditkitError, InvalidInputError


def cache_dir() -> Path:
    """Where editkit caches converted weights, embeddings and teacher distributions
    (`EDITKIT_CACHE` overrides; else `$XDG_CACHE_HOME/editkit` or `~/.cache/editkit`)."""
    env = os.environ.get("EDITKIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "editkit"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    The file gets the permissions a plain `open()` would give (mkstemp's 0600 respects no umask).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def read_utf8(path: str | os.PathLike[str], *, what: str = "File",
              error: type[EditkitError] = InvalidInputError) -> str:
    """A text file's content as UTF-8; a leading BOM (as Windows editors write) is dropped.

    A missing, unreadable or non-UTF-8 file raises `error` with a message naming the file
    (`what` names the kind of file in "... not found").
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise error(f"Cannot read {p}: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{p} is not UTF-8 text: byte {exc.start} is invalid ({exc.reason}).") from exc
