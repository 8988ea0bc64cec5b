"""Look inside a trained tagger: exact RNN gates and cells, attention weights, CRF marginals,
exact span probabilities, n-best paths and calibration.

Pure functions over tensors and torch modules (torch + numpy only, plus the tag helpers), so the
pipe can call them on whatever network it holds. Conventions:

- Sequences are batch-first, padded, with a boolean ``mask`` (batch, time) that is True on real
  tokens and a prefix of each row (every sequence has at least one token).
- CRF scores come in as the caller's ``start (L)``, ``transitions (L, L)`` (from -> to) and
  ``end (L)``, with forbidden moves already set to ``-inf`` (or a large negative number such as
  -1e4, whose ``exp`` is 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .ml import crf
from .tags import Span

DIRECTIONS = ("forward", "backward")
LSTM_GATES = ("input", "forget", "candidate", "output")
GRU_GATES = ("reset", "update", "candidate")


# --------------------------------------------------------------------------------------------
# RNN internals
# --------------------------------------------------------------------------------------------


@dataclass
class DirectionTrace:
    """Everything one direction of one layer computed, each (batch, time, width), 0 on padding.

    LSTM: ``input``, ``forget``, ``candidate`` (g), ``output`` gates, ``cell`` (c_t),
    ``cell_output`` (o_t * tanh(c_t), before any projection) and ``hidden`` (h_t, projected when
    the LSTM has ``proj_size``). GRU: ``reset``, ``update``, ``candidate`` (n_t) and ``hidden``.
    Time index t is the token position in both directions: the backward direction's value at t is
    its state after reading tokens len-1 .. t.
    """

    layer: int
    direction: str
    values: Dict[str, Tensor]

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]


@dataclass
class RNNInternals:
    cell: str  # "lstm" or "gru"
    lengths: Tensor  # (batch,)
    mask: Tensor  # (batch, time), True on real tokens
    traces: List[DirectionTrace]
    output: Tensor  # (batch, time, directions * width): the last layer's output, as the module gives it

    def trace(self, layer: int, direction: str = "forward") -> DirectionTrace:
        for item in self.traces:
            if item.layer == layer and item.direction == direction:
                return item
        raise KeyError(f"no trace for layer {layer}, direction {direction!r}")


def _as_padded(rnn: nn.RNNBase, x: Union[Tensor, PackedSequence], lengths: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Any accepted input -> (padded batch-first (B, T, n_in), lengths (B,) on CPU)."""
    if isinstance(x, PackedSequence):
        padded, lens = pad_packed_sequence(x, batch_first=True)
        return padded, lens
    if x.dim() == 2:  # one unbatched sequence (T, n_in)
        x = x.unsqueeze(0)
    elif not rnn.batch_first:
        x = x.transpose(0, 1)
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    return x[:, : int(lengths.max())], lengths


def _one_layer(rnn: nn.RNNBase, layer: int, n_in: int) -> nn.RNNBase:
    """A one-layer copy of `rnn` whose parameters ARE layer `layer`'s (shared, not copied)."""
    kind = nn.LSTM if isinstance(rnn, nn.LSTM) else nn.GRU
    kwargs = dict(proj_size=rnn.proj_size) if kind is nn.LSTM else {}
    # Built on the meta device: its own parameters are replaced at once, so none are allocated.
    single = kind(n_in, rnn.hidden_size, num_layers=1, bias=rnn.bias, batch_first=True,
                  bidirectional=rnn.bidirectional, device="meta", **kwargs)
    for name in single._flat_weights_names:
        setattr(single, name, getattr(rnn, name.replace("_l0", f"_l{layer}")))
    return single.train(False)  # inter-layer dropout is not part of one layer


