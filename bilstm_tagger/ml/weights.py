"""Safe, self-describing weight files: safetensors plus a JSON description in its metadata.

Nothing here unpickles: a weights file can only ever yield named float tensors.
Two formats exist. `bilstm_tagger/1` (release 0.1) holds the whole network and
its flat spec in one file; `bilstm_tagger/2` holds one torch module (the
embedder, the encoder or the decoder) with the spec it is rebuilt from.
"""
from __future__ import annotations

import json
import struct
from typing import Dict, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import WeightsError

LEGACY_FORMAT = "bilstm_tagger/1"
FORMAT = "bilstm_tagger/2"
# One metadata key only: safetensors writes its metadata map in no fixed order, and a single
# entry keeps the file byte-for-byte reproducible.
_META_KEY = "bilstm_tagger"
_LEGACY_SPEC_KEY = "bilstm_tagger_spec"


def dump_weights(meta: dict, state: Dict[str, torch.Tensor], fmt: str = FORMAT) -> bytes:
    tensors = {name: t.detach().contiguous().cpu() for name, t in state.items()}
    text = json.dumps({"format": fmt, **meta}, sort_keys=True)
    return st_save(tensors, metadata={_META_KEY: text})


def _header(data: bytes) -> dict:
    if len(data) < 8:
        raise WeightsError(f"file is {len(data)} bytes long, too short to be a weights file (truncated?)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise WeightsError(
            f"header claims {size} bytes but only {len(data) - 8} follow: the file is truncated or not a safetensors file"
        )
    try:
        return json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"header is not valid JSON ({err}): the file is corrupt or not a safetensors file") from None


def looks_like_safetensors(data: bytes) -> bool:
    """A safetensors file starts with an 8-byte header length and then a JSON object."""
    return len(data) >= 9 and data[8:9] == b"{"


def load_weights(data: bytes, expect: str = FORMAT) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """Return (description, state dict), or raise WeightsError saying what is wrong."""
    raw = _header(data).get("__metadata__") or {}
    try:
        if _LEGACY_SPEC_KEY in raw:  # the two-key layout of the first development builds
            meta = {"format": raw.get("format"), "spec": json.loads(raw[_LEGACY_SPEC_KEY])}
        else:
            meta = json.loads(raw.get(_META_KEY, "{}"))
    except json.JSONDecodeError as err:
        raise WeightsError(f"the file's description is damaged: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != expect or "spec" not in meta:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise WeightsError(f"not a bilstm_tagger weights file (format {found!r}, expected {expect!r})")
    try:
        state = st_load(data)
    except SafetensorError as err:
        raise WeightsError(f"weights are damaged: {err}") from None
    return meta, state
