"""The `editkit` CLI: demo, ask, edits; errors exit 2 with a message.

`demo` runs the real default model with its shipped P-Tokens; the other commands' plumbing runs on
the tiny random model (`--model <dir>`).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from editkit import EditMemory, InvalidInputError
from editkit.cli import app
from editkit.records import MAX_QUESTION_CHARS, FactInput, clean_text

runner = CliRunner()


def _one_error_line(res) -> str:
    """The single `error:` line a failed command prints (and nothing else, no traceback)."""
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]  # no progress bars either
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_demo_shows_answers_before_and_after_the_edit():
    res = runner.invoke(app, ["demo"])
    assert res.exit_code == 0, res.output
    assert "before edit()" in res.output and "after edit()" in res.output
    table = res.output[res.output.index("before edit()"):res.output.index("mean log-prob")]
    assert "French" in table and "English" in table  # the answer before, the answer after
    assert "English: -" in res.output and "French: -" in res.output  # the scores
    assert res.output.count("shipped") == 1  # says which P-Tokens are in use, once


def test_ask_with_facts_and_a_memory_file(tmp_path, tiny_model_dir):
    mem = tmp_path / "m.sqlite"
    res = runner.invoke(app, ["ask", "The mother tongue of Danielle Darrieux is", "--mode",
                              "prompt", "--fact",
                              "The mother tongue of Danielle Darrieux is English.",
                              "--memory", str(mem), "--max-new-tokens", "3", "--json",
                              "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    assert '"mode": "prompt"' in res.output and "English" in res.output
    assert len(EditMemory(mem).edits()) == 1
    listing = runner.invoke(app, ["edits", str(mem)])
    assert listing.exit_code == 0 and "Danielle Darrieux" in listing.output


def test_bad_input_exits_2_with_a_message(tmp_path, tiny_model_dir):
    res = runner.invoke(app, ["ask", "   ", "--mode", "prompt", "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "question is empty" in res.output
    res = runner.invoke(app, ["ask", "q", "--mode", "memit"])
    assert res.exit_code == 2 and "Unknown mode" in res.output
    res = runner.invoke(app, ["edits", str(tmp_path / "none.sqlite")])
    assert res.exit_code == 2 and "no memory file" in res.output


def test_installed_console_script_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "editkit.cli", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout


def test_cli_and_integrations_install_inside_editkit_not_top_level():
    import importlib.util

    assert importlib.util.find_spec("editkit.cli") is not None
    assert importlib.util.find_spec("editkit.integrations") is not None
    code = "import importlib.util as u; print(u.find_spec('cli'), u.find_spec('integrations'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert out.stdout.strip() == "None None"


def test_train_refuses_a_bad_config_before_loading_anything(tmp_path):
    cfg = tmp_path / "train.json"
    cfg.write_text('{"m": 3, "learning_rate": 0.1}')  # unknown field
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "pt"), "--config", str(cfg)])
    assert res.exit_code == 2 and "invalid training config" in res.output
    assert not (tmp_path / "pt").exists()
    yml = tmp_path / "train.yaml"
    yml.write_text("m: 0\n")
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "pt"), "--config", str(yml),
                              "--m", "0"])
    assert res.exit_code == 2


def test_every_command_reports_errors_through_the_one_decorator():
    for cmd in app.registered_commands:
        assert getattr(cmd.callback, "__wrapped__", None) is not None, cmd.callback.__name__


def test_train_with_more_records_than_the_data_holds_is_one_line_before_the_model_loads(
        tmp_path, monkeypatch):
    import editkit.loading

    def no_model(*_a, **_kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(editkit.loading, "load_model", no_model)
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "pt"), "--n-train", "100000"])
    line = _one_error_line(res)
    assert "n_train + n_val" in line and "--n-train" in line
    assert not (tmp_path / "pt").exists()


def test_an_error_while_building_the_trainer_is_one_line_not_a_traceback(tmp_path, monkeypatch,
                                                                         tiny_model_dir):
    import editkit.train.loop

    def refuse(self, *_a, **_kw):
        raise InvalidInputError("the trainer refused these settings")

    monkeypatch.setattr(editkit.train.loop.Trainer, "__init__", refuse)
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "pt"), "--n-train", "2",
                              "--n-val", "1", "--model", str(tiny_model_dir)])
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert _one_error_line(res) == "error: the trainer refused these settings"


def test_train_mixes_data_files_given_by_repeating_data(tmp_path, monkeypatch, tiny_model_dir):
    from editkit.ike import default_train_file

    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    cf, zs = tmp_path / "cf.json", tmp_path / "zs.json"
    cf.write_text(json.dumps(json.loads(default_train_file().read_text())[:3]))
    zs.write_text((default_train_file().parent / "zsre-train.json").read_text())
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "pt"), "--data", str(cf),
                              "--data", str(zs), "--n-train", "3", "--n-val", "1", "--m", "1",
                              "--epochs", "1", "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    assert "records seen" in res.output
    info = json.loads((tmp_path / "pt" / "ptokens_config.json").read_text())["training"]
    assert info["config"]["data"] == [str(cf), str(zs)]
    assert (info["train_records"], info["val_records"]) == (3, 1)


@pytest.mark.parametrize("args, message", [
    (["bench", "nope"], "unknown benchmark 'nope'"),
    (["export", "out", "--format", "onnx"], "unknown format 'onnx'"),
])
def test_hand_checked_options_are_reported_like_every_other_error(args, message):
    assert message in _one_error_line(runner.invoke(app, args))


def test_libraries_progress_bars_show_only_with_verbose(tiny_model_dir):
    """transformers' "Loading weights" bar (and every other library bar: downloads, the GGUF
    conversion) is off in the CLI unless --verbose; a fresh process, as a user runs it."""
    args = ["ask", "--fact", "The mother tongue of Danielle Darrieux is English.",
            "The mother tongue of Danielle Darrieux is", "--mode", "prompt",
            "--max-new-tokens", "1", "--model", str(tiny_model_dir)]

    def run(*extra: str) -> str:
        out = subprocess.run([sys.executable, "-m", "editkit.cli", *extra, *args],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr

    quiet = run()
    assert "Loading weights" not in quiet and "%|" not in quiet, quiet
    assert "Loading weights" in run("--verbose")  # the switch is what hid it


def test_help_shows_bracketed_text_and_no_type_label_on_flags():
    for command in ("eval", "ask"):
        res = runner.invoke(app, [command, "--help"])
        assert res.exit_code == 0, res.output
        assert "`editkit[quant]`" in res.output and "<bool>" not in res.output, res.output
    assert "--verbose" in runner.invoke(app, ["--help"]).output


def _library_error(call) -> str:
    with pytest.raises(InvalidInputError) as exc:
        call()
    return str(exc.value)


@pytest.mark.parametrize("args, library", [
    (["ask", "--fact", "   ", "q"], lambda: FactInput.parse("   ")),
    (["ask", "--fact", "", "q"], lambda: FactInput.parse("")),
    (["ask", " ", "--fact", "A fact."], lambda: clean_text(" ", "question", MAX_QUESTION_CHARS)),
    (["demo", "--fact", "  "], lambda: FactInput.parse("  ")),
    (["demo", "--question", ""], lambda: clean_text("", "question", MAX_QUESTION_CHARS)),
])
def test_empty_text_is_refused_before_the_model_loads_in_the_library_s_words(args, library,
                                                                             monkeypatch):
    import editkit

    def no_model(*_a, **_kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(editkit.EditableLM, "from_pretrained", no_model)
    line = _one_error_line(runner.invoke(app, args))
    assert line == f"error: {_library_error(library)}"
    assert "is empty" in line
