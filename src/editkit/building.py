"""How an `EditableLM` is put together (`EditableLM.from_pretrained`): the model or the engine
that serves it, its P-Tokens, the edit memory and the retrieval settings, each validated before
anything heavy loads. The facade (`editable.py`) only calls `load_parts`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import InvalidInputError, PTokenMismatchError
from .layouts import check_chat_setting
from .loading import LoadedModel, load_model
from .ptokens import PTokens, fingerprint, warn_untrained
from .records import check_namespace
from .retrieval import EditStore, RetrievalSettings
from .runtime.engine import Engine


@dataclass
class Parts:
    """What `EditableLM.__init__` takes, loaded and checked."""

    loaded: LoadedModel
    ptokens: Any  # PTokens in process; the export's layout (`ExportedPTokens`) over an engine
    memory: EditStore
    retrieval: RetrievalSettings
    source: str
    engine: Engine | None


def load_parts(model: Any, ptokens: Any, memory: Any, *, quantization: str | None,
               device: str, dtype: str | None, m: int, top_k: int, threshold: float,
               namespace: str, gate: Any, chat: Any, trust_remote_code: bool,
               prefix_cache: int, decode_dtype: str | None, prefix_store_mb: float,
               engine: str | None, engine_model: str | None) -> Parts:
    """`EditableLM.from_pretrained`'s arguments made into parts (see its docstring)."""
    check_prefix_store_mb(prefix_store_mb)
    check_chat_setting(chat)
    try:
        # gate: "learned" / "threshold", or a Judge of the user's own (learned policy, their judge)
        judge = None if isinstance(gate, str) else gate
        retrieval = RetrievalSettings(top_k=top_k, threshold=threshold,
                                      gate=gate if judge is None else "learned", judge=judge,
                                      namespace=check_namespace(namespace))
    except ValidationError as exc:
        raise InvalidInputError(f"Invalid retrieval settings: {exc}") from exc
    eng: Engine | None = None
    if engine is None:
        loaded = load_model(model, quantization=quantization, device=device, dtype=dtype,
                            trust_remote_code=trust_remote_code)
        pt, source = resolve_ptokens(loaded, ptokens, m)
    else:
        in_process = {"ptokens": ptokens, "quantization": quantization, "dtype": dtype,
                      "decode_dtype": decode_dtype, "prefix_cache": prefix_cache}
        given = [k for k, v in in_process.items() if v]
        if given:
            raise InvalidInputError(f"{', '.join(given)} apply to a model loaded here, not "
                                    "to one an engine serves; leave them out with engine=.")
        loaded, pt, eng, source = over_engine(model, engine, engine_model)
    # A path or None opens an EditMemory (its embedder loads on first use), a postgresql://
    # URL a PostgresEditMemory (memory_url.open_memory); anything else must implement the
    # protocol (isinstance reads `embedder`, which may load it).
    if memory is None or isinstance(memory, (str, os.PathLike)):
        from .retrieval.urls import open_memory

        mem: EditStore = open_memory(memory)
    elif isinstance(memory, EditStore):
        mem = memory
    else:
        raise InvalidInputError(f"memory must be a path, None or an editkit EditStore; got "
                                f"{type(memory).__name__}.")
    return Parts(loaded, pt, mem, retrieval, source, eng)


def shipped_ptokens_dir(model_name: str, m: int, quantization: str | None = None, *,
                        root: Path | None = None) -> Path | None:
    """Trained P-Tokens shipped inside the package for a model, if any.

    Tokens trained on the quantized model live in `m{m}-{quantization}` (e.g. `m10-8bit`): the
    rows that persuade the full-precision model need not persuade its quantized copy. Where none
    ships for that precision, the full-precision set is returned (the caller says so). `root`
    replaces the package's `editkit/data/ptokens` (tests).
    """
    base = resources.files("editkit.data") / "ptokens" if root is None else root
    names = ([f"m{m}-{quantization}"] if quantization else []) + [f"m{m}"]
    for dirname in names:
        # join before str(): the package root may be a MultiplexedPath, whose str() is not a path
        path = Path(str(base / model_name / dirname))
        if (path / "ptokens_config.json").is_file():
            return path
    return None


def resolve_ptokens(loaded: LoadedModel, ptokens: Any, m: int) -> tuple[PTokens, str]:
    """The P-Tokens for a loaded model: given (checked against it), a directory, the set shipped
    for it, or fresh untrained tokens (with a warning); and where they came from, in words."""
    lm, tok, name = loaded.model, loaded.tokenizer, loaded.name
    if isinstance(ptokens, PTokens):
        here = fingerprint(lm, tok, name)
        if not ptokens.config.base_model.same_base(here):
            raise PTokenMismatchError(
                f"These P-Tokens were made for {ptokens.config.base_model.short()}, "
                f"not for {here.short()}.")
        return ptokens, "given"
    if ptokens is not None:
        return PTokens.from_pretrained(ptokens, lm, tok, name=name), str(ptokens)
    shipped = shipped_ptokens_dir(name, m, loaded.quantization)
    if shipped is not None:
        pt = PTokens.from_pretrained(shipped, lm, tok, name=name)
        if loaded.quantization and not shipped.name.endswith(loaded.quantization):
            return pt, (f"shipped ({shipped}; trained on the full-precision model, none "
                        f"trained for {loaded.quantization} ships yet)")
        return pt, f"shipped ({shipped})"
    warn_untrained(name, m)  # once per (model, m): mode="ptokens" would edit poorly
    pt = PTokens.create(lm, tok, name=name, m=m, init="text")
    return pt, f"untrained: m={m}, initialised from the text {pt.config.init_text!r}"


def over_engine(model: Any, url: str, served_as: str | None
                ) -> tuple[LoadedModel, Any, Engine, str]:
    """The client side of a model an engine serves: the export's tokenizer and P-Token layout
    (no weights) and the `RemoteEngine` that reaches it."""
    from .export import load_export
    from .runtime.remote import RemoteEngine

    if model is None:
        raise InvalidInputError("With engine=..., name the exported directory the engine serves "
                                "(`editkit export OUT`, then model=OUT).")
    layout, tokenizer, ctx = load_export(model)
    eng = RemoteEngine(url, tokenizer, model=served_as, context_length=ctx)
    name = str(layout.base_model.get("name") or Path(model).name)
    return (LoadedModel(model=None, tokenizer=tokenizer, name=name), layout, eng,
            f"export ({Path(model).name}) served by {url} as {eng.model}")


def check_prefix_store_mb(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError(f"prefix_store_mb must be a number ≥ 0 (megabytes), not "
                                f"{value!r}.")
