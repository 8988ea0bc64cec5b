"""The encoder layer: token vectors -> stacked BiLSTM/GRU (+ self-attention) -> per-tag scores.

As a thinc layer it is a `Model[List[Floats2d], List[Floats2d]]`: token
vectors per doc in, emission scores per doc out. Long docs run as overlapping
windows (see windows.py); inference goes through length-sorted chunks of
bounded size, so a 100,000-token doc needs no more memory than a batch.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from thinc.api import Model, torch2xp, xp2torch
from thinc.types import Floats2d
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..errors import ConfigError
from .precision import inference_module
from .shim import get_module, make_shim, module_device, run, set_module, torch_module
from .windows import CUTS, Segment, plan_chunks, plan_windows

CELLS = ("lstm", "gru")


class BiRNN(nn.Module):
    """torch's fused multi-layer bidirectional RNN over packed sequences (no Python time loop)."""

    def __init__(self, cell: str, n_in: int, hidden: int, layers: int, proj: int) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"cell must be one of {', '.join(CELLS)}, not {cell!r}")
        if proj and cell != "lstm":
            raise ConfigError("proj_size needs cell = 'lstm': torch's GRU has no projection")
        if proj and proj >= hidden:
            raise ConfigError(f"proj_size ({proj}) must be smaller than hidden_size ({hidden})")
        kwargs = dict(input_size=n_in, hidden_size=hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.rnn = nn.LSTM(proj_size=proj, **kwargs) if cell == "lstm" else nn.GRU(**kwargs)
        self.width = 2 * (proj or hidden)
        if cell == "lstm":
            self._forget_bias_one(hidden)

    def _forget_bias_one(self, hidden: int) -> None:
        # Gates are laid out (input, forget, cell, output); the two biases add up, so
        # setting one to 1 and the other to 0 starts every cell remembering.
        for name, bias in self.rnn.named_parameters():
            if name.startswith("bias_"):
                with torch.no_grad():
                    bias.zero_()
                    if name.startswith("bias_ih"):
                        bias[hidden : 2 * hidden] = 1.0

    def forward(self, packed: PackedSequence, dropout: float) -> PackedSequence:
        self.rnn.dropout = dropout if self.rnn.num_layers > 1 else 0.0
        return self.rnn(packed)[0]


class SelfAttentionBlock(nn.Module):
    """Multi-head self-attention over the real tokens, with a residual connection and layer norm."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"attention_heads ({heads}) must divide the BiRNN output width ({width})")
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, padding: torch.Tensor, dropout: float) -> torch.Tensor:
        self.attention.dropout = dropout
        attended, _ = self.attention(x, x, x, key_padding_mask=padding, need_weights=False)
        return self.norm(x + nn.functional.dropout(attended, dropout, self.training))


class Packing:
    """Where each token of a flat, sequence-by-sequence token list sits in torch's packed layout.

    Building the PackedSequence by one gather from the flat tokens (and gathering
    results straight back) avoids padded (batch, time, width) copies of the wide
    BiRNN input and output, which dominated the training profile.
    """

    def __init__(self, lengths: np.ndarray, device: torch.device) -> None:
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        self.n_seq, self.max_len = len(lengths), int(sorted_lengths[0])
        batch_sizes = (sorted_lengths[None, :] > np.arange(self.max_len)[:, None]).sum(axis=1)
        time_idx = np.repeat(np.arange(self.max_len), batch_sizes)
        rank = np.arange(len(time_idx)) - np.repeat(np.cumsum(batch_sizes) - batch_sizes, batch_sizes)
        seq_idx = order[rank]
        starts = np.cumsum(lengths) - lengths
        flat_index = starts[seq_idx] + time_idx

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.flat_index = tensor(flat_index)
        self.unpack_index = tensor(np.argsort(flat_index))  # packed rows -> flat order
        self.seq_idx, self.time_idx = tensor(seq_idx), tensor(time_idx)
        self.batch_sizes = torch.from_numpy(batch_sizes)  # torch wants these on the CPU
        self.sorted_indices = tensor(order)
        self.unsorted_indices = tensor(np.argsort(order))
        self.device = device

    def pack(self, flat: torch.Tensor) -> PackedSequence:
        return PackedSequence(flat[self.flat_index], self.batch_sizes, self.sorted_indices, self.unsorted_indices)

    def pad(self, data: torch.Tensor) -> torch.Tensor:
        """Packed rows -> (batch, time, width), zeros past each sequence's end."""
        padded = data.new_zeros(self.n_seq, self.max_len, data.shape[1])
        padded[self.seq_idx, self.time_idx] = data
        return padded

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(batch, time, width) -> packed rows."""
        return padded[self.seq_idx, self.time_idx]

    def mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_seq, self.max_len, dtype=torch.bool, device=self.device)
        mask[self.seq_idx, self.time_idx] = True
        return mask


class Encoder(nn.Module):
    def __init__(self, cell: str, n_in: int, hidden: int, layers: int, proj: int, heads: int, attention_layers: int) -> None:
        super().__init__()
        self.rnn = BiRNN(cell, n_in, hidden, layers, proj)
        self.width = self.rnn.width
        self.attention = nn.ModuleList(SelfAttentionBlock(self.width, heads) for _ in range(attention_layers if heads else 0))

    def forward(self, packed: PackedSequence, packing: Packing, mask: torch.Tensor, dropout: float) -> torch.Tensor:
        """Hidden states: packed rows (n_tokens, width) without attention, else padded (batch, time, width)."""
        h = self.rnn(packed, dropout).data
        if not self.attention:
            return h
        h = packing.pad(h)
        for block in self.attention:
            h = block(h, ~mask, dropout)
        return h


@torch_module
class TaggerEncoder(nn.Module):
    """Input dropout, the BiRNN (+ attention), dropout and a linear layer to one score per tag."""

    def __init__(
        self, n_in: int, cell: str, hidden_size: int, num_layers: int, proj_size: int,
        attention_heads: int, attention_layers: int, n_tags: int,
    ) -> None:
        super().__init__()
        self.spec = dict(
            n_in=n_in, cell=cell, hidden_size=hidden_size, num_layers=num_layers, proj_size=proj_size,
            attention_heads=attention_heads, attention_layers=attention_layers, n_tags=n_tags,
        )
        self.encoder = Encoder(cell, n_in, hidden_size, num_layers, proj_size, attention_heads, attention_layers)
        self.output = nn.Linear(self.encoder.width, n_tags)

    def forward(self, x: torch.Tensor, index: Optional[torch.Tensor], lengths: np.ndarray, dropout: float) -> torch.Tensor:
        """Scores for the rows `index` of `x` (None: all rows), read as sequences of `lengths`, in that order."""
        packing = Packing(lengths, x.device)
        flat = nn.functional.dropout(x if index is None else x[index], dropout, self.training)
        hidden = self.encoder(packing.pack(flat), packing, packing.mask(), dropout)
        if self.encoder.attention:
            hidden = packing.unpad(hidden)
        scores = self.output(nn.functional.dropout(hidden, dropout, self.training))
        return scores[packing.unpack_index]


def encoder_parts(model: Model) -> Tuple[nn.RNNBase, List[SelfAttentionBlock]]:
    """The encoder layer's fused nn.LSTM/nn.GRU and its self-attention blocks (in order, each fed
    the previous one's output, the first fed the BiRNN's), for introspection."""
    encoder = get_module(model).encoder
    return encoder.rnn.rnn, list(encoder.attention)


def _lengths(chunk) -> np.ndarray:
    return np.asarray([e - s for _, s, e in chunk], dtype=np.int64)


def _o_margin(scores: torch.Tensor) -> np.ndarray:
    """Per row, how much surer tag 0 ("O") is than any other tag (there are at least two tags)."""
    with torch.no_grad():
        margin = scores[:, 0] - scores[:, 1:].max(dim=1).values
    return margin.cpu().numpy()


EncoderInput = Union[List[Floats2d], Tuple[List[Floats2d], List[Optional[np.ndarray]]]]


def encoder_forward(model: Model, X: EncoderInput, is_train: bool) -> Tuple[List[Floats2d], Callable]:
    """X: token vectors per doc, optionally with each doc's sentence starts (None: unknown)."""
    X, sent_starts = X if isinstance(X, tuple) else (X, None)
    lengths = [len(x) for x in X]
    n_tags = model.get_dim("nO")
    if not sum(lengths):
        return [model.ops.alloc2f(0, n_tags) for _ in X], lambda dY: [model.ops.alloc2f(*x.shape) for x in X]
    # Inference may run an int8 copy of the module (the layer's precision); training the module itself.
    module = get_module(model) if is_train else inference_module(model, get_module(model))
    device = module_device(module)
    windows = plan_windows(lengths, model.attrs["window"], model.attrs["window_overlap"], sent_starts)
    stitched = windows.stitched
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    x = xp2torch(model.ops.flatten(X), requires_grad=is_train, device=device)
    dropout = model.attrs["dropout_rate"] if is_train else 0.0

    def index(chunk) -> torch.Tensor:
        return torch.from_numpy(windows.gather_index(offsets, chunk)).to(device)

    def score(segments: List[Segment], whole_docs: bool = False) -> torch.Tensor:
        """Scores of `segments`, concatenated in their order."""
        if is_train:
            # Whole docs in order are exactly the rows of x: no gather (and no scatter in backward).
            return module(x, None if whole_docs else index(segments), _lengths(segments), dropout)
        # Inference: bounded chunks, each segment's rows put back at its place in segment order.
        seg_starts = np.concatenate([[0], np.cumsum(_lengths(segments))])
        out = x.new_empty(int(seg_starts[-1]), n_tags)
        for chunk_ids in plan_chunks(segments, model.attrs["max_batch_tokens"]):
            chunk = [segments[i] for i in chunk_ids]
            rows = np.concatenate([np.arange(seg_starts[i], seg_starts[i + 1]) for i in chunk_ids])
            out[torch.from_numpy(rows).to(device)] = module(x, index(chunk), _lengths(chunk), 0.0).to(out.dtype)
        return out

    def stitch() -> torch.Tensor:
        scores = score(windows.segments, whole_docs=not stitched)
        if not stitched:
            return scores
        take = windows.take()
        if model.attrs["window_cut"] == "anchored" and windows.overlapped and n_tags > 1:
            pieces, take = windows.anchored(take, _o_margin(scores[torch.from_numpy(take).to(device)]))
            scores = torch.cat([scores, score(pieces)])
        return scores[torch.from_numpy(take).to(device)]

    scores = run(model, is_train, stitch)
    Y = model.ops.unflatten(torch2xp(scores, ops=model.ops), model.ops.asarray1i(lengths))

    def backprop(dY: List[Floats2d]) -> List[Floats2d]:
        torch.autograd.backward(scores, grad_tensors=xp2torch(model.ops.flatten(dY), device=device))
        return model.ops.unflatten(torch2xp(x.grad, ops=model.ops), model.ops.asarray1i(lengths))

    return Y, backprop


