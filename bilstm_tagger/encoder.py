"""Contextual encoder: a stacked bidirectional LSTM/GRU, optionally topped by self-attention."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

CELLS = ("lstm", "gru")


class BiRNN(nn.Module):
    """torch's fused multi-layer bidirectional RNN over packed sequences (no Python time loop)."""

    def __init__(self, cell: str, n_in: int, hidden: int, layers: int, proj: int) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {cell!r}")
        if proj and cell != "lstm":
            raise ValueError("proj_size needs cell = 'lstm': torch's GRU has no projection")
        if proj and proj >= hidden:
            raise ValueError(f"proj_size ({proj}) must be smaller than hidden_size ({hidden})")
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
            raise ValueError(f"attention_heads ({heads}) must divide the BiRNN output width ({width})")
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, padding: torch.Tensor, dropout: float) -> torch.Tensor:
        self.attention.dropout = dropout
        attended, _ = self.attention(x, x, x, key_padding_mask=padding, need_weights=False)
        return self.norm(x + nn.functional.dropout(attended, dropout, self.training))


class Packing:
    """Where each token of a flat, sequence-by-sequence token list sits in torch's packed layout.

    Building the PackedSequence by one gather from the flat tokens (and scattering
    results straight back) avoids padded (batch, time, width) copies of the wide
    BiRNN input and output, which dominated the training profile.
    """

    def __init__(self, lengths: np.ndarray) -> None:
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        self.n_seq, self.max_len = len(lengths), int(sorted_lengths[0])
        batch_sizes = (sorted_lengths[None, :] > np.arange(self.max_len)[:, None]).sum(axis=1)
        time_idx = np.repeat(np.arange(self.max_len), batch_sizes)
        rank = np.arange(len(time_idx)) - np.repeat(np.cumsum(batch_sizes) - batch_sizes, batch_sizes)
        seq_idx = order[rank]
        starts = np.cumsum(lengths) - lengths
        self.flat_index = torch.from_numpy(starts[seq_idx] + time_idx)
        self.seq_idx, self.time_idx = torch.from_numpy(seq_idx), torch.from_numpy(time_idx)
        self.batch_sizes = torch.from_numpy(batch_sizes)
        self.sorted_indices = torch.from_numpy(order)
        self.unsorted_indices = torch.from_numpy(np.argsort(order))

    def pack(self, flat: torch.Tensor) -> PackedSequence:
        return PackedSequence(flat[self.flat_index], self.batch_sizes, self.sorted_indices, self.unsorted_indices)

    def pad(self, data: torch.Tensor) -> torch.Tensor:
        """Packed rows -> (batch, time, width), zeros past each sequence's end."""
        padded = data.new_zeros(self.n_seq, self.max_len, data.shape[1])
        padded[self.seq_idx, self.time_idx] = data
        return padded

    def mask(self) -> torch.Tensor:
        mask = torch.zeros(self.n_seq, self.max_len, dtype=torch.bool)
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
