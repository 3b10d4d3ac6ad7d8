"""Model loading: embedded default, cache, local paths, .gguf, quantization errors, frozen
weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editkit import ModelLoadError, QuantizationUnavailableError
from editkit.loading import (
    DEFAULT_MODEL_NAME,
    cache_dir,
    converted_gguf_dir,
    default_gguf_path,
    load_model,
)


def test_default_model_is_frozen_and_in_eval_mode(default_model):
    lm = default_model.model
    assert default_model.name == DEFAULT_MODEL_NAME
    assert not lm.training
    assert all(not p.requires_grad for p in lm.parameters())
    assert lm.get_input_embeddings().num_embeddings == len(default_model.tokenizer) == 49152


def test_default_model_completes_a_well_known_fact(default_model):
    tok, lm = default_model.tokenizer, default_model.model
    ids = tok("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = lm(ids).logits[0, -1].argmax()
    assert tok.decode(nxt).strip() == "Paris"


def test_cached_conversion_is_reused_and_gives_identical_logits(default_model):
    gguf = default_gguf_path()
    target = converted_gguf_dir(gguf)
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    again = load_model(None, device="cpu")
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp  # not rewritten
    ids = torch.tensor([[504, 414, 46682, 18669, 314, 281]])
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, default_model.model(ids).logits)


def test_first_load_converts_into_an_empty_cache_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    target = converted_gguf_dir(default_gguf_path())
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_any_gguf_file_path_loads(monkeypatch, tmp_path):
    # The .gguf branch is the same code path as the default; a copy elsewhere must load too.
    src = default_gguf_path()
    link = tmp_path / "copy.gguf"
    link.symlink_to(src)
    loaded = load_model(link, device="cpu")
    assert loaded.name == "copy"
    assert loaded.model.get_input_embeddings().num_embeddings == 49152


def test_local_checkpoint_directory_loads(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="cpu")
    assert loaded.model.config.hidden_size == 32
    assert all(not p.requires_grad for p in loaded.model.parameters())


def test_missing_model_path_is_a_typed_error():
    with pytest.raises(ModelLoadError, match="not found"):
        load_model("./no/such/model", device="cpu")
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model("/tmp/none.gguf", device="cpu")


def test_directory_without_config_is_refused(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path, device="cpu")


def test_unknown_hub_id_offline_is_a_typed_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local Hugging Face cache"):
        load_model("editkit-tests/no-such-model", device="cpu")


def test_quantization_without_backend_is_a_clear_error(tiny_model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # as on a machine without bitsandbytes
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(QuantizationUnavailableError, match="bitsandbytes"):
        load_model(tiny_model_dir, quantization="8bit", device="cpu")
    with pytest.raises(QuantizationUnavailableError, match="'3bit'"):
        load_model(tiny_model_dir, quantization="3bit", device="cpu")


def test_bad_dtype_is_refused(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model(tiny_model_dir, dtype="float8", device="cpu")


def test_bfloat16_load(tiny_model_dir):
    loaded = load_model(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert loaded.model.dtype == torch.bfloat16
