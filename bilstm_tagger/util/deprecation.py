"""Old import paths that keep working and say where the code went.

An old module is a shim of two lines:

    from ..util.deprecation import forward
    __getattr__ = forward(__name__, "bilstm_tagger.pipeline.confidence")

Importing it warns once (DeprecationWarning naming the new path), and every attribute read through
it, `from OLD import name` included, warns again at the caller's line and returns the new module's
object, as spaCy's `spancat.py` does for its moved names.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable


def message(old: str, new: str) -> str:
    return f"{old} is deprecated and will be removed; import from {new} instead"


def forward(old: str, *new: str) -> Callable[[str], Any]:
    """A module `__getattr__` for the shim `old` that looks names up in the modules `new`, in order."""
    where = " or ".join(new)
    warnings.warn(message(old, where), DeprecationWarning, stacklevel=3)
    targets = [importlib.import_module(name) for name in new]
    shim = sys.modules[old]
    shim.__all__ = sorted({n for t in targets for n in getattr(t, "__all__", [k for k in vars(t) if not k.startswith("_")])})

    def __getattr__(name: str) -> Any:
        for target in targets:
            if hasattr(target, name):
                warnings.warn(message(f"{old}.{name}", f"{target.__name__}.{name}"), DeprecationWarning, stacklevel=2)
                return getattr(target, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__