def _run_layer(single: nn.RNNBase, x: Tensor, lengths: Tensor) -> Tensor:
    """The fused layer's outputs (B, T, D*H_out), zeros past each sequence's end."""
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = single(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def _previous_states(h: Tensor, backward: bool) -> Tensor:
    """h_{t-1} for the forward direction, h_{t+1} for the backward one; zeros where it starts.

    Padded outputs are zero past each end, so shifting left gives the backward direction its
    zero initial state at t = len - 1 for free.
    """
    zero = h.new_zeros(h[:, :1].shape)
    if backward:
        return torch.cat([h[:, 1:], zero], dim=1)
    return torch.cat([zero, h[:, :-1]], dim=1)


def _linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """c_t = a_t * c_{t-1} + b_t along dim 1 with c_{-1} = 0, by a Hillis-Steele parallel scan.

    log2(T) vectorised steps instead of T sequential ones. It only multiplies and adds (no
    division, no logs), so it is exact up to float rounding, like the recurrence itself: the pair
    (a, b) stands for the map c -> a*c + b, and maps compose associatively.
    """
    offset, length = 1, a.shape[1]
    while offset < length:
        b = torch.cat([b[:, :offset], torch.addcmul(b[:, offset:], a[:, offset:], b[:, :-offset])], dim=1)
        if 2 * offset < length:  # the last round needs no products of a
            a = torch.cat([a[:, :offset], a[:, offset:] * a[:, :-offset]], dim=1)
        offset *= 2
    return b


def _reverse_each(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse every sequence within its own length (padding stays past the end)."""
    T = x.shape[1]
    t = torch.arange(T, device=x.device)[None, :]
    lens = lengths.to(x.device)[:, None]
    index = torch.where(t < lens, lens - 1 - t, t)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def _lstm_cells(f: Tensor, i: Tensor, g: Tensor, mask: Tensor, lengths: Tensor, backward: bool) -> Tensor:
    """All c_t of one direction from its gates (see _linear_scan), in float64 to keep rounding small."""
    m = mask.unsqueeze(-1).to(torch.float64)
    a, b = f.double() * m, (i.double() * g.double()) * m  # padding: c = 0
    if backward:
        a, b = _reverse_each(a, lengths), _reverse_each(b, lengths)
    c = _linear_scan(a, b)
    if backward:
        c = _reverse_each(c, lengths)
    return c.to(f.dtype)


def _lstm_direction(p: Dict[str, Tensor], x: Tensor, h: Tensor, mask: Tensor, lengths: Tensor, backward: bool) -> Dict[str, Tensor]:
    h_prev = _previous_states(h, backward)
    # One matmul over every time step: [x_t, h_{t-1}] @ [W_ih, W_hh]^T.
    weight = torch.cat([p["weight_ih"], p["weight_hh"]], dim=1)
    pre = torch.cat([x, h_prev], dim=-1) @ weight.T
    if "bias_ih" in p:
        pre = pre + p["bias_ih"] + p["bias_hh"]
    i, f, g, o = pre.chunk(4, dim=-1)  # torch's gate order
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = _lstm_cells(f, i, g, mask, lengths, backward)
    m = mask.unsqueeze(-1).to(x.dtype)
    values = {"input": i * m, "forget": f * m, "candidate": g * m, "output": o * m, "cell": c}
    values["cell_output"] = o * torch.tanh(c) * m
    values["hidden"] = h
    return values


def _gru_direction(p: Dict[str, Tensor], x: Tensor, h: Tensor, mask: Tensor, backward: bool) -> Dict[str, Tensor]:
    h_prev = _previous_states(h, backward)
    # The reset gate multiplies W_hn h + b_hn only, so input and hidden parts stay apart.
    gi = x @ p["weight_ih"].T
    gh = h_prev @ p["weight_hh"].T
    if "bias_ih" in p:
        gi, gh = gi + p["bias_ih"], gh + p["bias_hh"]
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    m = mask.unsqueeze(-1).to(x.dtype)
    return {"reset": r * m, "update": z * m, "candidate": n * m, "hidden": h}


def _direction_params(single: nn.RNNBase, backward: bool) -> Dict[str, Tensor]:
    suffix = "_l0_reverse" if backward else "_l0"
    return {name[: -len(suffix)]: getattr(single, name) for name in single._flat_weights_names if name.endswith(suffix)}


def rnn_internals(
    rnn: Union[nn.LSTM, nn.GRU],
    x: Union[Tensor, PackedSequence],
    lengths: Optional[Tensor] = None,
) -> RNNInternals:
    """Gates, candidates, cells and hidden states of every layer and direction of a fused RNN.

    `x` is one sequence (T, n_in), a padded batch (batch-first if ``rnn.batch_first``, else
    (T, B, n_in)) with optional `lengths`, or a PackedSequence. Initial states are zero, and
    inter-layer dropout is off (the eval-mode network).

    Exact by construction: each layer runs as torch's own fused one-layer RNN with the module's
    weights (shared, not copied), giving every h_t; then all gate pre-activations of a direction
    come from one matmul over the whole sequence with the h_{t-1} that the fused layer produced.
    LSTM cells c_t = f_t*c_{t-1} + i_t*g_t come from a parallel prefix scan (log2 T vectorised
    steps, multiply-add only, float64), not from dividing cumulative products, which is unstable
    when forget gates are near 0. There is no Python loop over time steps.
    """
    if not isinstance(rnn, (nn.LSTM, nn.GRU)):
        raise TypeError(f"rnn_internals takes nn.LSTM or nn.GRU, not {type(rnn).__name__}")
    padded, lengths = _as_padded(rnn, x, lengths)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    mask = mask.to(padded.device)
    is_lstm = isinstance(rnn, nn.LSTM)
    n_dir = 2 if rnn.bidirectional else 1
    traces: List[DirectionTrace] = []
    layer_in = padded
    for layer in range(rnn.num_layers):
        single = _one_layer(rnn, layer, layer_in.shape[-1])
        out = _run_layer(single, layer_in, lengths)
        for d, h in enumerate(out.chunk(n_dir, dim=-1)):
            p = _direction_params(single, backward=d == 1)
            values = (_lstm_direction(p, layer_in, h, mask, lengths, d == 1) if is_lstm
                      else _gru_direction(p, layer_in, h, mask, d == 1))
            traces.append(DirectionTrace(layer, DIRECTIONS[d], values))
        layer_in = out
    return RNNInternals("lstm" if is_lstm else "gru", lengths, mask, traces, layer_in)


def gate_saturation(internals: RNNInternals, low: float = 0.1, high: float = 0.9) -> List[Dict[str, object]]:
    """Per layer, direction and gate: the share of gate values (over real tokens and units) below
    `low` and above `high`. Rows are dicts: layer, direction, gate, low, high, n."""
    gates = LSTM_GATES[:2] + LSTM_GATES[3:] if internals.cell == "lstm" else GRU_GATES[:2]  # sigmoid gates only
    rows: List[Dict[str, object]] = []
    for trace in internals.traces:
        for gate in gates:
            values = trace[gate][internals.mask]
            n = values.numel()
            rows.append({
                "layer": trace.layer, "direction": trace.direction, "gate": gate,
                "low": float((values < low).sum()) / max(n, 1), "high": float((values > high).sum()) / max(n, 1), "n": n,
            })
    return rows


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


def attention_weights(mha: nn.MultiheadAttention, x: Tensor, padding: Optional[Tensor] = None) -> Tensor:
    """Self-attention weights per head, (batch, heads, query, key), rows of padded queries zeroed.

    `x` is (T, E) or a batch laid out as `mha.batch_first` says; `padding` (batch, T) is True on
    padding (torch's key_padding_mask). Dropout is switched off for the call (the returned weights
    would otherwise be the dropped-out ones), then the module's mode is restored.
    """
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(0 if mha.batch_first else 1)
        padding = None if padding is None else padding.reshape(1, -1)
    was_training = mha.training
    mha.train(False)
    try:
        _, weights = mha(x, x, x, key_padding_mask=padding, need_weights=True, average_attn_weights=False)
    finally:
        mha.train(was_training)
    if padding is not None:
        weights = weights.masked_fill(padding[:, None, :, None], 0.0)
    return weights


# --------------------------------------------------------------------------------------------
# CRF: marginals, span probabilities, n-best
# --------------------------------------------------------------------------------------------


# The CRF maths lives in `ml.crf`; these names are what this module has always exported.
crf_log_partition = crf.log_partition
crf_marginals = crf.marginals
chunk_tags = crf.chunk_tags
span_marginals = crf.span_marginals
viterbi_nbest = crf.viterbi_nbest
path_log_scores = crf.path_scores
scale_scores = crf.scale_scores


def softmax_marginals(emissions: Tensor, mask: Tensor) -> Tensor:
    """Per-token tag probabilities of a softmax (non-CRF) decoder, (batch, time, n_tags), 0 on padding."""
    probs = torch.softmax(emissions, dim=-1)
    return probs * mask.unsqueeze(-1).to(probs.dtype)


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


@dataclass
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_confidence: float  # NaN when empty
    accuracy: float  # NaN when empty


def _bin_index(confidences: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins are [k/n, (k+1)/n) with 1.0 in the last one.
    return np.minimum((confidences * n_bins).astype(int), n_bins - 1)


def reliability_table(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> List[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1] with each bin's count, mean confidence and accuracy."""
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape:
        raise ValueError(f"{conf.shape[0]} confidences but {ok.shape[0]} correctness flags")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    which = _bin_index(conf, n_bins)
    table = []
    for k in range(n_bins):
        sel = which == k
        n = int(sel.sum())
        table.append(ReliabilityBin(k / n_bins, (k + 1) / n_bins, n,
                                    float(conf[sel].mean()) if n else math.nan, float(ok[sel].mean()) if n else math.nan))
    return table


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|; 0.0 for no items."""
    table = reliability_table(confidences, correct, n_bins)
    total = sum(b.count for b in table)
    if not total:
        return 0.0
    return float(sum(b.count / total * abs(b.accuracy - b.mean_confidence) for b in table if b.count))


def entity_calibration_pairs(
    predicted: Sequence[Sequence[Tuple[int, int, str, float]]], gold: Sequence[Sequence[Span]]
) -> Tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per predicted entity: correct = the same (start, end, label) is gold.

    Per doc, predicted entities are (start, end, label, confidence). Missed gold entities have no
    confidence, so they do not enter the ECE (it measures precision-side calibration).
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted docs but {len(gold)} gold docs")
    conf, ok = [], []
    for pred_doc, gold_doc in zip(predicted, gold):
        gold_set = {(s, e, label) for s, e, label in gold_doc}
        for s, e, label, c in pred_doc:
            conf.append(c)
            ok.append((s, e, label) in gold_set)
    return np.asarray(conf, dtype=np.float64), np.asarray(ok, dtype=bool)


def gold_nll(
    emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor, gold: Tensor, temperature: float = 1.0
) -> float:
    """Summed negative log-likelihood of complete gold paths (batch, time) at a temperature."""
    em, st, tr, en = scale_scores(emissions, start, transitions, end, temperature)
    log_z = crf_log_partition(em, mask, st, tr, en)
    return float((log_z - path_log_scores(em, mask, st, tr, en, gold)).sum())


def fit_temperature(
    emissions: Tensor,
    mask: Tensor,
    start: Tensor,
    transitions: Tensor,
    end: Tensor,
    gold: Tensor,
    bounds: Tuple[float, float] = (0.05, 20.0),
    tol: float = 1e-4,
) -> float:
    """The temperature T > 0 minimising the gold-path NLL on (dev) data, all path scores / T.

    With beta = 1/T the NLL is log Z(beta) - beta * score(gold): log-sum-exp of functions linear
    in beta minus a linear term, so it is convex in beta, and a golden-section search over beta
    in [1/bounds[1], 1/bounds[0]] finds the minimum to `tol`. Gold paths must be complete and
    legal (a forbidden gold move gives infinite NLL at every T).
    """
    with torch.no_grad():
        def nll(beta: float) -> float:
            return gold_nll(emissions, mask, start, transitions, end, gold, 1.0 / beta)

        lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
        ratio = (math.sqrt(5) - 1) / 2
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fa, fb = nll(a), nll(b)
        while hi - lo > tol:
            if fa < fb:  # minimum left of b
                hi, b, fb = b, a, fa
                a = hi - ratio * (hi - lo)
                fa = nll(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + ratio * (hi - lo)
                fb = nll(b)
        return 1.0 / ((lo + hi) / 2)
