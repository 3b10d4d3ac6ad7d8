"""P-Token embeddings: init options, trainable rows only, artifact round-trip, refusal of bad ones.

Plumbing runs on the tiny random model (same tokenizer as the default one); the shipped artifacts
and the cross-model refusal run on the real default model.
"""
from __future__ import annotations

import json
import logging

import pytest
import torch

from editkit import ArtifactError, PTokenMismatchError
from editkit.layouts import LAYOUT_VERSION
from editkit.ptokens import PTokens
from editkit.ptokens.config import CONFIG_NAME, WEIGHTS_NAME


def _create(loaded, **kw):
    return PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, **kw)


def test_ids_lie_past_the_vocabulary_so_they_can_never_be_generated(tiny_model):
    pt = _create(tiny_model, m=3)
    vocab_rows = tiny_model.model.get_input_embeddings().num_embeddings
    out_rows = tiny_model.model.get_output_embeddings().weight.shape[0]
    assert pt.begin_ids == [vocab_rows, vocab_rows + 1, vocab_rows + 2]
    assert pt.end_ids == [vocab_rows + 3, vocab_rows + 4, vocab_rows + 5]
    assert min(pt.begin_ids) >= out_rows  # no logit exists for a P-Token id
    assert [pt.token_string(i) for i in pt.begin_ids + pt.end_ids] == [
        "<BEGIN_EDIT_0>", "<BEGIN_EDIT_1>", "<BEGIN_EDIT_2>",
        "<END_EDIT_0>", "<END_EDIT_1>", "<END_EDIT_2>"]


def test_text_init_cycles_through_the_init_text_token_embeddings(tiny_model):
    pt = _create(tiny_model, m=2, init="text", init_text=" new fact")
    table = tiny_model.model.get_input_embeddings().weight
    ids = tiny_model.tokenizer(" new fact", add_special_tokens=False).input_ids
    assert len(ids) == 2
    expected = table[torch.tensor([ids[0], ids[1], ids[0], ids[1]])]
    assert torch.equal(pt.layer.weight.detach(), expected)


def test_vocab_mean_and_random_inits(tiny_model):
    table = tiny_model.model.get_input_embeddings().weight.float()
    mean = _create(tiny_model, m=1, init="vocab_mean")
    assert torch.allclose(mean.layer.weight[0], table.mean(0))
    r1, r2 = _create(tiny_model, m=2, init="random", seed=1), _create(
        tiny_model, m=2, init="random", seed=1)
    r3 = _create(tiny_model, m=2, init="random", seed=2)
    assert torch.equal(r1.layer.weight, r2.layer.weight)
    assert not torch.equal(r1.layer.weight, r3.layer.weight)


def test_only_ptoken_rows_receive_gradients(tiny_model):
    pt = _create(tiny_model, m=2)
    lm = tiny_model.model
    ids = torch.tensor([[pt.begin_ids[0], 504, 414, pt.end_ids[1], 281]])
    loss = lm(inputs_embeds=pt.embed(ids)).logits[0, -1].logsumexp(-1)
    loss.backward()
    grad = pt.layer.weight.grad
    assert grad is not None
    assert grad[0].abs().sum() > 0 and grad[3].abs().sum() > 0  # B_0 and E_1 were used
    assert grad[1].abs().sum() == 0 and grad[2].abs().sum() == 0  # B_1 and E_0 were not
    assert all(p.grad is None for p in lm.parameters())
    assert pt.parameters() == [pt.layer.weight]


def test_embed_matches_the_frozen_table_for_ordinary_ids(tiny_model):
    pt = _create(tiny_model, m=1)
    ids = torch.tensor([[504, 414, 46682]])
    base = tiny_model.model.get_input_embeddings()(ids)
    assert torch.equal(pt.embed(ids), base)


def test_save_and_load_round_trip_exactly(tiny_model, tmp_path):
    pt = _create(tiny_model, m=3, init="random", seed=7)
    with torch.no_grad():
        pt.layer.weight.add_(0.123)  # as if trained
    pt.save_pretrained(tmp_path / "pt")
    assert sorted(p.name for p in (tmp_path / "pt").iterdir()) == [WEIGHTS_NAME, CONFIG_NAME]
    cfg = json.loads((tmp_path / "pt" / CONFIG_NAME).read_text())
    assert cfg["m"] == 3 and cfg["init"] == "random"
    assert cfg["base_model"]["vocab_size"] == 49152 and cfg["base_model"]["hidden_size"] == 32
    assert cfg["layout_version"] == LAYOUT_VERSION
    back = PTokens.from_pretrained(tmp_path / "pt", tiny_model.model, tiny_model.tokenizer,
                                   name=tiny_model.name)
    assert torch.equal(back.layer.weight, pt.layer.weight)
    assert back.config == pt.config


