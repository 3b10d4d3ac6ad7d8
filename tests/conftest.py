"""Shared fixtures. The real default model is loaded once per session (converted on first use)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from editkit import EditableLM, EditMemory
from editkit.data_files import data_dir, data_file  # the one home of "where are the data sets"
from editkit.loading import LoadedModel, load_model
from editkit.ptokens import PTokens
from pg_fixtures import local_pg, make_store, pg_url  # noqa: F401  (fixtures: PostgreSQL)

# Imported by test modules: `from conftest import data_file`. The data sets ship in the package
# (editkit/data/eval); EDITKIT_DATA=/path replaces them with a folder laid out the same way.
__all__ = ["data_dir", "data_file"]


@pytest.fixture(scope="session")
def default_model() -> LoadedModel:
    return load_model(None, device="cpu")


@pytest.fixture(scope="session")
def default_ptokens(default_model: LoadedModel) -> PTokens:
    return PTokens.create(default_model.model, default_model.tokenizer, name=default_model.name,
                          m=3)


@pytest.fixture(scope="session")
def shipped_ptokens(default_model: LoadedModel) -> PTokens:
    """The trained P-Tokens that ship for the default model (what `from_pretrained()` loads)."""
    from editkit.building import shipped_ptokens_dir
    from editkit.ptokens.config import DEFAULT_M

    path = shipped_ptokens_dir(default_model.name, DEFAULT_M)
    assert path is not None, "no P-Tokens ship for the default model"
    return PTokens.from_pretrained(path, default_model.model, default_model.tokenizer,
                                   name=default_model.name)


@pytest.fixture
def product_lm(default_model: LoadedModel, shipped_ptokens: PTokens) -> EditableLM:
    """What a new user gets from `EditableLM.from_pretrained()`: the default model, its shipped
    P-Tokens, every default setting, and a fresh in-RAM memory (the model loaded once)."""
    return EditableLM(default_model, shipped_ptokens, EditMemory(None))


@pytest.fixture
def lm(default_model: LoadedModel, default_ptokens: PTokens) -> EditableLM:
    """An EditableLM on the real default model with a fresh in-RAM memory."""
    return EditableLM(default_model, default_ptokens, EditMemory(None), mode="prompt")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama checkpoint with the default tokenizer, built here, for fast tests.

    Only the tokenizer comes from the default model (read from its cached conversion), so a test
    that uses nothing else never loads the real weights.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from editkit.loading import converted_gguf_dir, default_gguf_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(converted_gguf_dir(default_gguf_path()))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> LoadedModel:
    """The tiny random model, loaded once as editkit loads any checkpoint (frozen, eval mode).
    Tests that patch the model load their own copy with `load_model(tiny_model_dir)`."""
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_ptokens(tiny_model: LoadedModel) -> PTokens:
    """Untrained m=3 P-Tokens on the tiny model: for layout and plumbing tests."""
    return PTokens.create(tiny_model.model, tiny_model.tokenizer, name=tiny_model.name, m=3)


@pytest.fixture(scope="session")
def small_demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 200 records of the vendored CounterFact training file (real data, small)."""
    from editkit.ike import default_train_file

    records = json.loads(default_train_file().read_text())[:200]
    path = tmp_path_factory.mktemp("demos") / "counterfact-train-200.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def tiny_lm(tiny_model: LoadedModel, tiny_ptokens: PTokens) -> EditableLM:
    """An EditableLM on the tiny random model (P-Token mode) with a fresh in-RAM memory."""
    return EditableLM(tiny_model, tiny_ptokens, EditMemory(None), mode="ptokens")
