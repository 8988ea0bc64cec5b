"""Entity confidence, n-best paths and alternative spans, computed from what tagging already produced.

Tagging stays as fast as before: `set_annotations` only files a small per-doc record (the doc's
emission scores and tag ids, plus the CRF's start/transition/end scores with forbidden moves at
-1e4, the tag inventory and the temperature) in ``doc.user_data["bilstm_tagger"][component name]``.
`Span._.confidence` is a getter that computes, on first read, the exact probability of every span
the component predicted on that doc (`ml.crf.span_marginals`, Z_constrained / Z) and caches it
in the same record. The record is numpy + strings, so it survives `DocBin(store_user_data=True)`
and `nlp.pipe(n_process=N)` (both msgpack user_data).

For a softmax decoder a span's confidence is the product of its tokens' softmax probabilities of
exactly that chunk's tags (and, in IOB2, of the next token not continuing it): the tokens are
independent under that model, so this is the exact span probability of the model, too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.tokens import Doc, Span

from ..ml import crf
from ..ml.crf import chunk_tags, scale_scores, viterbi_nbest
from ..tags import spans_from_tags

USER_DATA_KEY = "bilstm_tagger"
EXTENSION = "confidence"

SpanTuple = Tuple[int, int, str]


@dataclass
class ScoreContext:
    """What every doc's record shares within one `set_annotations` call."""

    tags: Tuple[str, ...]
    scheme: str
    crf: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]  # start, transitions, end; -1e4 = forbidden
    temperature: float = 1.0
    bias: Optional[np.ndarray] = None  # the decision bias per tag, already inside the emissions


@dataclass
class NBestPath:
    spans: List[SpanTuple]
    tags: List[str]
    probability: float


# ---- records in doc.user_data --------------------------------------------------------------


def make_record(context: ScoreContext, ids: np.ndarray, emissions: np.ndarray) -> Dict[str, Any]:
    record: Dict[str, Any] = {
        "tags": context.tags,
        "scheme": context.scheme,
        "ids": np.asarray(ids, dtype=np.int16 if len(context.tags) < 32000 else np.int32),
        "emissions": np.array(emissions, dtype=np.float32),  # a copy: the batch's array is not kept alive
        "temperature": float(context.temperature),
    }
    if context.crf is not None:
        record["start"], record["transitions"], record["end"] = context.crf
    if context.bias is not None:
        record["bias"] = context.bias
    return record


def store_record(doc: Doc, name: str, record: Dict[str, Any]) -> None:
    doc.user_data.setdefault(USER_DATA_KEY, {})[name] = record


def get_records(doc: Doc) -> Dict[str, Dict[str, Any]]:
    return doc.user_data.get(USER_DATA_KEY) or {}


def _tensors(record: Dict[str, Any], temperature: Optional[float] = None):
    """(emissions (1, T, L), mask, start, transitions, end) in float64, all divided by the temperature
    (the emissions include the decision bias, so these describe the biased model).
    A softmax record gets zero transition scores: a CRF without transitions is exactly the product
    of per-token softmaxes, so the CRF routines serve both."""
    T = record["temperature"] if temperature is None else temperature
    em = torch.as_tensor(np.asarray(record["emissions"], dtype=np.float64)).unsqueeze(0)
    n_tags = em.shape[-1]
    if "transitions" in record:
        crf = [torch.as_tensor(np.asarray(record[k], dtype=np.float64)) for k in ("start", "transitions", "end")]
        em, start, trans, end = scale_scores(em, *crf, T)
    else:
        em = torch.log_softmax(em / T, dim=-1)
        start, trans, end = em.new_zeros(n_tags), em.new_zeros(n_tags, n_tags), em.new_zeros(n_tags)
    mask = torch.ones(em.shape[:2], dtype=torch.bool)
    return em, mask, start, trans, end


def record_raw_scores(record: Dict[str, Any]) -> np.ndarray:
    """The doc's emission scores before the decision bias (float32, (T, n_tags))."""
    em = np.asarray(record["emissions"], dtype=np.float32)
    return em - record["bias"] if "bias" in record else em


def record_spans(record: Dict[str, Any]) -> List[SpanTuple]:
    """The spans the component predicted (its tags read as `set_annotations` reads them)."""
    tags = record["tags"]
    return [(s, e, label) for s, e, label in spans_from_tags([tags[i] for i in np.asarray(record["ids"]).tolist()]).spans]


def _scaled(record: Dict[str, Any], temperature: Optional[float]) -> Tuple[np.ndarray, ...]:
    """float64 (emissions, start, transitions, end) / T, forbidden moves at -inf (CRF records)."""
    T = record["temperature"] if temperature is None else temperature
    return tuple(crf.forbidden_to_inf_np(record[k]) / T for k in ("emissions", "start", "transitions", "end"))


def spans_probability(record: Dict[str, Any], spans: Sequence[SpanTuple], temperature: Optional[float] = None) -> np.ndarray:
    """Exact probability that each (start, end, label) is one chunk of its own, under the record's model."""
    if not spans:
        return np.zeros(0)
    tags, scheme = list(record["tags"]), record["scheme"]
    if "transitions" in record:
        return crf.span_marginals_np(*_scaled(record, temperature), spans, tags, scheme)
    T = record["temperature"] if temperature is None else temperature
    em = np.asarray(record["emissions"], dtype=np.float64) / T
    probs = np.exp(em - np.logaddexp.reduce(em, axis=1)[:, None])
    return _softmax_spans(probs, spans, tags, scheme)


