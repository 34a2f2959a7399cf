"""The student model: load it (hub id, local directory or a GGUF converted once), pick its precision, attach adapters.

Why: every student-side stage (Stage I/III training, M0 / M_int / M_DART generation) must see the same weights, the
same tokenizer settings and the same precision. A model that cannot be found stops the run with what is missing and
how to provide it, never a silent fallback to another model.

- ``source: hf``: ``model_id`` is a hub id (needs the hub or its local cache) or a local directory.
- ``source: gguf``: ``model_id`` is an ``offline_models`` name or a ``.gguf`` path. The GGUF is dequantized ONCE into
  a normal transformers directory (fp32 safetensors + tokenizer) under ``cache_dir/<name>``; later calls load that
  directory (seconds). See ../shared/reference/OFFLINE_MODELS.md.

One load, several models: ``attach_adapter`` puts one or more LoRA adapters on the loaded base model, and
``generation.use_adapter(model, None | name)`` switches between the base model (M0) and an adapter (M_int, M_DART)
without reloading or keeping two copies of the weights in memory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Literal

import torch

from ..core.params import StudentParams
from .offline_models import CACHE_DIR, ModelNotAvailable, gguf_path, hub_unavailable

# peft still calls transformers' deprecated `is_gradient_checkpointing` on every wrap; nothing for users to act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning)

__all__ = ["ModelNotAvailable", "load_student", "resolve_precision", "bf16_supported", "torch_dtype",
           "convert_gguf", "attach_adapter", "describe", "identity", "prepare_tokenizer", "mark_weights"]

log = logging.getLogger(__name__)

CONVERSION_MARKER = "dart_conversion.json"   # written last: its presence means the conversion finished


# ---------------------------------------------------------------------------------------------------- precision
def bf16_supported() -> bool:
    """True when bf16 runs natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX-BF16 instructions."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        caps = torch.cpu.get_capabilities()   # torch >= 2.6; keys depend on the architecture
    except Exception:                         # older torch or an unknown platform: be conservative
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str) -> Literal["bf16", "fp32"]:
    """``auto`` -> ``bf16`` where the hardware supports it natively, else ``fp32``; explicit values are kept."""
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    if precision in ("bf16", "fp32"):
        return precision  # type: ignore[return-value]
    raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")


