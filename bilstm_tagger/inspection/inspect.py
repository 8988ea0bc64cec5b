"""What a `BiLSTMTagger` pipe computes on given docs: `pipe.inspect(docs)` and `pipe.n_best(docs, k)`.

The network's own layers are fed as at inference (dropout off): the embed layer's token vectors go
to `inspection.rnn.rnn_internals` on the encoder's fused RNN, whose last-layer output feeds the
attention blocks in order (block k sees block k-1's output). Emission scores, tag ids, marginals
and confidences come from the pipe's normal `predict`, so they are exactly what tagging uses
(long docs included); the RNN internals treat each doc as one sequence, which is what the encoder
does for docs up to `window` tokens (256 by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.tokens import Doc

from ..pipeline.confidence import NBestPath, make_record, record_confidences, record_nbest, token_marginals
from .rnn import RNNInternals, attention_weights, rnn_internals
from ..ml import crf_allowed, crf_scores, encoder_parts
from ..ml.listener import check_listener_inputs


@dataclass
class CRFTransitions:
    """The learned CRF scores (before constraints) and which moves the tag scheme allows."""

    tags: List[str]
    start: np.ndarray  # (L,)
    transitions: np.ndarray  # (L, L), [from, to]
    end: np.ndarray  # (L,)
    allowed_start: np.ndarray  # bool
    allowed_transitions: np.ndarray  # bool, [from, to]
    allowed_end: np.ndarray  # bool

    def constrained(self, impossible: float = float("-inf")) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, transitions, end) as decoding uses them: forbidden moves at `impossible`."""
        return (np.where(self.allowed_start, self.start, impossible), np.where(self.allowed_transitions, self.transitions, impossible),
                np.where(self.allowed_end, self.end, impossible))


@dataclass
class DocInspection:
    """One doc seen from inside. Arrays are numpy, indexed by token position t in both directions."""

    tokens: List[str]
    tags: List[str]  # the predicted tag of each token
    cell: str  # "lstm" or "gru"
    # (layer, "forward"/"backward") -> {"input", "forget", "candidate", "output", "cell", "cell_output",
    # "hidden"} for an LSTM, {"reset", "update", "candidate", "hidden"} for a GRU; each (T, width).
    rnn: Dict[Tuple[int, str], Dict[str, np.ndarray]]
    hidden: np.ndarray  # (T, 2 * width): the last BiRNN layer's output, both directions
    attention: List[np.ndarray]  # per attention block: (heads, T query, T key); empty when off
    emissions: np.ndarray  # (T, n_tags) per-tag scores before decoding
    marginals: np.ndarray  # (T, n_tags) P(tag_t = j): CRF forward-backward or softmax
    entities: List[Tuple[int, int, str, float]]  # predicted spans (start, end, label, confidence)
    transitions: Optional[CRFTransitions] = None  # None for a softmax decoder
    temperature: float = 1.0


def crf_transitions(pipe) -> Optional[CRFTransitions]:
    decoder = pipe.model.get_ref("decoder")
    raw, allowed = crf_scores(decoder, impossible=None), crf_allowed(decoder)
    if raw is None or allowed is None:
        return None
    return CRFTransitions(list(pipe.tags), *raw, *allowed)


def token_vectors(pipe, docs: Sequence[Doc]) -> List[np.ndarray]:
    """The embed layer's output per doc: what the encoder reads (its input dropout is off at inference)."""
    embed = pipe.model.get_ref("embed")
    docs = list(docs)
    check_listener_inputs(embed, docs)
    return [embed.ops.to_numpy(x) for x in embed.predict(docs)]


def network_internals(pipe, docs: Sequence[Doc]) -> Tuple[Optional[RNNInternals], List[torch.Tensor]]:
    """RNN internals of the non-empty docs as one padded batch, and per attention block its weights
    (batch, heads, T, T). (None, []) when every doc is empty."""
    live = [doc for doc in docs if len(doc)]
    if not live:
        return None, []
    rnn, blocks = encoder_parts(pipe.model.get_ref("encoder"))
    device = next(rnn.parameters()).device
    vectors = [torch.as_tensor(x, dtype=torch.float32, device=device) for x in token_vectors(pipe, live)]
    lengths = torch.tensor([len(x) for x in vectors])
    padded = torch.nn.utils.rnn.pad_sequence(vectors, batch_first=True)
    with torch.no_grad():
        internals = rnn_internals(rnn, padded, lengths)
        h, padding, weights = internals.output, ~internals.mask, []
        for block in blocks:  # block k reads block k-1's output
            block.train(False)
            weights.append(attention_weights(block.attention, h, padding))
            h = block(h, padding, 0.0)
    return internals, weights


def _records(pipe, docs: Sequence[Doc]) -> List[Optional[dict]]:
    predictions = pipe.predict(docs)
    context = pipe._score_context()
    return [make_record(context, ids, s) if len(ids) else None for ids, s in zip(predictions.ids, predictions.scores)]


def inspect_docs(pipe, docs: List[Doc]) -> List[DocInspection]:
    """`pipe.inspect(docs)`: see `DocInspection`."""
    records = _records(pipe, docs)
    internals, weights = network_internals(pipe, docs)
    transitions = crf_transitions(pipe)
    span_task = hasattr(pipe.task, "spans")
    out, row = [], 0
    for doc, record in zip(docs, records):
        tokens = [t.text for t in doc]
        if record is None:
            empty = np.zeros((0, len(pipe.tags)), dtype=np.float32)
            out.append(DocInspection(tokens, [], internals.cell if internals else "", {}, np.zeros((0, 0)), [], empty, empty, [],
                                     transitions, float(pipe.cfg.get("temperature") or 1.0)))
            continue
        n = len(doc)
        rnn = {(tr.layer, tr.direction): {k: v[row, :n].cpu().numpy() for k, v in tr.values.items()} for tr in internals.traces}
        entities: List[Tuple[int, int, str, float]] = []
        if span_task:
            spans, conf = record_confidences(record)
            entities = [(s, e, label, float(c)) for (s, e, label), c in zip(spans, conf)]
        out.append(DocInspection(
            tokens=tokens,
            tags=[record["tags"][i] for i in np.asarray(record["ids"]).tolist()],
            cell=internals.cell,
            rnn=rnn,
            hidden=internals.output[row, :n].cpu().numpy(),
            attention=[w[row, :, :n, :n].cpu().numpy() for w in weights],
            emissions=np.asarray(record["emissions"]),
            marginals=token_marginals(record),
            entities=entities,
            transitions=transitions,
            temperature=record["temperature"],
        ))
        row += 1
    return out


def n_best(pipe, docs: List[Doc], k: int = 5) -> List[List[NBestPath]]:
    """`pipe.n_best(docs, k)`: per doc the k most probable tag paths (fewer if fewer are legal)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    return [record_nbest(record, k) if record is not None else [] for record in _records(pipe, docs)]