def test_loading_onto_another_base_model_names_both_fingerprints(default_model, tiny_model,
                                                                 tmp_path):
    _create(default_model, m=1).save_pretrained(tmp_path / "pt")
    tiny = tiny_model
    with pytest.raises(PTokenMismatchError) as err:
        PTokens.from_pretrained(tmp_path / "pt", tiny.model, tiny.tokenizer, name=tiny.name)
    msg = str(err.value)
    assert "hidden 576" in msg and "hidden 32" in msg and "SmolLM2-135M-Instruct" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_damaged_weights_are_refused(tiny_model, tmp_path, damage):
    d = _create(tiny_model, m=2).save_pretrained(tmp_path / "pt")
    w = d / WEIGHTS_NAME
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "garbage":
        w.write_bytes(b"\x00" * 64)
    else:
        w.unlink()
    with pytest.raises(ArtifactError):
        PTokens.from_pretrained(d, tiny_model.model, tiny_model.tokenizer,
                                name=tiny_model.name)


def test_edited_config_with_wrong_m_is_refused(tiny_model, tmp_path):
    d = _create(tiny_model, m=2).save_pretrained(tmp_path / "pt")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    cfg["m"] = 3
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="m=3"):
        PTokens.from_pretrained(d, tiny_model.model, tiny_model.tokenizer,
                                name=tiny_model.name)
    cfg["begin_tokens"].append("<BEGIN_EDIT_2>")
    cfg["end_tokens"].append("<END_EDIT_2>")
    (d / CONFIG_NAME).write_text(json.dumps(cfg))  # consistent config, but 4 rows on disk
    with pytest.raises(ArtifactError, match="shape"):
        PTokens.from_pretrained(d, tiny_model.model, tiny_model.tokenizer,
                                name=tiny_model.name)


def test_config_that_is_not_json_is_refused(tiny_model, tmp_path):
    d = _create(tiny_model, m=1).save_pretrained(tmp_path / "pt")
    (d / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid P-Token config"):
        PTokens.from_pretrained(d, tiny_model.model, tiny_model.tokenizer,
                                name=tiny_model.name)


def test_save_leaves_no_temporary_files(tiny_model, tmp_path):
    pt = _create(tiny_model, m=1)
    pt.save_pretrained(tmp_path)
    pt.save_pretrained(tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_NAME, CONFIG_NAME]


def test_every_shipped_ptoken_set_is_trained_and_loads_on_the_default_model(default_model):
    from editkit.building import shipped_ptokens_dir
    from editkit.ptokens import DEFAULT_M

    found = {m: shipped_ptokens_dir(default_model.name, m) for m in (1, 3, 5, 10)}
    assert all(found.values()), found
    assert found[DEFAULT_M] is not None
    for m, path in found.items():
        pt = PTokens.from_pretrained(path, default_model.model, default_model.tokenizer,
                                     name=default_model.name)
        info = pt.config.training
        assert pt.m == m and pt.config.trained
        # the layout is written out, not left to the default for files without the field
        assert json.loads((path / CONFIG_NAME).read_text())["layout_version"] == 1
        assert info["config"]["m"] == m and set(info["best_val_scores"]) == {"ES", "PS", "NS", "S"}


def test_an_artifact_from_before_the_layout_field_loads_as_layout_1(tiny_model, tmp_path):
    d = _create(tiny_model, m=1).save_pretrained(tmp_path / "pt")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    del cfg["layout_version"]
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    back = PTokens.from_pretrained(d, tiny_model.model, tiny_model.tokenizer,
                                   name=tiny_model.name)
    assert back.config.layout_version == 1 == LAYOUT_VERSION


def test_ptokens_trained_under_another_layout_are_refused_with_what_to_do(tiny_model, tmp_path):
    d = _create(tiny_model, m=1).save_pretrained(tmp_path / "pt")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    cfg["layout_version"] = LAYOUT_VERSION + 1
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(PTokenMismatchError, match="layout version") as err:
        PTokens.from_pretrained(d, tiny_model.model, tiny_model.tokenizer, name=tiny_model.name)
    assert str(d) in str(err.value) and "editkit train" in str(err.value)


def test_untrained_fallback_warns_once_naming_the_model_and_how_to_train(tiny_model, caplog):
    from editkit.building import resolve_ptokens
    from editkit.ptokens import warn_untrained

    warn_untrained.cache_clear()
    with caplog.at_level(logging.WARNING, logger="editkit"):
        for _ in range(2):
            pt, source = resolve_ptokens(tiny_model, None, 2)
            assert source.startswith("untrained") and not pt.config.trained
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert repr(tiny_model.name) in warnings[0] and "editkit train" in warnings[0]
    assert "ptokens=DIR" in warnings[0]
