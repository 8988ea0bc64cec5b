"""Fixes for the versions of other packages we run against, each applied once behind a version guard.

spacy-curated-transformers 0.3.x under NumPy >= 2.4: CuratedTransformer sums its loss into a
1-element array and calls `float()` on it, which NumPy 2.4 refuses ("only 0-dimensional arrays can
be converted to Python scalars"), so every training step of a pipeline with a `curated_transformer`
fails. `fix_curated_loss` swaps in an equivalent `_create_backprops` that reports the loss as a
Python float; it is applied only to that release line (0.x) and only where NumPy refuses the
conversion. `ml/tagger.py` applies it when a model has a listener; applying it again is a no-op.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Tuple

import numpy as np
from spacy.tokens import Doc

CURATED_FIXED_LINE = "0."  # the spacy-curated-transformers versions the loss fix is for
# What each fix replaced, by "Class.attribute", so tests (and a debugging user) can reach the original.
REPLACED: Dict[str, Any] = {}


def _numpy_refuses_1d_float() -> bool:
    try:
        float(np.zeros(1))
    except TypeError:
        return True
    return False


def fix_curated_loss() -> bool:
    """Make CuratedTransformer's training step report its loss as a float. True if the fix is in place."""
    try:
        from importlib.metadata import version

        from spacy_curated_transformers.pipeline.transformer import CuratedTransformer
    except ImportError:
        return False
    if getattr(CuratedTransformer._create_backprops, "_bilstm_tagger_fix", False):
        return True
    if not version("spacy-curated-transformers").startswith(CURATED_FIXED_LINE) or not _numpy_refuses_1d_float():
        return False
    REPLACED["CuratedTransformer._create_backprops"] = CuratedTransformer._create_backprops
    CuratedTransformer._create_backprops = _create_backprops
    return True


def _create_backprops(self, docs: Iterable[Doc], losses: Dict[str, float], *, sgd=None) -> Tuple[Any, Callable, Callable]:
    """Run the transformer on the batch; return its outputs and the callbacks its listeners call.

    Every listener but the last adds its gradient (`accumulate`); the last one adds its own, records
    the loss (sum of squared gradients) and backpropagates once into the transformer (`backprop`).
    The same contract as the package's own method, with the loss kept a Python float.
    """
    from thinc.types import Ragged

    ops = self.model.ops
    if self.frozen:
        outputs, bp_outputs = self.model.predict(docs), None
    else:
        outputs, bp_outputs = self.model.begin_update(docs)
    d_outputs = [
        [Ragged(ops.alloc_f(layer.dataXd.shape), layer.lengths) for layer in doc_layers] for doc_layers in outputs.all_outputs
    ]
    loss_before = float(losses[self.name])

    def accumulate(one_d_outputs: List[List[Ragged]], outputs_to_backprop: Tuple[int, ...]) -> None:
        for d_doc, one_doc in zip(d_outputs, one_d_outputs):
            for j in outputs_to_backprop:
                d_doc[j].data += one_doc[j].data

    def record_loss() -> None:
        total = sum((layer.data ** 2).sum() for d_doc in d_outputs for layer in d_doc)
        losses[self.name] = loss_before + float(total)  # one device sync per step

    def backprop(one_d_outputs: List[List[Ragged]], outputs_to_backprop: Tuple[int, ...]) -> Any:
        accumulate(one_d_outputs, outputs_to_backprop)
        record_loss()
        d_docs = bp_outputs(d_outputs)
        if sgd is not None:
            self.finish_update(sgd)
        return d_docs

    def backprop_frozen(one_d_outputs: List[List[Ragged]], outputs_to_backprop: Tuple[int, ...]) -> Any:
        accumulate(one_d_outputs, outputs_to_backprop)
        record_loss()
        return []

    return outputs, accumulate, backprop_frozen if self.frozen else backprop


_create_backprops._bilstm_tagger_fix = True
