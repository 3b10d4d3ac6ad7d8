"""P-Token embeddings: init options, trainable rows only, artifact round-trip, refusal of bad ones."""
from __future__ import annotations

import json

import pytest
import torch

from editkit import ArtifactError, PTokenMismatchError
from editkit.loading import load_model
from editkit.ptokens import PTokens
from editkit.ptokens.config import CONFIG_NAME, WEIGHTS_NAME


def _create(loaded, **kw):
    return PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, **kw)


def test_ids_lie_past_the_vocabulary_so_they_can_never_be_generated(default_model):
    pt = _create(default_model, m=3)
    vocab_rows = default_model.model.get_input_embeddings().num_embeddings
    out_rows = default_model.model.get_output_embeddings().weight.shape[0]
    assert pt.begin_ids == [vocab_rows, vocab_rows + 1, vocab_rows + 2]
    assert pt.end_ids == [vocab_rows + 3, vocab_rows + 4, vocab_rows + 5]
    assert min(pt.begin_ids) >= out_rows  # no logit exists for a P-Token id
    assert [pt.token_string(i) for i in pt.begin_ids + pt.end_ids] == [
        "<BEGIN_EDIT_0>", "<BEGIN_EDIT_1>", "<BEGIN_EDIT_2>",
        "<END_EDIT_0>", "<END_EDIT_1>", "<END_EDIT_2>"]


def test_text_init_cycles_through_the_init_text_token_embeddings(default_model):
    pt = _create(default_model, m=2, init="text", init_text=" new fact")
    table = default_model.model.get_input_embeddings().weight
    ids = default_model.tokenizer(" new fact", add_special_tokens=False).input_ids
    assert len(ids) == 2
    expected = table[torch.tensor([ids[0], ids[1], ids[0], ids[1]])]
    assert torch.equal(pt.layer.weight.detach(), expected)


def test_vocab_mean_and_random_inits(default_model):
    table = default_model.model.get_input_embeddings().weight.float()
    mean = _create(default_model, m=1, init="vocab_mean")
    assert torch.allclose(mean.layer.weight[0], table.mean(0))
    r1, r2 = _create(default_model, m=2, init="random", seed=1), _create(
        default_model, m=2, init="random", seed=1)
    r3 = _create(default_model, m=2, init="random", seed=2)
    assert torch.equal(r1.layer.weight, r2.layer.weight)
    assert not torch.equal(r1.layer.weight, r3.layer.weight)


def test_only_ptoken_rows_receive_gradients(default_model):
    pt = _create(default_model, m=2)
    lm = default_model.model
    ids = torch.tensor([[pt.begin_ids[0], 504, 414, pt.end_ids[1], 281]])
    loss = lm(inputs_embeds=pt.embed(ids)).logits[0, -1].logsumexp(-1)
    loss.backward()
    grad = pt.layer.weight.grad
    assert grad is not None
    assert grad[0].abs().sum() > 0 and grad[3].abs().sum() > 0  # B_0 and E_1 were used
    assert grad[1].abs().sum() == 0 and grad[2].abs().sum() == 0  # B_1 and E_0 were not
    assert all(p.grad is None for p in lm.parameters())
    assert pt.parameters() == [pt.layer.weight]


def test_embed_matches_the_frozen_table_for_ordinary_ids(default_model):
    pt = _create(default_model, m=1)
    ids = torch.tensor([[504, 414, 46682]])
    base = default_model.model.get_input_embeddings()(ids)
    assert torch.equal(pt.embed(ids), base)


def test_save_and_load_round_trip_exactly(default_model, tmp_path):
    pt = _create(default_model, m=3, init="random", seed=7)
    with torch.no_grad():
        pt.layer.weight.add_(0.123)  # as if trained
    pt.save_pretrained(tmp_path / "pt")
    assert sorted(p.name for p in (tmp_path / "pt").iterdir()) == [WEIGHTS_NAME, CONFIG_NAME]
    cfg = json.loads((tmp_path / "pt" / CONFIG_NAME).read_text())
    assert cfg["m"] == 3 and cfg["init"] == "random"
    assert cfg["base_model"]["vocab_size"] == 49152 and cfg["base_model"]["hidden_size"] == 576
    back = PTokens.from_pretrained(tmp_path / "pt", default_model.model, default_model.tokenizer,
                                   name=default_model.name)
    assert torch.equal(back.layer.weight, pt.layer.weight)
    assert back.config == pt.config


def test_loading_onto_another_base_model_names_both_fingerprints(default_model, tiny_model_dir,
                                                                 tmp_path):
    _create(default_model, m=1).save_pretrained(tmp_path / "pt")
    tiny = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(PTokenMismatchError) as err:
        PTokens.from_pretrained(tmp_path / "pt", tiny.model, tiny.tokenizer, name=tiny.name)
    msg = str(err.value)
    assert "hidden 576" in msg and "hidden 32" in msg and "SmolLM2-135M-Instruct" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_damaged_weights_are_refused(default_model, tmp_path, damage):
    d = _create(default_model, m=2).save_pretrained(tmp_path / "pt")
    w = d / WEIGHTS_NAME
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "garbage":
        w.write_bytes(b"\x00" * 64)
    else:
        w.unlink()
    with pytest.raises(ArtifactError):
        PTokens.from_pretrained(d, default_model.model, default_model.tokenizer,
                                name=default_model.name)


def test_edited_config_with_wrong_m_is_refused(default_model, tmp_path):
    d = _create(default_model, m=2).save_pretrained(tmp_path / "pt")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    cfg["m"] = 3
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="m=3"):
        PTokens.from_pretrained(d, default_model.model, default_model.tokenizer,
                                name=default_model.name)
    cfg["begin_tokens"].append("<BEGIN_EDIT_2>")
    cfg["end_tokens"].append("<END_EDIT_2>")
    (d / CONFIG_NAME).write_text(json.dumps(cfg))  # consistent config, but 4 rows on disk
    with pytest.raises(ArtifactError, match="shape"):
        PTokens.from_pretrained(d, default_model.model, default_model.tokenizer,
                                name=default_model.name)


def test_config_that_is_not_json_is_refused(default_model, tmp_path):
    d = _create(default_model, m=1).save_pretrained(tmp_path / "pt")
    (d / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid P-Token config"):
        PTokens.from_pretrained(d, default_model.model, default_model.tokenizer,
                                name=default_model.name)


def test_save_leaves_no_temporary_files(default_model, tmp_path):
    pt = _create(default_model, m=1)
    pt.save_pretrained(tmp_path)
    pt.save_pretrained(tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_NAME, CONFIG_NAME]


def test_every_shipped_ptoken_set_is_trained_and_loads_on_the_default_model(default_model):
    from editkit.editable import DEFAULT_M, shipped_ptokens_dir

    found = {m: shipped_ptokens_dir(default_model.name, m) for m in (1, 3, 5, 10)}
    assert all(found.values()), found
    assert found[DEFAULT_M] is not None
    for m, path in found.items():
        pt = PTokens.from_pretrained(path, default_model.model, default_model.tokenizer,
                                     name=default_model.name)
        info = pt.config.training
        assert pt.m == m and pt.config.trained
        assert info["config"]["m"] == m and set(info["best_val_scores"]) == {"ES", "PS", "NS", "S"}
