"""Contextual encoder: a stacked bidirectional LSTM/GRU, optionally topped by self-attention."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, dropout: float) -> torch.Tensor:
        self.rnn.dropout = dropout if self.rnn.num_layers > 1 else 0.0
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


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


class Encoder(nn.Module):
    def __init__(self, cell: str, n_in: int, hidden: int, layers: int, proj: int, heads: int, attention_layers: int) -> None:
        super().__init__()
        self.rnn = BiRNN(cell, n_in, hidden, layers, proj)
        self.width = self.rnn.width
        self.attention = nn.ModuleList(SelfAttentionBlock(self.width, heads) for _ in range(attention_layers if heads else 0))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor, dropout: float) -> torch.Tensor:
        h = self.rnn(x, lengths, dropout)
        padding = ~mask
        for block in self.attention:
            h = block(h, padding, dropout)
        return h
