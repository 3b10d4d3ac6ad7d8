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

runner = CliRunner()


def _one_error_line(res) -> str:
    """The single `error:` line a failed command prints (and nothing else, no traceback)."""
    assert res.exit_code == 2, res.output
    # transformers' own weight-loading progress bar is not editkit's output
    lines = [line for line in res.output.splitlines()
             if line.strip() and not line.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_demo_shows_answers_before_and_after_the_edit():
    res = runner.invoke(app, ["demo", "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "before edit()" in res.output and "after edit()" in res.output
    assert "English" in res.output and "French" in res.output
    assert "P-Tokens: shipped" in res.output  # says which P-Tokens are in use


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
    import editkit.training

    def refuse(self, *_a, **_kw):
        raise InvalidInputError("the trainer refused these settings")

    monkeypatch.setattr(editkit.training.Trainer, "__init__", refuse)
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
