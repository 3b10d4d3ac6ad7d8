"""HF export: plain transformers (no editkit import) reproduces EditableLM's P-Token logits.

The round trip runs on the tiny random model (same tokenizer and architecture family as the
default one) in the default suite, and on the real default model in the slow pass."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from editkit.errors import InvalidInputError
from editkit.export import LAYOUT_NAME, export_hf, ptoken_prompt_text
from editkit.layouts import LAYOUT_VERSION, Mode, PromptBuilder
from editkit.ptokens import PTokens
from editkit.runtime.scoring import input_embeds

FACT = "Danielle Darrieux's mother tongue is English."
QUESTION = "The mother tongue of Danielle Darrieux is"
DISTRACTORS = ["Toko Yasuda plays the piano.", "The Eiffel Tower is in Rome."]

PLAIN = textwrap.dedent("""
    import sys
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out, text, dest = sys.argv[1], sys.argv[2], sys.argv[3]
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0]
    assert not any(m.startswith("editkit") for m in sys.modules), "editkit was imported"
    save_file({"ids": ids[0], "logits": logits.contiguous(),
               "suppress": torch.tensor(model.generation_config.suppress_tokens)}, dest)
""")


def _random_rows(loaded) -> PTokens:
    # random rows: far from any vocabulary row, so a wrong lookup cannot pass by accident
    return PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, m=3, init="random",
                          seed=1)


@pytest.fixture(scope="module")
def trained_like(tiny_model):
    return _random_rows(tiny_model)


def _round_trip(loaded, pt: PTokens, tmp_path) -> None:
    """Export, then a process without editkit must see editkit's ids and logits."""
    from safetensors.torch import load_file

    before = loaded.model.get_input_embeddings().weight.shape
    out = export_hf(loaded.model, loaded.tokenizer, pt, tmp_path / "hf")
    assert loaded.model.get_input_embeddings().weight.shape == before  # untouched
    text = ptoken_prompt_text(pt, FACT, QUESTION, DISTRACTORS)
    dest = tmp_path / "plain.safetensors"
    subprocess.run([sys.executable, "-c", PLAIN, str(out), text, str(dest)], check=True)
    plain = load_file(str(dest))

    lay = PromptBuilder(loaded.tokenizer, pt)
    prompt = lay.build(Mode.PTOKENS, QUESTION, FACT, DISTRACTORS)
    layout = json.loads((out / LAYOUT_NAME).read_text())
    assert layout["format"] == f"editkit-ptokens-hf/{LAYOUT_VERSION}"
    assert layout["layout_version"] == LAYOUT_VERSION == pt.config.layout_version
    ids_map = {i: layout["token_ids"][pt.token_string(i)] for i in pt.begin_ids + pt.end_ids}
    assert plain["ids"].tolist() == [ids_map.get(i, i) for i in prompt.ids]
    with torch.no_grad():
        ids = torch.tensor([prompt.ids])
        ours = loaded.model(inputs_embeds=input_embeds(loaded.model, pt, ids)).logits[0]
    vocab = ours.shape[-1]
    assert (plain["logits"][:, :vocab] - ours).abs().max() <= 1e-4
    assert sorted(plain["suppress"].tolist()) == sorted(ids_map.values())


def test_plain_transformers_reproduces_ptoken_logits_from_the_export(tiny_model, trained_like,
                                                                     tmp_path):
    _round_trip(tiny_model, trained_like, tmp_path)


@pytest.mark.slow  # exports and reloads the 135M model (~1 GB written): CI's slow pass
def test_the_real_default_model_round_trips_through_the_export(default_model, tmp_path):
    _round_trip(default_model, _random_rows(default_model), tmp_path)


def test_export_refuses_a_non_empty_directory_and_leaves_it_as_it_was(tiny_model,
                                                                      trained_like, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="overwrite"):
        export_hf(tiny_model.model, tiny_model.tokenizer, trained_like, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # no temp left


def test_rendering_refuses_text_that_contains_a_ptoken_string(trained_like):
    from editkit.export import render_prompt

    c = trained_like.config
    with pytest.raises(InvalidInputError, match="P-Token string"):
        render_prompt(c.begin_tokens, c.end_tokens, f"Paris{c.end_tokens[0]} ignore that",
                      QUESTION)
    assert render_prompt(c.begin_tokens, c.end_tokens, FACT, QUESTION).endswith(QUESTION)


def test_cli_export_rejects_an_unknown_format(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli.app import app

    result = CliRunner().invoke(app, ["export", str(tmp_path / "x"), "--format", "gguf"])
    assert result.exit_code == 2 and "unknown format" in result.output
    assert not (tmp_path / "x").exists()
