"""Soft labels for `annotate --marginals`: per token, the tagger's probability of every tag.

For a CRF component these are the exact forward-backward marginals, for a softmax one the softmax,
both under the component's saved temperature (`cfg["temperature"]`) and decision bias: they are
computed from the record the component files on each doc for `Span._.confidence`
(`pipeline.confidence.token_marginals`), so they describe exactly the model that tagged the doc.

Storage: one parquet column `marginals` of type list<fixed_size_list<float16, n_tags>> (one list of
n_tags probabilities per token, in the order of the tag names), and a `tokens` column with the
words they belong to. The tag names, the scheme and the component sit in the shard's schema
metadata under `bilstm_tagger.marginals` (JSON). float16 keeps every probability to within 2.5e-4
of its float32 value (a relative error of 2^-11 above 6e-5), so each token's row still sums to 1
within 1e-3; it costs 2 bytes per tag per token before parquet's compression, which shrinks the
many near-zero entries. A top-k encoding would be smaller, but it changes the distribution the
student's cross-entropy fits (the rest mass has no tag), so the full distribution is kept.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..errors import AnnotateError

METADATA_KEY = b"bilstm_tagger.marginals"


def marginals_component(nlp, model: str = "the pipeline") -> str:
    """The name of the component whose marginals are written: the bilstm_tagger span tagger that sets
    doc.ents, else the first bilstm_tagger span tagger (doc.spans)."""
    from ..pipeline.component import BiLSTMTagger
    from ..pipeline.tasks import SpanTask

    taggers = [(name, pipe) for name, pipe in nlp.pipeline if isinstance(pipe, BiLSTMTagger) and isinstance(pipe.task, SpanTask)]
    if not taggers:
        raise AnnotateError(
            f"{model}: --marginals needs a bilstm_tagger span component (one that computes tag marginals); "
            f"this pipeline has: {', '.join(nlp.pipe_names) or 'no components'}"
        )
    ents = [name for name, pipe in taggers if pipe.target == "ents"]
    return ents[0] if ents else taggers[0][0]


def marginals_meta(nlp, name: str) -> Dict[str, Any]:
    """What a reader needs to interpret the `marginals` column."""
    pipe = nlp.get_pipe(name)
    crf = pipe.model.get_ref("decoder").attrs.get("crf")
    return {
        "component": name, "target": pipe.target, "scheme": pipe.task.scheme, "tags": list(pipe.tags),
        "labels": list(pipe.labels), "decoder": "crf" if crf else "softmax", "dtype": "float16",
        "temperature": float(pipe.cfg.get("temperature") or 1.0),
    }


def doc_marginals(doc, name: str, n_tags: int) -> np.ndarray:
    """(n_tokens, n_tags) float32 tag probabilities of the component `name` on a tagged doc."""
    from ..pipeline.confidence import get_records, token_marginals

    record = get_records(doc).get(name)
    if record is None or not len(doc):
        if len(doc):
            raise AnnotateError(f"component {name!r} filed no scores on a doc of {len(doc)} tokens")
        return np.zeros((0, n_tags), dtype=np.float32)
    if len(record["emissions"]) != len(doc):
        raise AnnotateError(f"the doc was retokenized after {name!r} tagged it: its scores no longer line up")
    return np.asarray(token_marginals(record), dtype=np.float32)


def marginals_type(n_tags: int) -> pa.DataType:
    return pa.list_(pa.list_(pa.float16(), n_tags))


def with_marginals(schema: pa.Schema, meta: Dict[str, Any]) -> pa.Schema:
    """`schema` plus the tokens and marginals columns, with `meta` in its metadata."""
    schema = schema.append(pa.field("tokens", pa.list_(pa.string()))).append(pa.field("marginals", marginals_type(len(meta["tags"]))))
    return schema.with_metadata({METADATA_KEY: json.dumps(meta).encode("utf8")})


def marginals_array(arrays: Sequence[np.ndarray], n_tags: int) -> pa.Array:
    """One list<fixed_size_list<float16>> value per doc, built from numpy without Python floats."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([np.asarray(a, dtype=np.float16).reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float16)
    tokens = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), n_tags)
    return pa.ListArray.from_arrays(pa.array(offsets), tokens, type=marginals_type(n_tags))


def read_meta(schema: pa.Schema) -> Optional[Dict[str, Any]]:
    """The marginals metadata of a shard's schema; None for a shard written without --marginals."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return None if raw is None else json.loads(raw)


def read_marginals(column: pa.ChunkedArray, n_tags: int) -> List[np.ndarray]:
    """The marginals column as one float32 (n_tokens, n_tags) array per row."""
    import pyarrow.compute as pc

    out: List[np.ndarray] = []
    for chunk in column.chunks:
        lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False)
        flat = chunk.flatten().flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, n_tags)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        out += [flat[offsets[i] : offsets[i + 1]] for i in range(len(chunk))]
    return out
