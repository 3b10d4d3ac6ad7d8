"""HF export: plain transformers (no editkit import) reproduces EditableLM's P-Token logits."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from editkit.errors import InvalidInputError
from editkit.export import LAYOUT_NAME, export_hf, ptoken_prompt_text
from editkit.layouts import Mode, PromptBuilder
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


@pytest.fixture(scope="module")
def trained_like(default_model):
    # random rows: far from any vocabulary row, so a wrong lookup cannot pass by accident
    return PTokens.create(default_model.model, default_model.tokenizer, name=default_model.name,
                          m=3, init="random", seed=1)


def test_plain_transformers_reproduces_ptoken_logits_from_the_export(default_model,
                                                                     trained_like, tmp_path):
    from safetensors.torch import load_file

    before = default_model.model.get_input_embeddings().weight.shape
    out = export_hf(default_model.model, default_model.tokenizer, trained_like, tmp_path / "hf")
    assert default_model.model.get_input_embeddings().weight.shape == before  # untouched
    text = ptoken_prompt_text(trained_like, FACT, QUESTION, DISTRACTORS)
    dest = tmp_path / "plain.safetensors"
    subprocess.run([sys.executable, "-c", PLAIN, str(out), text, str(dest)], check=True)
    plain = load_file(str(dest))

    lay = PromptBuilder(default_model.tokenizer, trained_like)
    prompt = lay.build(Mode.PTOKENS, QUESTION, FACT, DISTRACTORS)
    layout = json.loads((out / LAYOUT_NAME).read_text())
    ids_map = {i: layout["token_ids"][trained_like.token_string(i)]
               for i in trained_like.begin_ids + trained_like.end_ids}
    assert plain["ids"].tolist() == [ids_map.get(i, i) for i in prompt.ids]
    with torch.no_grad():
        ids = torch.tensor([prompt.ids])
        ours = default_model.model(inputs_embeds=input_embeds(default_model.model, trained_like,
                                                              ids)).logits[0]
    vocab = ours.shape[-1]
    assert (plain["logits"][:, :vocab] - ours).abs().max() <= 1e-4
    assert sorted(plain["suppress"].tolist()) == sorted(ids_map.values())


def test_export_refuses_a_non_empty_directory_and_leaves_it_as_it_was(default_model,
                                                                      trained_like, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="overwrite"):
        export_hf(default_model.model, default_model.tokenizer, trained_like, out)
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
