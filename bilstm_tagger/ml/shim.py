"""The torch side of every layer: modules rebuilt from a saved spec, serialised with safetensors.

A layer's torch module is created when its sizes are known (at initialize, or
when weights are loaded), so a freshly constructed pipeline holds no module.
Each module class declares the `spec` it is built from; the shim saves that
spec beside the tensors and rebuilds the module from it, on thinc's current
device, before the weights are loaded (spaCy issue #8319 is what happens
otherwise).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
from thinc.api import Model, PyTorchShim, get_torch_default_device, torch2xp, xp2torch
from thinc.types import Floats2d
from torch import nn

from ..errors import WeightsError
from .precision import compute_context
from .weights import dump_weights, load_weights

MODULES: Dict[str, Type[nn.Module]] = {}


def torch_module(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Register a module class that can be rebuilt from `cls(**spec)`."""
    MODULES[cls.__name__] = cls
    return cls


def build_module(kind: str, spec: dict) -> nn.Module:
    if kind not in MODULES:
        raise WeightsError(f"unknown module kind {kind!r} (known: {', '.join(sorted(MODULES))})")
    try:
        return MODULES[kind](**spec)
    except (TypeError, ValueError) as err:
        raise WeightsError(f"the saved description of the {kind} is invalid: {err}") from None


def module_bytes(module: nn.Module) -> bytes:
    return dump_weights({"module": type(module).__name__, "spec": module.spec}, module.state_dict())


def module_from_bytes(data: bytes, device: Optional[torch.device] = None) -> nn.Module:
    meta, state = load_weights(data)
    module = build_module(meta.get("module", ""), meta["spec"])
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"tensors do not fit the saved description of the {meta['module']}: {err}") from None
    return module.to(device or get_torch_default_device())


def _serialize(module: Optional[nn.Module]) -> bytes:
    if module is None:
        raise ValueError("bilstm_tagger: the model is not initialized: call nlp.initialize() or load a trained pipeline")
    return module_bytes(module)


def _deserialize(_old: Any, data: bytes, device: torch.device) -> nn.Module:
    return module_from_bytes(data, device)


class TorchShim(PyTorchShim):
    """thinc's PyTorchShim, for a module that may not be built yet when spaCy moves the model,
    and whose parameters follow the optimizer's averages (`use_averages = true`).

    `precision` says how the layer tags (see .precision); `inference_copy` holds its int8 copy,
    dropped whenever the weights change.
    """

    precision = "fp32"
    inference_copy: Optional[nn.Module] = None

    def finish_update(self, optimizer) -> None:
        self.inference_copy = None
        super().finish_update(optimizer)

    def __getstate__(self) -> dict:
        # nlp.pipe(n_process=N) under spawn pickles the pipe: the int8 copy is rebuilt, not shipped.
        state = self.__dict__.copy()
        state.pop("inference_copy", None)
        return state

    def from_bytes(self, bytes_data):
        self.inference_copy = None
        return super().from_bytes(bytes_data)

    def to_device(self, device_type: str, device_id: int) -> None:
        if self._model is not None:  # an unbuilt module is created on thinc's current device later
            super().to_device(device_type, device_id)

    @contextlib.contextmanager
    def use_params(self, params: Dict[Any, Any]):
        # thinc's optimizer keeps a torch parameter's moving average under (shim id, name), but
        # PyTorchShim.use_params looks for string keys, so spaCy's evaluation and model-best never
        # saw the averages. Swap them in here, and the trained values back afterwards.
        module = self._model
        named = dict(module.named_parameters()) if module is not None else {}
        averages = {name: params[(self.id, name)] for name in named if (self.id, name) in params}
        if not averages:
            yield
            return
        self.inference_copy = None
        backup = {name: named[name].detach().clone() for name in averages}
        try:
            with torch.no_grad():
                for name, value in averages.items():
                    named[name].copy_(xp2torch(value, device=named[name].device).view_as(named[name]))
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    named[name].copy_(value)
            self.inference_copy = None


def make_shim(module: Optional[nn.Module] = None) -> PyTorchShim:
    # Module-level (de)serializers, so the shim pickles for nlp.pipe(n_process=N).
    return TorchShim(module, serialize_model=_serialize, deserialize_model=_deserialize)


def get_module(model: Model) -> nn.Module:
    module = model.shims[0]._model
    if module is None:
        raise ValueError("bilstm_tagger: the model is not initialized: call nlp.initialize() or load a trained pipeline")
    return module


def set_module(model: Model, module: nn.Module) -> None:
    model.shims[0]._model = module.to(get_torch_default_device())
    model.shims[0].inference_copy = None


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return get_torch_default_device()


def is_built(model: Model) -> bool:
    return model.shims[0]._model is not None


def run(model: Model, is_train: bool, fn: Callable[[], Any]) -> Any:
    """Run `fn` with the module in train or eval mode; at inference without autograd, and in the
    layer's precision (bf16 autocast)."""
    module = get_module(model)
    module.train(is_train)
    if is_train:
        return fn()
    with torch.inference_mode(), compute_context(model, module_device(module)):
        return fn()


def embedder_output(model: Model, flat: torch.Tensor, lengths: Sequence[int]) -> Tuple[List[Floats2d], Callable]:
    """An embedder's torch rows (docs one after another) as one thinc array per doc, with the
    backprop that sends their gradients into torch (docs take no gradient)."""
    # float(): a bf16 layer's rows (numpy has no bfloat16), a no-op for float32
    output = model.ops.unflatten(torch2xp(flat.detach().float(), ops=model.ops), model.ops.asarray1i(lengths))

    def backprop(d_output: List[Floats2d]) -> list:
        torch.autograd.backward(flat, grad_tensors=xp2torch(model.ops.flatten(d_output), device=flat.device))
        return []

    return output, backprop
