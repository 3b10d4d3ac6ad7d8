"""Export a model + P-Tokens as a plain Hugging Face checkpoint that any server can load.

editkit keeps P-Tokens outside the vocabulary (it builds `inputs_embeds` itself). Serving engines
(vLLM, TGI, plain transformers) take token ids, so the export makes the P-Tokens ordinary special
tokens: the tokenizer gets `<BEGIN_EDIT_i>` / `<END_EDIT_i>`, the input embedding table grows by
2m rows holding the trained vectors. The output layer gets zero rows for them (untied if the model
ties its embeddings) and `generation_config.suppress_tokens` lists them, so a server never emits
one. A prompt is then plain text: `<BEGIN_EDIT_0>..fact..<END_EDIT_0>..\\n(distractors\\n)question`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .errors import ArtifactError, InvalidInputError
from .layouts import LAYOUT_VERSION, ptoken_text
from .ptokens import PTokens

LAYOUT_NAME = "editkit_layout.json"
TEMPLATE_NAME = "PROMPT_TEMPLATE.md"
EXPORT_FORMAT = f"editkit-ptokens-hf/{LAYOUT_VERSION}"  # the number is the prompt layout version
# the layout with placeholders, as written into editkit_layout.json
TEMPLATE = ptoken_text(["{begin_tokens}"], ["{end_tokens}"], "{fact}", "{question}",
                       ["{distractor}", "..."])


def render_prompt(begin_tokens: list[str], end_tokens: list[str], fact: str, question: str,
                  distractors: list[str] | tuple[str, ...] = ()) -> str:
    """The P-Token layout as plain text for an exported tokenizer (same ids as editkit's): the
    text of `editkit.layouts.ptoken_text`, so it cannot drift from `PromptBuilder`.

    Needs only the token strings (from `editkit_layout.json`), so an app that sends prompts to a
    server does not need the model. Facts containing the P-Token strings are refused.
    """
    for text in (fact, question, *distractors):
        if any(t in text for t in (*begin_tokens, *end_tokens)):
            raise InvalidInputError("A fact or question contains a P-Token string "
                                    f"({begin_tokens[0]}...); remove it before rendering.")
    return ptoken_text(begin_tokens, end_tokens, fact, question, distractors)


def ptoken_prompt_text(ptokens: PTokens, fact: str, question: str,
                       distractors: list[str] | tuple[str, ...] = ()) -> str:
    """`render_prompt` with the token strings of a loaded P-Token set."""
    c = ptokens.config
    return render_prompt(c.begin_tokens, c.end_tokens, fact, question, distractors)


def export_hf(model: Any, tokenizer: Any, ptokens: PTokens, out: str | os.PathLike[str], *,
              overwrite: bool = False) -> Path:
    """Write `out/` (config, safetensors weights, tokenizer, layout files); `model` is untouched.

    The directory appears whole or not at all: it is written beside `out` and renamed into place.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InvalidInputError(f"{out} exists and is not empty; pass overwrite=True "
                                "(--overwrite) to replace it.")
    if getattr(model, "is_quantized", False) or getattr(model, "quantization_method", None):
        raise InvalidInputError("Export a full-precision model: quantized weights cannot be "
                                "resized. Load it without quantization, export, then quantize "
                                "in the serving engine.")
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer.save_pretrained(tmp)
        tok = AutoTokenizer.from_pretrained(tmp)
        names = ptokens.config.begin_tokens + ptokens.config.end_tokens
        tok.add_tokens([AddedToken(n, special=True, normalized=False, lstrip=False,
                                   rstrip=False) for n in names], special_tokens=True)
        ids = tok.convert_tokens_to_ids(names)
        rows = ptokens.layer.weight.detach()

        lm = copy.deepcopy(model)
        # `lm` is already a private copy and both tables are replaced below, so read them as-is
        old_in = lm.get_input_embeddings().weight.detach()
        old_out = lm.get_output_embeddings()
        old_out_w = None if old_out is None else old_out.weight.detach()
        size = max(max(ids) + 1, old_in.shape[0])
        lm.config.tie_word_embeddings = False  # P-Token output rows differ from input rows
        new_in = torch.nn.Embedding(size, old_in.shape[1], dtype=old_in.dtype,
                                    device=old_in.device)
        with torch.no_grad():
            new_in.weight.zero_()
            new_in.weight[: old_in.shape[0]] = old_in
            new_in.weight[ids] = rows.to(old_in.dtype).to(old_in.device)
        lm.set_input_embeddings(new_in)
        if old_out_w is not None:
            head = torch.nn.Linear(old_out_w.shape[1], size, bias=False, dtype=old_out_w.dtype,
                                   device=old_out_w.device)
            with torch.no_grad():
                head.weight.zero_()
                head.weight[: old_out_w.shape[0]] = old_out_w
            lm.set_output_embeddings(head)
        lm.config.vocab_size = size
        if getattr(lm, "generation_config", None) is not None:
            lm.generation_config.suppress_tokens = list(ids)
        lm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        layout = {
            "format": EXPORT_FORMAT, "layout_version": LAYOUT_VERSION,
            "m": ptokens.m, "begin_tokens": ptokens.config.begin_tokens,
            "end_tokens": ptokens.config.end_tokens, "token_ids": dict(zip(names, ids)),
            "template": TEMPLATE,
            "base_model": ptokens.config.base_model.model_dump(),
            "trained": ptokens.config.trained,
        }
        (tmp / LAYOUT_NAME).write_text(json.dumps(layout, indent=1))
        example = ptoken_prompt_text(ptokens, "The Eiffel Tower is located in Rome.",
                                     "The Eiffel Tower is located in the city of")
        (tmp / TEMPLATE_NAME).write_text(_TEMPLATE.format(m=ptokens.m, example=example))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


_TEMPLATE = """# Prompt layout (editkit P-Tokens, m = {m})

Plain text; the `<BEGIN_EDIT_i>` / `<END_EDIT_i>` strings are special tokens of this tokenizer.
Write the begin tokens, the fact, the end tokens, a newline, any other (distractor) facts one per
line, then the question, with no chat template and no space after the last begin token:

```
{example}
```

Never put user text through the tokenizer with these strings in it unsplit: strip or escape them
(editkit tokenizes user text with `split_special_tokens=True`). The P-Tokens have zero output rows
and are listed in `generation_config.suppress_tokens`, so they are never generated.
"""


class ExportedPTokens:
    """The P-Token layout of an export, read without its weights: what a client needs to build
    prompts for an engine that serves the export (`RemoteEngine`). It stands where `PTokens`
    stands in a `PromptBuilder`: token names, their ids in the export's tokenizer, m."""

    def __init__(self, path: Path, layout: dict[str, Any], tokenizer: Any) -> None:
        if layout.get("format") != EXPORT_FORMAT:
            raise ArtifactError(f"{path} was exported with layout {layout.get('format')!r}; this "
                                f"editkit writes prompts in {EXPORT_FORMAT!r}: export it again "
                                "with this editkit.")
        names = list(layout["begin_tokens"]) + list(layout["end_tokens"])
        ids = tokenizer.convert_tokens_to_ids(names)
        if ids != [layout["token_ids"][n] for n in names]:
            raise ArtifactError(f"The tokenizer in {path} does not hold the P-Tokens that "
                                f"{LAYOUT_NAME} names; export the model again.")
        self.path = path
        self.config = SimpleNamespace(begin_tokens=list(layout["begin_tokens"]),
                                      end_tokens=list(layout["end_tokens"]), m=int(layout["m"]),
                                      trained=bool(layout.get("trained")))
        self.base_model = dict(layout.get("base_model") or {})
        self._ids = ids
        self._digest = hashlib.sha256((path / LAYOUT_NAME).read_bytes()).hexdigest()

    @property
    def m(self) -> int:
        return int(self.config.m)

    @property
    def begin_ids(self) -> list[int]:
        return self._ids[: self.m]

    @property
    def end_ids(self) -> list[int]:
        return self._ids[self.m:]

    def token_string(self, token_id: int) -> str:
        names = self.config.begin_tokens + self.config.end_tokens
        return names[self._ids.index(token_id)]

    def content_hash(self) -> str:
        """SHA-256 of the export's layout file (it records the P-Token names and ids)."""
        return self._digest


def load_export(path: str | os.PathLike[str]) -> tuple[ExportedPTokens, Any, int | None]:
    """An export's P-Token layout, tokenizer and context length, read from its directory (no
    weights): what `EditableLM.from_pretrained(path, engine=URL)` needs on the client."""
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    if not (path / LAYOUT_NAME).is_file():
        raise InvalidInputError(
            f"With engine=..., model must be the directory `editkit export` wrote (the engine "
            f"serves it); {path} has no {LAYOUT_NAME}. Run `editkit export OUT`, serve OUT, and "
            "pass OUT here.")
    try:
        layout = json.loads((path / LAYOUT_NAME).read_text())
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path} is not a readable editkit export: {exc}") from exc
    ctx = getattr(getattr(config, "get_text_config", lambda: config)(),
                  "max_position_embeddings", None)
    return ExportedPTokens(path, layout, tokenizer), tokenizer, ctx