def encoder_init(model: Model, X: Optional[List[Floats2d]] = None, Y=None) -> Model:
    n_in, n_tags = model.get_dim("nI"), model.get_dim("nO")
    if n_in is None and X:
        n_in = X[0].shape[1]
    if n_in is None or n_tags is None:
        raise ConfigError("bilstm_tagger: the encoder's input width and number of tags must be known at initialize")
    spec = {**model.attrs["spec"], "n_in": n_in, "n_tags": n_tags}
    module = TaggerEncoder(**spec)
    model.attrs["spec"] = module.spec
    model.set_dim("nI", n_in, force=True)
    set_module(model, module)
    return model


def build_encoder(
    cell: str, hidden_size: int, num_layers: int, proj_size: int, attention_heads: int, attention_layers: int,
    dropout: float, window: int, max_batch_tokens: int, nI: Optional[int] = None, nO: Optional[int] = None,
    window_overlap: Optional[int] = None, window_cut: str = "anchored",
) -> Model[EncoderInput, List[Floats2d]]:
    if window < 1 or max_batch_tokens < window:
        raise ConfigError(f"need 1 <= window ({window}) <= max_batch_tokens ({max_batch_tokens})")
    window_overlap = window // 4 if window_overlap is None else window_overlap
    if not 0 <= window_overlap < window:
        raise ConfigError(f"need 0 <= window_overlap ({window_overlap}) < window ({window})")
    if window_cut not in CUTS:
        raise ConfigError(f"window_cut must be one of {', '.join(CUTS)}, not {window_cut!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("dropout must lie in [0, 1)")
    # Validate the encoder settings now, not after an hour of data loading.
    Encoder(cell, 8, hidden_size, num_layers, proj_size, attention_heads, attention_layers)
    spec = dict(
        n_in=nI, cell=cell, hidden_size=hidden_size, num_layers=num_layers, proj_size=proj_size,
        attention_heads=attention_heads, attention_layers=attention_layers, n_tags=nO,
    )
    return Model(
        "birnn_encoder",
        encoder_forward,
        init=encoder_init,
        dims={"nI": nI, "nO": nO},
        attrs={
            "spec": spec, "dropout_rate": dropout, "window": window, "max_batch_tokens": max_batch_tokens,
            "window_overlap": window_overlap, "window_cut": window_cut,
        },
        shims=[make_shim()],
    )
