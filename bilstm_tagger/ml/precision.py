"""Reduced-precision inference: what a torch layer computes in when it tags.

Three settings, chosen per pipeline (the component's `precision`) and applied
only at inference; training always runs in float32:

- "fp32": as trained.
- "bf16": the layer's forward runs under `torch.autocast(dtype=bfloat16)`, so
  matrix products and the LSTM run in bfloat16 on CPUs with AVX512-BF16 or
  AMX (elsewhere torch emulates it, slowly). The weights stay float32.
- "int8": dynamic int8 quantization of the encoder's LSTM/GRU and linear layers, built at
  load time from the float32 weights and cached on the layer's shim until the
  weights change. The saved pipeline keeps float32 weights, so it does not
  depend on torch's quantized-tensor format, which torch has deprecated; where
  `quantize_dynamic` is gone the layer warns once and runs float32.

Layers read their setting from their shim (never saved with the weights), so
a pipeline's config decides and a `spacy.load` override can change it.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from typing import ContextManager, Optional

import torch
from thinc.api import Model
from torch import nn

PRECISIONS = ("fp32", "bf16", "int8")
# Which layer types int8 replaces: the recurrent and linear layers hold almost all multiply-adds.
_INT8_TYPES = {nn.LSTM, nn.GRU, nn.Linear}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> str:
    """ "auto" -> bf16 where the CPU computes it natively, fp32 elsewhere; any other value as is."""
    if precision == "auto":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return check_precision(precision)


def set_precision(model: Model, precision: str) -> None:
    """Make every torch layer under `model` tag in `precision` (training is unaffected)."""
    check_precision(precision)
    for node in model.walk():
        for shim in node.shims:
            if getattr(shim, "precision", None) != precision:
                shim.precision = precision
                shim.inference_copy = None


def precision_of(model: Model) -> str:
    return getattr(model.shims[0], "precision", "fp32") if model.shims else "fp32"


def compute_context(model: Model, device: torch.device) -> ContextManager:
    """Autocast for a bf16 layer on CPU; nothing otherwise."""
    if precision_of(model) == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_module(model: Model, module: nn.Module) -> nn.Module:
    """The module a layer tags with: its int8 copy under "int8", else the module itself (the
    encoder calls this; a transformer embedder does not, and stays float32 under int8)."""
    if precision_of(model) != "int8" or _device(module).type != "cpu":  # dynamic int8 kernels are CPU-only
        return module
    shim = model.shims[0]
    cached: Optional[nn.Module] = getattr(shim, "inference_copy", None)
    if cached is None:
        cached = shim.inference_copy = _quantized(module)
    return cached


def _device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


def _quantized(module: nn.Module) -> nn.Module:
    if not any(type(m) in _INT8_TYPES for m in module.modules()):
        return module
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        warnings.warn("precision int8: this torch has no torch.ao.quantization.quantize_dynamic; tagging in float32")
        return module
    types = {t for t in _INT8_TYPES if not (t is nn.LSTM and _has_projection(module))}
    with warnings.catch_warnings():
        # torch warns that eager-mode quantization is deprecated; the saved weights do not depend on it.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(copy.deepcopy(module).eval(), types, dtype=torch.qint8)


def _has_projection(module: nn.Module) -> bool:
    # Dynamic quantization has no LSTM with proj_size; those keep a float32 LSTM.
    return any(isinstance(m, nn.LSTM) and m.proj_size > 0 for m in module.modules())


def reduced_layers(model: Model, precision: str) -> dict:
    """What `precision` changes in `model`'s torch modules, by layer type, for a pipeline's meta:
    {"reduced": ["LSTM", "Linear", ...], "float32": [...]}."""
    types = sorted({type(m).__name__ for node in model.walk() for shim in node.shims
                    if getattr(shim, "_model", None) is not None for m in shim._model.modules() if any(True for _ in m.parameters(recurse=False))})
    if precision == "int8":  # the encoder's layers only: see inference_module
        encoder = [shim._model for node in model.walk() if node.name == "birnn_encoder" for shim in node.shims
                   if getattr(shim, "_model", None) is not None]
        projected = any(_has_projection(m) for m in encoder)
        names = {t.__name__ for t in _INT8_TYPES if not (t is nn.LSTM and projected)}
        types = sorted(set(types) | {type(m).__name__ for e in encoder for m in e.modules()
                                     if any(True for _ in m.parameters(recurse=False))})
        in_encoder = {type(m).__name__ for e in encoder for m in e.modules()}
        return {"reduced": [t for t in types if t in names and t in in_encoder],
                "float32": [t for t in types if not (t in names and t in in_encoder)]}
    elif precision == "bf16":  # what autocast runs in bfloat16 among our layers
        names = {"LSTM", "GRU", "Linear", "Conv1d", "MultiheadAttention"}
    else:
        names = set()
    return {"reduced": [t for t in types if t in names], "float32": [t for t in types if t not in names]}
