"""The `editkit` CLI: demo, ask, edits; errors exit 2 with a message."""
from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from editkit import EditMemory
from editkit.cli import app

runner = CliRunner()


def test_demo_shows_answers_before_and_after_the_edit():
    res = runner.invoke(app, ["demo", "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "before edit()" in res.output and "after edit()" in res.output
    assert "English" in res.output and "French" in res.output
    assert "P-Tokens: shipped" in res.output  # says which P-Tokens are in use


def test_ask_with_facts_and_a_memory_file(tmp_path):
    mem = tmp_path / "m.sqlite"
    res = runner.invoke(app, ["ask", "The mother tongue of Danielle Darrieux is", "--mode",
                              "prompt", "--fact",
                              "The mother tongue of Danielle Darrieux is English.",
                              "--memory", str(mem), "--max-new-tokens", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert '"mode": "prompt"' in res.output and "English" in res.output
    assert len(EditMemory(mem).edits()) == 1
    listing = runner.invoke(app, ["edits", str(mem)])
    assert listing.exit_code == 0 and "Danielle Darrieux" in listing.output


def test_bad_input_exits_2_with_a_message(tmp_path):
    res = runner.invoke(app, ["ask", "   ", "--mode", "prompt"])
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
