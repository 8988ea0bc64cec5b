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
- spacy-curated-transformers 0.3.x cannot train under NumPy >= 2.4: `ml/tagger.py` applies
  `bilstm_tagger.util.compat.fix_curated_loss` when a model has a listener.
"""
from __future__ import annotations

from typing import List, Sequence

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
