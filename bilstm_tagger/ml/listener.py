"""Listener mode: token features from a transformer component already in the pipeline.

A curated-transformers listener (`spacy-curated-transformers.ScalarWeightingListener.v1`,
`LastTransformerLayerListener.v1`, ...) can sit in `BiLSTMTagger.v2`'s `embed` slot, alone or
inside `ConcatEmbed.v1`. In training it takes the batch's outputs that the upstream
`curated_transformer` component handed it in `update`, and its gradient flows back into that
shared transformer. At inference it reads `doc._.trf_data`, which the upstream component wrote.

Two things are handled here, without importing spacy-curated-transformers unless a listener is
actually in use:

- A doc that never went through the transformer component has no `trf_data`, and the listener
  would quietly give it all-zero features (and so tag it from zeros). `check_listener_inputs`
  raises a ConfigError that says so instead; in training, `check_listener_batch` does the same
  when the transformer's `update` did not run (the listener itself would fail on a bare assert).
- spacy-curated-transformers 0.3.x sums its loss into a 1-element array and calls `float()` on
  it, which NumPy 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars"),
  so every training step of a pipeline with a `curated_transformer` fails. `fix_curated_loss`
  swaps in an equivalent `_create_backprops` that reports the loss as a Python float; it is
  applied only to that release line and only where NumPy refuses the conversion.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from spacy.tokens import Doc
from thinc.api import Model

from ..errors import ConfigError

# Attributes a curated-transformers listener keeps on its thinc node (ListenerStateUtils).
_SENTINEL = "_TRANSFORMER_LISTENER"
_READS_DOCS = "_USE_DOC_ANNOTATIONS_FOR_PREDICTION"
_UPSTREAM = "_upstream_name"
TRF_DATA = "trf_data"


def doc_listeners(model: Model) -> List[Model]:
    """The curated-transformers listeners under `model` that read `doc._.trf_data` at inference."""
    return [node for node in model.walk() if node.attrs.get(_SENTINEL) and node.attrs.get(_READS_DOCS)]


def has_listener(model: Model) -> bool:
    return any(node.attrs.get(_SENTINEL) for node in model.walk())


def check_listener_inputs(model: Model, docs: Sequence[Doc]) -> None:
    """Refuse to run the listeners under `model` on docs the transformer component did not process.

    Costs one walk over the embed layer's few nodes and one attribute read per doc.
    """
    listeners = doc_listeners(model)
    if not listeners or not docs:
        return
    upstream = listeners[0].attrs.get(_UPSTREAM, "*")
    where = "the transformer component" if upstream == "*" else f"the {upstream!r} component"
    if not Doc.has_extension(TRF_DATA):
        raise ConfigError(
            f"bilstm_tagger reads its token features from {where} (doc._.trf_data), which has not run in this "
            "process: put it before bilstm_tagger in the pipeline and do not disable it"
        )
    for i, doc in enumerate(docs):
        data = doc._.get(TRF_DATA)
        if data is None:
            raise ConfigError(
                f"doc {i} of the batch ({doc.text[:40]!r}) has no transformer output (doc._.trf_data is None): "
                f"bilstm_tagger reads its token features from {where}, so run the whole pipeline "
                "(nlp(text), nlp.pipe(texts)) rather than this component alone, and do not disable the transformer; "
                "without it every token would be tagged from zero vectors"
            )
        outputs = data.all_outputs
        if outputs and len(outputs[-1].lengths) != len(doc):
            raise ConfigError(
                f"doc {i} of the batch has {len(doc)} tokens but its transformer output covers "
                f"{len(outputs[-1].lengths)}: the doc was retokenized after the transformer ran"
            )


def check_listener_batch(model: Model) -> None:
    """In training: refuse to run when the transformer component did not hand this batch's outputs
    to the listeners under `model` (its `update` did not run), instead of failing on an assert."""
    for node in model.walk():
        if node.attrs.get(_SENTINEL) and getattr(node.attrs.get("_state"), "outputs", None) is None:
            upstream = node.attrs.get(_UPSTREAM, "*")
            where = "the transformer component" if upstream == "*" else f"the {upstream!r} component"
            raise ConfigError(
                f"bilstm_tagger's listener received no features from {where} for this batch: its update did not run. "
                "Keep it out of [training] frozen_components and nlp.update(exclude=...); to fix its weights, set "
                "frozen = true on the component instead"
            )


# ---- spacy-curated-transformers 0.3.x under NumPy >= 2.4 ---------------------------------------


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
    if not version("spacy-curated-transformers").startswith("0.") or not _numpy_refuses_1d_float():
        return False
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
