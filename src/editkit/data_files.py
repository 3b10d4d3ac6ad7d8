"""Where the data sets are: the ones that ship in the package, or the folder `$EDITKIT_DATA` names.

The package ships the published data sets it evaluates on (`editkit/data/eval/`, provenance in
`editkit/data/PROVENANCE.md`), laid out by family: `counterfact/`, `zsre/`, `mquake/`. The two
training splits it ships for IKE demonstrations (`editkit/data/counterfact-train.json`,
`zsre-train.json`) are found under the same layout (`counterfact/counterfact-train.json`,
`zsre/zsre-train.json`). `EDITKIT_DATA=/path` replaces all of them with a folder laid out the same
way. Code and tests find a data set with `data_file("counterfact", "counterfact-rome-test.json")`;
reports name it with `data_label`, which never holds this machine's path to the package.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import DatasetError, InvalidInputError

ENV = "EDITKIT_DATA"
"""The environment variable that replaces the packaged data sets with a folder."""
FAMILIES = ("counterfact", "zsre", "mquake")
PACKAGED_PREFIX = "editkit:data/"
"""How a report names a packaged file: `editkit:data/eval/counterfact/counterfact-rome-test.json`
(the path inside the installed package)."""

# Packaged files kept outside `data/eval/` (the IKE demonstration stores, `editkit.ike`), by the
# name they have in the layout.
_OUTSIDE_EVAL = {"counterfact/counterfact-train.json": "counterfact-train.json",
                 "zsre/zsre-train.json": "zsre-train.json"}


def package_data_root() -> Path:
    """The installed package's `editkit/data` folder."""
    return Path(__file__).resolve().parent / "data"


def packaged_dir() -> Path:
    """The folder of the packaged evaluation data sets (`editkit/data/eval`)."""
    return package_data_root() / "eval"


def env_dir() -> Path | None:
    """The folder `$EDITKIT_DATA` names (None when unset or empty); `DatasetError` when it is not a
    folder."""
    env = os.environ.get(ENV)
    if not env:
        return None
    path = Path(env).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{ENV}={env} is not a folder. Point it at a folder laid out like "
                           f"editkit's packaged data ({', '.join(f + '/' for f in FAMILIES)}), or "
                           "unset it to use the data sets that ship with editkit.")
    return path


def data_dir() -> Path:
    """The data sets' folder: `$EDITKIT_DATA` if set, else the packaged one. Find a file with
    `data_file` (the packaged training splits live outside this folder)."""
    return env_dir() or packaged_dir()


def _relative(parts: tuple[str, ...]) -> PurePosixPath:
    rel = PurePosixPath(*parts) if parts else PurePosixPath()
    if not parts or rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise InvalidInputError("A data set is named by a relative path such as 'counterfact/"
                                f"counterfact-rome-test.json', not {'/'.join(parts)!r}.")
    return rel


def packaged_names() -> list[str]:
    """The data sets that ship with editkit, by their name in the layout."""
    root = packaged_dir()
    names = {p.relative_to(root).as_posix() for f in FAMILIES for p in (root / f).glob("*.json")}
    names |= {k for k, v in _OUTSIDE_EVAL.items() if (package_data_root() / v).is_file()}
    return sorted(names)


def data_file(*parts: str) -> Path:
    """A data set by its name in the layout: `data_file("counterfact",
    "counterfact-rome-test.json")` or `data_file("counterfact/counterfact-rome-test.json")`.
    From `$EDITKIT_DATA` if set, else from the package; `DatasetError` (naming EDITKIT_DATA)
    when the file is not there."""
    rel = _relative(parts)
    env = env_dir()
    if env is not None:
        path = env / rel
        if not path.is_file():
            raise DatasetError(
                f"Data set {rel} is not in {ENV}={os.environ[ENV]} ({path} does not exist). "
                f"{ENV} must name a folder laid out like editkit's packaged data "
                f"({', '.join(f + '/' for f in FAMILIES)}); unset it to use the data sets that "
                "ship with editkit.")
        return path
    key = rel.as_posix()
    path = (package_data_root() / _OUTSIDE_EVAL[key] if key in _OUTSIDE_EVAL
            else packaged_dir() / rel)
    if not path.is_file():
        raise DatasetError(f"No data set {key} ships with editkit (packaged: "
                           f"{', '.join(packaged_names())}). Set {ENV} to a folder that holds "
                           f"{key}.")
    return path


def data_label(path: str | os.PathLike[str]) -> str:
    """How a report names a data file without this machine's paths: `editkit:data/...` for a
    packaged file, `$EDITKIT_DATA/...` for one under that folder, else the path as given."""
    p = Path(path)
    try:
        resolved = p.resolve()
    except OSError:
        return str(path)
    roots = [(package_data_root(), PACKAGED_PREFIX)]
    env = os.environ.get(ENV)
    if env:
        roots.insert(0, (Path(env).expanduser(), f"${ENV}/"))
    for root, prefix in roots:
        try:
            return prefix + resolved.relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            continue
    return str(path)


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a report records about its data file: its label (`data_label`) and SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"file": data_label(path), "sha256": digest.hexdigest()}
