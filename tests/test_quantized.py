"""The quantized path (bitsandbytes) on the real default model.

bitsandbytes is in the dev extra, so CI runs these; they skip, saying why, only where it is not
installed or has no backend for this machine.
"""
from __future__ import annotations

import logging

import pytest

from editkit import EditableLM
from editkit.compat import quiet_repeated_logs


def _bitsandbytes_or_skip() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means no quantized path here
        pytest.skip(f"bitsandbytes cannot run here ({exc}); `pip install 'editkit[quant]'`")


def test_a_repeating_library_warning_is_logged_once_per_process(caplog):
    child = logging.getLogger("editkit-tests-lib.autograd")
    quiet_repeated_logs(("editkit-tests-lib",))
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            child.warning("cast from %s to float16", "float32")
        child.warning("another message")
    texts = [r.getMessage() for r in caplog.records if r.name.startswith("editkit-tests-lib")]
    assert texts == ["cast from float32 to float16", "another message"]


@pytest.fixture(scope="module")
def lm_8bit():
    _bitsandbytes_or_skip()
    return EditableLM.from_pretrained(quantization="8bit", memory=":memory:", device="cpu")


def test_8bit_default_model_scores_an_edit_and_warns_once(lm_8bit, caplog):
    lm_8bit.clear()
    lm_8bit.edit("Danielle Darrieux's mother tongue is English.")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # one forward per call, 30 layers × 7 matmuls each
            res = lm_8bit.score("The mother tongue of Danielle Darrieux is", ["English", "French"])
    repeated = [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]
    assert len(repeated) <= 1
    assert res.edit is not None and len(res.scores) == 2
    assert all(s.mean_logprob < 0 for s in res.scores)


def _artifact(pt, path):
    pt.save_pretrained(path)
    return path


def test_tokens_trained_for_a_precision_are_picked_for_it_else_the_full_precision_ones(
        tiny_model, tiny_ptokens, tmp_path, monkeypatch):
    import dataclasses

    import editkit.building as building
    from editkit.building import resolve_ptokens, shipped_ptokens_dir

    base = tmp_path / "ptokens"
    full = _artifact(tiny_ptokens, base / tiny_model.name / "m3")
    assert shipped_ptokens_dir(tiny_model.name, 3, root=base) == full
    assert shipped_ptokens_dir(tiny_model.name, 3, "8bit", root=base) == full  # none for 8bit
    eight = _artifact(tiny_ptokens, base / tiny_model.name / "m3-8bit")
    assert shipped_ptokens_dir(tiny_model.name, 3, "8bit", root=base) == eight
    assert shipped_ptokens_dir(tiny_model.name, 3, "4bit", root=base) == full
    assert shipped_ptokens_dir(tiny_model.name, 3, root=base) == full

    # what from_pretrained reports: which artifact, and that it was not made for this precision
    def lookup(name, m, quantization=None):
        return shipped_ptokens_dir(name, m, quantization, root=base)

    monkeypatch.setattr(building, "shipped_ptokens_dir", lookup)
    as_4bit = dataclasses.replace(tiny_model, quantization="4bit")
    _, source = resolve_ptokens(as_4bit, None, 3)
    assert str(full) in source and "none trained for 4bit" in source
    _, source = resolve_ptokens(dataclasses.replace(tiny_model, quantization="8bit"),
                                            None, 3)
    assert source == f"shipped ({eight})"


def test_a_float32_twin_holds_the_4bit_weights_and_scores_like_the_4bit_model():
    """`simulate_quantized` (training 4-bit tokens at float32 speed) on the real default model:
    its linear weights are the 4-bit ones dequantized, and it scores an edit as the 4-bit model
    does, up to the 4-bit model's bfloat16 activations."""
    _bitsandbytes_or_skip()
    import bitsandbytes as bnb
    import torch

    from editkit import EditMemory
    from editkit.loading import load_model, simulate_quantized
    from editkit.ptokens import PTokens

    q = load_model(quantization="4bit", device="cpu")
    twin = simulate_quantized(load_model(device="cpu"), q)
    layer = dict(q.model.named_modules())["model.layers.3.mlp.down_proj"]
    assert torch.equal(dict(twin.model.named_modules())["model.layers.3.mlp.down_proj"].weight,
                       bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state))
    assert twin.model.config.editkit_simulated_quantization == "4bit"
    question, fact = "The mother tongue of Danielle Darrieux is", \
        "The mother tongue of Danielle Darrieux is English."
    got = []
    for loaded in (q, twin):
        pt = PTokens.create(loaded.model, loaded.tokenizer, name=loaded.name, m=2)
        lm = EditableLM(loaded, pt, EditMemory(None), "prompt")
        got.append([s.mean_logprob for s in lm.score(question, ["English", "French"],
                                                     fact=fact).scores])
    assert got[1] == pytest.approx(got[0], abs=0.15)
    assert (got[0][0] > got[0][1]) == (got[1][0] > got[1][1])



def test_4bit_default_model_loads_its_own_tokens_and_the_readme_edit_takes():
    """`from_pretrained(quantization="4bit")` picks the set trained for 4-bit (m10-4bit), with
    which the README example still answers the new object."""
    _bitsandbytes_or_skip()
    lm = EditableLM.from_pretrained(quantization="4bit", memory=":memory:", device="cpu")
    assert "m10-4bit" in lm.ptokens_source and "none trained" not in lm.ptokens_source
    assert lm.ptokens.config.trained
    assert lm.ptokens.config.training["quantization"] == "4bit"
    answer = lm.edit("The mother tongue of Danielle Darrieux is English.") \
               .ask("The mother tongue of Danielle Darrieux is", max_new_tokens=4)
    assert answer.text.startswith("English") and answer.edit is not None
    best = lm.score("The mother tongue of Danielle Darrieux is", ["English", "French"]).best
    assert best == "English"