def torch_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if resolve_precision(precision) == "bf16" else torch.float32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------- tokenizer
def prepare_tokenizer(tokenizer):
    """Left padding (batched generation) and a pad token (eos when the tokenizer has none). Returns the tokenizer.

    Training is unaffected by the padding side: trl's collator pads on the right itself.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------------------- GGUF
def _gguf_cache_name(model_id: str) -> str:
    return Path(model_id).stem if model_id.endswith(".gguf") else model_id


def convert_gguf(model_id: str, cache_dir: Path) -> Path:
    """Dequantize a GGUF into a transformers directory ``cache_dir/<name>`` once; return the directory.

    The directory is built under a temporary name and renamed when complete (a marker file is written last), so an
    interrupted conversion is never mistaken for a finished one and is redone on the next call.
    """
    src = gguf_path(model_id)                       # raises ModelNotAvailable with the pip command if missing
    out = Path(cache_dir) / _gguf_cache_name(model_id)
    if (out / CONVERSION_MARKER).is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelNotAvailable("converting a GGUF model needs the 'gguf' package: pip install gguf==0.19.0 "
                                "(or `make venv`)") from None
    log.info("converting %s -> %s (once)", src, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # The GGUF loader marks the model as quantized; the weights are already dequantized, and save_pretrained
    # refuses a "gguf-quantized" model unless the quantizer is dropped (OFFLINE_MODELS.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / CONVERSION_MARKER).write_text(json.dumps({
        "source": str(src), "source_bytes": src.stat().st_size, "model_id": model_id, "dtype": "float32",
        "note": "dequantized from GGUF by dart_utils.models.convert_gguf",
    }, indent=2))
    del model
    if out.exists():                                # a partial directory without marker from an older attempt
        shutil.rmtree(out)
    try:
        tmp.rename(out)
    except OSError:                                 # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / CONVERSION_MARKER).is_file():
            raise
    return out


# ---------------------------------------------------------------------------------------------------- loading
def _hf_source(model_id: str) -> str:
    """A local directory as is; otherwise the hub id (checked for being plausibly a hub id)."""
    p = Path(model_id).expanduser()
    if p.is_dir():
        return str(p)
    looks_like_path = model_id.startswith((".", "/", "~")) or model_id.count("/") > 1
    if looks_like_path:
        raise ModelNotAvailable(
            f"student model directory '{model_id}' does not exist. Set student.model_id to a directory that holds "
            f"the model (config.json, weights, tokenizer files) or to a hub id.")
    return model_id


def _not_available(model_id: str, err: Exception) -> ModelNotAvailable:
    return hub_unavailable("student model", model_id, "student.model_id", err)


def load_student(sp: StudentParams, cache_dir: Path | None = None, device: str | None = None):
    """Load the student base model and tokenizer: returns ``(model, tokenizer)``, the model in eval mode.

    dtype: ``sp.dtype`` through ``resolve_precision`` (``auto`` = bf16 where supported, else fp32). The tokenizer
    pads on the left and has a pad token. ``cache_dir`` (default ``runs/cache/models``) holds GGUF conversions; hub
    downloads use the normal Hugging Face cache, so an existing one is reused. ``describe(model)`` gives what to
    record in a manifest (source, hub commit, dtype, size).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    dtype = torch_dtype(sp.dtype)
    device = device or default_device()
    if sp.source == "gguf":
        src = str(convert_gguf(sp.model_id, Path(cache_dir) if cache_dir else CACHE_DIR))
    elif sp.source == "hf":
        src = _hf_source(sp.model_id)
    else:  # guarded by the params schema; kept for direct callers
        raise ValueError(f"unknown student source {sp.source!r} (expected 'hf' or 'gguf')")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
        kwargs = {"dtype": dtype}
        if device == "cuda":
            kwargs["device_map"] = "auto"
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as e:   # hub unreachable / offline / not cached / gated / missing files
        if sp.source == "hf" and not Path(src).is_dir():
            raise _not_available(sp.model_id, e) from e
        raise
    if device != "cuda":
        model = model.to(device)
    prepare_tokenizer(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    log.info("loaded student %s (%s) from %s in %s on %s", sp.name, sp.source, src, dtype, device)
    return model, tokenizer


def describe(model) -> dict:
    """Identity of a loaded model for manifests: where it came from, the hub commit when known, dtype and size."""
    cfg = model.config
    return {"name_or_path": getattr(cfg, "_name_or_path", None), "commit_hash": getattr(cfg, "_commit_hash", None),
            "model_type": getattr(cfg, "model_type", None), "dtype": str(getattr(model, "dtype", None)),
            "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(next(model.parameters()).device)}


def attach_adapter(model, adapter_dir: Path | str, name: str = "default", trainable: bool = False):
    """Put a saved LoRA adapter on ``model`` and return the ``PeftModel``.

    ``model`` may be the bare base model (it is wrapped; peft injects the LoRA layers into it in place, so keep
    using the returned object) or a ``PeftModel`` already holding other adapters (the adapter is added under
    ``name``, e.g. ``"M_int"`` and ``"M_DART"`` on one base). Select with ``generation.use_adapter``.
    """
    from peft import PeftModel
    adapter_dir = str(adapter_dir)
    if isinstance(model, PeftModel):
        if name in model.peft_config:
            raise ValueError(f"an adapter named {name!r} is already attached; use another name")
        model.load_adapter(adapter_dir, adapter_name=name, is_trainable=trainable)  # active adapter unchanged
        return model
    pm = PeftModel.from_pretrained(model, adapter_dir, adapter_name=name, is_trainable=trainable)
    if not trainable:
        pm.eval()
    return pm


# ---------------------------------------------------------------------------------------------------- identity
_WEIGHTS_MEMO: dict[tuple, str] = {}
CONTENT_HASH_LIMIT = 4 * 1024 ** 3      # bytes; larger local checkpoints are identified by names, sizes and mtimes


def _weights_hash(directory: Path) -> dict:
    """The weight files of a local checkpoint: SHA-256 of their content (names included), or for checkpoints over
    CONTENT_HASH_LIMIT their names, sizes and modification times (hashing 16 GB on every load costs minutes)."""
    files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf") and p.is_file())
    stats = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo = (str(directory.resolve()), stats)
    if memo not in _WEIGHTS_MEMO:
        h = hashlib.sha256()
        if sum(s for _, s, _ in stats) <= CONTENT_HASH_LIMIT:
            for p in files:
                h.update(p.name.encode())
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        h.update(chunk)
            _WEIGHTS_MEMO[memo] = f"sha256:{h.hexdigest()[:32]}"
        else:
            h.update(json.dumps(stats).encode())
            _WEIGHTS_MEMO[memo] = f"stat:{h.hexdigest()[:32]}"
    return {"files": [n for n, _, _ in stats], "digest": _WEIGHTS_MEMO[memo]}


def mark_weights(model, label: str) -> None:
    """Record an in-memory change of the loaded weights (e.g. DCR's Stage A merged in) on the model, so that
    ``identity`` -- and every cache key built from it -- differs from the unchanged checkpoint's."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    base.dart_weight_edits = [*getattr(base, "dart_weight_edits", []), label]


def identity(model) -> dict:
    """What decides a model's outputs besides its inputs, for cache keys (generation, training): where the weights
    came from (local directory content, or the hub commit), dtype and shape, and statistics of the input embeddings
    (which also tell apart in-memory models, e.g. the tests' random ones). Works on a PeftModel (its base)."""
    cfg = model.config
    src = getattr(cfg, "_name_or_path", "") or ""
    local = Path(src).expanduser()
    emb = model.get_input_embeddings().weight.detach()
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    edits = getattr(base, "dart_weight_edits", None)
    return {**({"weight_edits": list(edits)} if edits else {}),   # absent for unchanged checkpoints: old keys hold
            "name_or_path": src, "commit_hash": getattr(cfg, "_commit_hash", None),
            "weights": _weights_hash(local) if src and local.is_dir() else None,
            "model_type": getattr(cfg, "model_type", None), "layers": getattr(cfg, "num_hidden_layers", None),
            "hidden": getattr(cfg, "hidden_size", None), "vocab": getattr(cfg, "vocab_size", None),
            "dtype": str(emb.dtype), "embedding_sum": round(float(emb.double().sum()), 6),
            "embedding_norm": round(float(emb.double().norm()), 6)}
