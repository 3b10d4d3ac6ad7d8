"""The package's rooms stay as ARCHITECTURE.md says: modules under ~400 lines, run-time code that
does not import training, every module named in ARCHITECTURE.md, and the old import paths of
moved modules still working (with a DeprecationWarning naming the new home)."""
from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import editkit

PACKAGE = Path(editkit.__file__).parent
ROOT = PACKAGE.parent.parent
MAX_LINES = 420  # "no module over ~400 lines"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)


def _is_shim(path: Path) -> bool:
    return "moved(__name__" in path.read_text(encoding="utf-8")


def test_no_module_is_over_about_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("room", ["retrieval", "runtime", "eval", "integrations", "ptokens"])
def test_run_time_rooms_do_not_import_training(room):
    for path in (PACKAGE / room).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("editkit.train"), path
            elif isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("train"), path


def test_architecture_md_names_every_room_of_the_tree():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
             and p.name != "data"}
    rooms |= {p.stem for p in PACKAGE.glob("*.py")
              if not p.stem.startswith("_") and not _is_shim(p)}
    missing = sorted(r for r in rooms if f"`{r}" not in text)
    assert missing == []


MOVED = [
    ("editkit.memory", "EditMemory", "editkit.retrieval.sqlite"),
    ("editkit.memory", "EditStore", "editkit.retrieval.store"),
    ("editkit.pg_memory", "PostgresEditMemory", "editkit.retrieval.postgres"),  # dev has psycopg
    ("editkit.memory_url", "open_memory", "editkit.retrieval.urls"),
    ("editkit.pg_local", "LocalPostgres", "editkit.retrieval.pg_local"),
    ("editkit.vector_index", "build_index", "editkit.retrieval.index"),
    ("editkit.relevance", "RelevanceGate", "editkit.retrieval.gate"),
    ("editkit.relevance", "train_gate", "editkit.train.gate"),
    ("editkit.eval.scorer", "Scorer", "editkit.eval.teacher_forcing"),
    ("editkit.eval.scored", "ScoredTask", "editkit.eval.teacher_forced_task"),
    ("editkit.eval.answerer", "MultiHopAnswerer", "editkit.eval.hop_answering"),
    ("editkit.training", "Trainer", "editkit.train"),
    ("editkit.training", "_subject_words", "editkit.train.pairs"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_old_import_paths_still_work_and_name_the_new_home(old, name, new):
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        obj = getattr(importlib.import_module(old), name)
    assert obj is getattr(importlib.import_module(new), name)


def test_the_new_homes_import_without_deprecation_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from editkit import EditableLM, EditMemory, RetrievalSettings  # noqa: F401
        from editkit.retrieval import Judge, open_memory, select  # noqa: F401


def test_a_name_that_never_existed_is_an_attribute_error():
    import editkit.memory

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        editkit.memory.nope  # noqa: B018
