"""Token features: hash embeddings of lexical attributes, a character CNN, static vectors.

Featurisation (Docs -> integer arrays) runs in numpy and spaCy's Cython code;
the embedding module (arrays -> vectors) runs in torch. Hashing the attribute
values, as spaCy's MultiHashEmbed does, means no vocabulary file is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.attrs import IDS as ATTR_IDS
from spacy.attrs import ORTH
from spacy.tokens import Doc
from thinc.api import NumpyOps
from torch import nn
from torch.nn import functional as F

_OPS = NumpyOps()
_CHAR_PAD = 255  # never a byte of valid UTF-8
N_CHAR_ROWS = 256


def attr_ids(names: Sequence[str]) -> List[int]:
    unknown = [name for name in names if name.upper() not in ATTR_IDS]
    if unknown:
        raise ValueError(f"Unknown spaCy token attribute(s) for hash embeddings: {', '.join(unknown)}")
    return [ATTR_IDS[name.upper()] for name in names]


@dataclass
class TokenArrays:
    """Integer features for a run of tokens, one row per token."""

    hash_rows: np.ndarray  # (n_tokens, n_attrs, 4) int64 rows into each attribute's table
    chars: np.ndarray  # (n_tokens, max_chars) uint8, natural order, 255-padded
    vector_rows: Optional[np.ndarray]  # (n_tokens,) int64, -1 where the vocab has no vector

    def take(self, index: np.ndarray) -> "TokenArrays":
        rows = None if self.vector_rows is None else self.vector_rows[index]
        return TokenArrays(self.hash_rows[index], self.chars[index], rows)


class _CharRows:
    """UTF-8 bytes of each distinct word, cached by its ORTH hash (the same in every vocab).

    Words longer than `width` bytes keep their first and last bytes, so the CNN
    still sees the prefix and the suffix of a 10,000-character token. Lone
    surrogates, which spaCy accepts in text, are encoded rather than rejected.
    """

    def __init__(self, max_entries: int = 500_000) -> None:
        self.max_entries = max_entries
        self.rows: Dict[Tuple[int, int], np.ndarray] = {}

    def _encode(self, text: str, width: int) -> np.ndarray:
        data = text.encode("utf8", "surrogatepass")
        if len(data) > width:
            data = data[: (width + 1) // 2] + data[len(data) - width // 2 :]
        row = np.full(width, _CHAR_PAD, dtype=np.uint8)
        row[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        return row

    def __call__(self, orths: np.ndarray, strings, width: int) -> np.ndarray:
        unique, inverse = np.unique(orths, return_inverse=True)
        if len(self.rows) + len(unique) > self.max_entries:
            self.rows.clear()  # bounded memory over millions of documents
        table = np.empty((len(unique), width), dtype=np.uint8)
        for i, key in enumerate(unique.tolist()):
            row = self.rows.get((key, width))
            if row is None:
                row = self.rows[(key, width)] = self._encode(strings[key], width)
            table[i] = row
        return table[inverse.reshape(-1)]


char_rows = _CharRows()


def featurize(
    docs: Sequence[Doc],
    attrs: Sequence[int],
    rows: Sequence[int],
    max_chars: int,
    vectors_attr: Optional[int],
) -> TokenArrays:
    """Integer features for all tokens of `docs`, concatenated in order."""
    docs = [doc for doc in docs if len(doc)]
    if not docs:
        empty_vec = None if vectors_attr is None else np.zeros((0,), dtype=np.int64)
        return TokenArrays(np.zeros((0, len(attrs), 4), np.int64), np.zeros((0, max_chars), np.uint8), empty_vec)
    n_tokens = sum(len(doc) for doc in docs)
    hashed = np.zeros((n_tokens, len(attrs), 4), dtype=np.int64)
    if attrs:
        keys = np.concatenate([doc.to_array(list(attrs)).reshape(len(doc), len(attrs)) for doc in docs]).astype(np.uint64)
        for i, n_rows in enumerate(rows):
            hashed[:, i] = _OPS.hash(np.ascontiguousarray(keys[:, i]), i).astype(np.int64) % n_rows
    chars = np.zeros((n_tokens, 0), np.uint8)
    if max_chars:
        orths = np.concatenate([doc.to_array(ORTH) for doc in docs]).astype(np.uint64)
        chars = char_rows(orths, docs[0].vocab.strings, max_chars)
    vector_rows = None
    if vectors_attr is not None:
        vectors = docs[0].vocab.vectors
        ids = np.concatenate([doc.to_array(vectors_attr) for doc in docs]).astype(np.uint64)
        vector_rows = np.asarray(vectors.find(keys=ids), dtype=np.int64)
    return TokenArrays(hashed, chars, vector_rows)


class CharCNN(nn.Module):
    """Byte embeddings, one convolution, max-pooled over the real bytes of each token."""

    def __init__(self, embed: int, width: int, kernel: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(N_CHAR_ROWS, embed, padding_idx=_CHAR_PAD)
        self.conv = nn.Conv1d(embed, width, kernel, padding=kernel // 2)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        # Text repeats words a lot: convolve each distinct spelling once, then copy rows back.
        distinct, inverse = torch.unique(chars, dim=0, return_inverse=True)
        return self._encode(distinct)[inverse]

    def _encode(self, chars: torch.Tensor) -> torch.Tensor:
        x = self.embed(chars.long()).transpose(1, 2)  # (n, embed, max_chars)
        h = self.conv(x)[:, :, : chars.shape[1]]
        pad = (chars == _CHAR_PAD).unsqueeze(1)
        # An empty string has only padding: its pooled value is 0, not -inf.
        return h.masked_fill(pad, float("-inf")).amax(dim=2).clamp(min=-1e4).masked_fill(pad.all(2), 0.0)


class TokenEmbedder(nn.Module):
    """Concatenates hash embeddings, char-CNN features and (frozen) static vectors."""

    def __init__(
        self, rows: Sequence[int], widths: Sequence[int], char_embed: int, char_width: int, char_kernel: int, vectors_width: int
    ) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.EmbeddingBag(n, w, mode="sum") for n, w in zip(rows, widths))
        for table in self.tables:
            nn.init.uniform_(table.weight, -0.1, 0.1)
        self.chars = CharCNN(char_embed, char_width, char_kernel) if char_width else None
        self.vectors_width = vectors_width
        self.width = sum(widths) + char_width + vectors_width

    def forward(
        self, hash_rows: torch.Tensor, chars: torch.Tensor, vector_rows: Optional[torch.Tensor], vectors: Optional[torch.Tensor], word_dropout: float
    ) -> torch.Tensor:
        parts = [table(hash_rows[:, i]) for i, table in enumerate(self.tables)]
        if word_dropout > 0 and self.tables:
            # Drop the first attribute (the word itself) so the model learns to use context and characters.
            keep = torch.rand(parts[0].shape[0], 1, device=parts[0].device) >= word_dropout
            parts[0] = parts[0] * keep
        if self.chars is not None:
            parts.append(self.chars(chars))
        if self.vectors_width:
            found = vector_rows >= 0
            static = F.embedding(vector_rows.clamp(min=0), vectors) * found.unsqueeze(1)
            parts.append(static)
        return torch.cat(parts, dim=1)
