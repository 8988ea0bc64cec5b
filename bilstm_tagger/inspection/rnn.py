"""Look inside a trained tagger's network: exact RNN gates and cells, and attention weights.

Pure functions over tensors and torch modules (torch only), so the pipe can call them on whatever
network it holds. Sequences are batch-first and padded, with a boolean ``mask`` (batch, time)
that is True on real tokens and a prefix of each row (every sequence has at least one token).
Calibration (reliability, ECE, the temperature fit) is in `inspection/calibration.py`; the CRF
maths in `ml/crf.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


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