def _softmax_spans(probs: np.ndarray, spans: Sequence[SpanTuple], tags: List[str], scheme: str) -> np.ndarray:
    index = {tag: j for j, tag in enumerate(tags)}
    out = np.zeros(len(spans))
    for n, (s, e, label) in enumerate(spans):
        chunk = [index.get(t) for t in chunk_tags(e - s, label, scheme)]
        if None in chunk:
            continue
        p = float(np.prod(probs[np.arange(s, e), chunk]))
        inside = index.get(f"I-{label}")
        if scheme == "IOB2" and e < len(probs) and inside is not None:
            p *= 1.0 - float(probs[e, inside])
        out[n] = p
    return out


def record_confidences(record: Dict[str, Any]) -> Tuple[List[SpanTuple], np.ndarray]:
    """The predicted spans and their confidences, computed once per record and cached in it."""
    if "confidence" not in record:
        spans = record_spans(record)
        record["spans"] = np.array([[s, e] for s, e, _ in spans], dtype=np.int32).reshape(-1, 2)
        record["labels"] = tuple(label for _, _, label in spans)
        record["confidence"] = spans_probability(record, spans)
    spans = [(int(s), int(e), label) for (s, e), label in zip(np.asarray(record["spans"]).tolist(), record["labels"])]
    return spans, np.asarray(record["confidence"])


def _lookup(spans: Sequence[SpanTuple], values: np.ndarray, key: SpanTuple) -> Optional[float]:
    for span, value in zip(spans, values):
        if span == key:
            return float(value)
    return None


def span_confidence(span: Span) -> Optional[float]:
    """`Span._.confidence`: the exact probability of this span under the component that predicted it
    (temperature-scaled when the model stores a temperature); None if no component predicted it."""
    key = (span.start, span.end, span.label_)
    for record in get_records(span.doc).values():
        if len(record["emissions"]) != len(span.doc):
            continue  # the doc was retokenized after tagging: the scores no longer line up
        spans, values = record_confidences(record)
        found = _lookup(spans, values, key)
        if found is None and "alternatives" in record:
            alt = record["alternatives"]
            found = _lookup([(int(s), int(e), l) for (s, e), l in zip(np.asarray(alt["spans"]).tolist(), alt["labels"])],
                            np.asarray(alt["confidence"]), key)
        if found is not None:
            return found
    return None


def register_extensions() -> None:
    """Register `Span._.confidence` once; another package's extension of that name is left alone."""
    if not Span.has_extension(EXTENSION):
        Span.set_extension(EXTENSION, getter=span_confidence)


# ---- n-best paths and alternatives ---------------------------------------------------------


def record_nbest(record: Dict[str, Any], k: int) -> List[NBestPath]:
    """The k most probable tag paths of the doc (best first) with their probabilities; fewer when
    the doc has fewer legal paths."""
    em, mask, start, trans, end = _tensors(record)
    with torch.no_grad():
        paths, log_probs = viterbi_nbest(em, mask, start, trans, end, k)
    tags = record["tags"]
    out = []
    for path, log_p in zip(paths[0].tolist(), log_probs[0].tolist()):
        if log_p == -math.inf:
            break
        path_tags = [tags[i] for i in path]
        out.append(NBestPath([tuple(s) for s in spans_from_tags(path_tags).spans], path_tags, math.exp(log_p)))
    return out


def alternatives(record: Dict[str, Any], k: int, threshold: float) -> List[Tuple[int, int, str, float]]:
    """Spans on the 2nd..k-th best paths that are not on the best one, with their exact probability,
    kept when that probability is at least `threshold`; most probable first. Cached in the record."""
    paths = record_nbest(record, k)
    if not paths:
        return []
    best = set(paths[0].spans)
    seen: List[SpanTuple] = []
    for path in paths[1:]:
        seen += [s for s in path.spans if s not in best and s not in seen]
    probs = spans_probability(record, seen)
    kept = sorted(((s, e, label, float(p)) for (s, e, label), p in zip(seen, probs) if p >= threshold), key=lambda x: -x[3])
    record["alternatives"] = {
        "spans": np.array([[s, e] for s, e, _, _ in kept], dtype=np.int32).reshape(-1, 2),
        "labels": tuple(label for _, _, label, _ in kept),
        "confidence": np.array([p for *_, p in kept], dtype=np.float64),
    }
    return kept


def write_alternatives(doc: Doc, record: Dict[str, Any], key: str, k: int, threshold: float) -> None:
    found = alternatives(record, k, threshold)
    doc.spans[key] = [Span(doc, s, e, label) for s, e, label, _ in found]
    doc.spans[key].attrs["confidence"] = [p for *_, p in found]


def token_marginals(record: Dict[str, Any]) -> np.ndarray:
    """P(tag_t = j) per token (T, n_tags): CRF forward-backward, or the softmax."""
    em, mask, start, trans, end = _tensors(record)
    with torch.no_grad():
        if "transitions" in record:
            return crf.marginals(em, mask, start, trans, end)[0].numpy()
        return em.exp()[0].numpy()  # the softmax record's emissions are already log-probabilities
