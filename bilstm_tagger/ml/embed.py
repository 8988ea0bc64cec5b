"""`bilstm_tagger.HashCharEmbed.v1`: hash embeddings of lexical attributes, a byte CNN, static vectors.

Featurisation (Docs -> integer arrays) runs in numpy and spaCy's Cython code;
the embedding module (arrays -> vectors) runs in torch. Hashing the attribute
values, as spaCy's MultiHashEmbed does, means no vocabulary file is needed.
The layer is a `Model[List[Doc], List[Floats2d]]`, so it fills the `embed`
slot of `bilstm_tagger.BiLSTMTagger.v2` like any spaCy token embedder.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.attrs import IDS as ATTR_IDS
from spacy.attrs import ORTH
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, NumpyOps, xp2torch
from thinc.types import Floats2d
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from .shim import embedder_output, get_module, make_shim, module_device, run, set_module, torch_module

_OPS = NumpyOps()
_CHAR_PAD = 255  # never a byte of valid UTF-8
N_CHAR_ROWS = 256


def attr_ids(names: Sequence[str]) -> List[int]:
    unknown = [name for name in names if name.upper() not in ATTR_IDS]
    if unknown:
        raise ConfigError(f"Unknown spaCy token attribute(s) for hash embeddings: {', '.join(unknown)}")
    return [ATTR_IDS[name.upper()] for name in names]


@dataclass
class TokenArrays:
    """Integer features for a run of tokens, one row per token."""

    hash_rows: np.ndarray  # (n_tokens, n_attrs, 4) int64 rows into each attribute's table
    chars: np.ndarray  # (n_distinct, max_chars) uint8 bytes of each distinct word, natural order, 255-padded
    char_index: np.ndarray  # (n_tokens,) int64 row of `chars` for each token
    vector_rows: Optional[np.ndarray]  # (n_tokens,) int64, -1 where the vocab has no vector


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

    def __call__(self, orths: np.ndarray, strings, width: int) -> Tuple[np.ndarray, np.ndarray]:
        """The bytes of each distinct word, (n_distinct, width), and each token's row in them."""
        unique, inverse = np.unique(orths, return_inverse=True)
        if len(self.rows) + len(unique) > self.max_entries:
            self.rows.clear()  # bounded memory over millions of documents
        table = np.empty((len(unique), width), dtype=np.uint8)
        for i, key in enumerate(unique.tolist()):
            row = self.rows.get((key, width))
            if row is None:
                row = self.rows[(key, width)] = self._encode(strings[key], width)
            table[i] = row
        return table, inverse.reshape(-1).astype(np.int64)


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
        return TokenArrays(np.zeros((0, len(attrs), 4), np.int64), np.zeros((0, max_chars), np.uint8), np.zeros(0, np.int64), empty_vec)
    n_tokens = sum(len(doc) for doc in docs)
    hashed = np.zeros((n_tokens, len(attrs), 4), dtype=np.int64)
    if attrs:
        keys = np.concatenate([doc.to_array(list(attrs)).reshape(len(doc), len(attrs)) for doc in docs]).astype(np.uint64)
        for i, n_rows in enumerate(rows):
            hashed[:, i] = _OPS.hash(np.ascontiguousarray(keys[:, i]), i).astype(np.int64) % n_rows
    chars, char_index = np.zeros((1, 0), np.uint8), np.zeros(n_tokens, np.int64)
    if max_chars:
        orths = np.concatenate([doc.to_array(ORTH) for doc in docs]).astype(np.uint64)
        chars, char_index = char_rows(orths, docs[0].vocab.strings, max_chars)
    vector_rows = None
    if vectors_attr is not None:
        vectors = docs[0].vocab.vectors
        ids = np.concatenate([doc.to_array(vectors_attr) for doc in docs]).astype(np.uint64)
        vector_rows = np.asarray(vectors.find(keys=ids), dtype=np.int64)
    return TokenArrays(hashed, chars, char_index, vector_rows)


class CharCNN(nn.Module):
    """Byte embeddings, one convolution, max-pooled over the real bytes of each token."""

    def __init__(self, embed: int, width: int, kernel: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(N_CHAR_ROWS, embed, padding_idx=_CHAR_PAD)
        self.conv = nn.Conv1d(embed, width, kernel, padding=kernel // 2)

    def forward(self, chars: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Features of each token: `chars` holds the distinct words' bytes and `index` each token's
        row in it (featurize dedups by ORTH, which is cheaper than torch.unique over byte rows);
        without `index`, `chars` has one row per token and is deduplicated here."""
        # Text repeats words a lot: convolve each distinct spelling once, then copy rows back.
        if index is None:
            chars, index = torch.unique(chars, dim=0, return_inverse=True)
        return self._encode(chars)[index]

    def _encode(self, chars: torch.Tensor) -> torch.Tensor:
        x = self.embed(chars.long()).transpose(1, 2)  # (n, embed, max_chars)
        h = self.conv(x)[:, :, : chars.shape[1]]
        pad = (chars == _CHAR_PAD).unsqueeze(1)
        # An empty string has only padding: its pooled value is 0, not -inf.
        return h.masked_fill(pad, float("-inf")).amax(dim=2).clamp(min=-1e4).masked_fill(pad.all(2), 0.0)


@torch_module
class HashCharEmbedder(nn.Module):
    """Concatenates hash embeddings, byte-CNN features and (frozen) static vectors."""

    def __init__(
        self, rows: Sequence[int], widths: Sequence[int], char_embed: int, char_width: int, char_kernel: int, vectors_width: int,
        vectors_trainable: int = 0, vectors_norm: bool = False,
    ) -> None:
        super().__init__()
        self.spec = dict(
            rows=list(rows), widths=list(widths), char_embed=char_embed, char_width=char_width,
            char_kernel=char_kernel, vectors_width=vectors_width,
            vectors_trainable=vectors_trainable, vectors_norm=vectors_norm,
        )
        # A trainable correction for the first `vectors_trainable` rows of the table (pretrained
        # tables list frequent words first): starting at zero, those rows are a trainable table
        # initialised with the pretrained values, while the long tail stays as pretrained.
        self.vectors_delta = nn.Embedding(vectors_trainable, vectors_width) if vectors_trainable and vectors_width else None
        if self.vectors_delta is not None:
            nn.init.zeros_(self.vectors_delta.weight)
        self.vectors_norm = vectors_norm
        self.tables = nn.ModuleList(nn.EmbeddingBag(n, w, mode="sum") for n, w in zip(rows, widths))
        for table in self.tables:
            nn.init.uniform_(table.weight, -0.1, 0.1)
        self.chars = CharCNN(char_embed, char_width, char_kernel) if char_width else None
        self.vectors_width = vectors_width
        self.width = sum(widths) + char_width + vectors_width

    def forward(
        self, hash_rows: torch.Tensor, chars: torch.Tensor, vector_rows: Optional[torch.Tensor], vectors: Optional[torch.Tensor],
        word_dropout: float, vectors_dropout: float = 0.0, char_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        parts = [table(hash_rows[:, i]) for i, table in enumerate(self.tables)]
        if word_dropout > 0 and self.tables:
            # Drop the first attribute (the word itself) so the model learns to use context and characters.
            keep = torch.rand(parts[0].shape[0], 1, device=parts[0].device) >= word_dropout
            parts[0] = parts[0] * keep
        if self.chars is not None:
            parts.append(self.chars(chars, char_index))
        if self.vectors_width:
            parts.append(self.static_vectors(vector_rows, vectors, vectors_dropout))
        return torch.cat(parts, dim=1)

    def static_vectors(self, vector_rows: torch.Tensor, vectors: torch.Tensor, dropout: float) -> torch.Tensor:
        found = (vector_rows >= 0).unsqueeze(1)
        rows = vector_rows.clamp(min=0)
        static = F.embedding(rows, vectors)
        if self.vectors_norm:  # unit length: GloVe norms grow with word frequency, which says little about entities
            static = F.normalize(static, dim=1)
        if self.vectors_delta is not None:
            n = self.vectors_delta.num_embeddings
            static = static + self.vectors_delta(rows.clamp(max=n - 1)) * (rows < n).unsqueeze(1)
        if dropout > 0 and self.training:
            static = F.dropout(static, dropout)
        return static * found


# ---- static vectors: which attribute keys the table ----------------------------------------

VECTOR_ATTRS = ("ORTH", "LOWER", "NORM")


def table_is_lowercased(vectors, strings, sample: int = 5000) -> bool:
    """True when no key of the table that the string store can name has an upper-case letter.

    spaCy 3.8 saves a default-mode table's `attr` only in floret mode, so a table
    keyed by LOWER reloads claiming ORTH. The keys themselves tell the truth.
    """
    keys = list(vectors.keys())[:sample]
    words = [strings[k] for k in keys if k in strings]
    return bool(words) and not any(w != w.lower() for w in words)


def resolve_vectors_attr(setting: Optional[str], vectors, strings) -> str:
    """The attribute to look vectors up by: the configured one, checked against the table's keys."""
    lowered = table_is_lowercased(vectors, strings)
    if setting is None:
        return "LOWER" if lowered else "ORTH"
    setting = setting.upper()
    if setting not in VECTOR_ATTRS:
        raise ConfigError(f"vectors_attr must be one of {', '.join(VECTOR_ATTRS)} or null, not {setting!r}")
    if setting == "LOWER" and not lowered:
        raise ConfigError(
            "the model looks static vectors up by LOWER, but this vectors table has keys with upper-case "
            "letters (it is keyed by ORTH): use the table the model was trained with"
        )
    return setting


def vectors_width_of(vocab) -> int:
    vectors = vocab.vectors
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ConfigError(
            "include_static_vectors = true, but the pipeline has no vectors: "
            "set [initialize] vectors (see python -m bilstm_tagger vectors --help) or turn it off"
        )
    if getattr(vectors, "mode", "default") != "default":
        raise ConfigError(f"only default-mode spaCy vectors are supported, not {vectors.mode!r}")
    return int(vectors.shape[1])


def check_vectors(model: Model, vocab) -> None:
    """Refuse a vectors table that does not fit what the model was trained with (other embedders: no-op)."""
    for node in model.walk():  # the embedder may sit inside a ConcatEmbed
        if node.attrs.get("include_static_vectors"):
            _check_node_vectors(node, vocab)


def _check_node_vectors(model: Model, vocab) -> None:
    attrs = model.attrs
    width = vectors_width_of(vocab)
    if width != attrs["spec"]["vectors_width"]:
        raise ConfigError(
            f"the model was trained with {attrs['spec']['vectors_width']}-d static vectors, "
            f"but the pipeline's vectors are {width}-d"
        )
    # A model saved by release 0.1 never recorded the attribute: it is read off the table once here.
    attrs["vectors_attr"] = resolve_vectors_attr(attrs["vectors_attr"], vocab.vectors, vocab.strings)


@dataclass
class _ConvertedVectors:
    source: object  # the table it was made from, held so that its identity cannot pass to another
    device: str
    tensor: torch.Tensor


# The vectors table as one torch tensor per embedder module, converted once rather than per batch. Keyed
# by the module (weakly: it goes with its pipeline), so two pipelines never evict each other's; the table
# is recognised by identity, never by id(), which a new table may reuse once an old one is freed.
_converted_vectors: "weakref.WeakKeyDictionary[nn.Module, _ConvertedVectors]" = weakref.WeakKeyDictionary()


def vectors_tensor(owner: nn.Module, data, device: torch.device) -> torch.Tensor:
    """`data` (the vocab's vectors table) as a float32 tensor on `device`, cached for `owner`.

    A table changed in place is seen only when the tensor shares its memory (float32, contiguous,
    spaCy's default); other tables are copied once, so in-place changes to them are not.
    """
    entry = _converted_vectors.get(owner)
    if entry is None or entry.source is not data or entry.device != str(device) or tuple(entry.tensor.shape) != tuple(data.shape):
        # spaCy keeps the table in numpy, or in cupy after require_gpu(); both convert without a copy on their device.
        array = np.ascontiguousarray(data, dtype=np.float32) if isinstance(data, np.ndarray) else data
        entry = _ConvertedVectors(data, str(device), xp2torch(array, device=device))
        _converted_vectors[owner] = entry
    return entry.tensor


# ---- the thinc layer --------------------------------------------------------------------------


def _inputs(model: Model, module: nn.Module, docs: Sequence[Doc], device: torch.device):
    a = model.attrs
    vectors_attr = ATTR_IDS[a["vectors_attr"]] if a["include_static_vectors"] else None
    arrays = featurize(docs, a["attr_ids"], a["spec"]["rows"], a["max_chars"], vectors_attr)
    vector_rows = vectors = None
    if vectors_attr is not None:
        vector_rows = xp2torch(arrays.vector_rows, device=device)
        vectors = vectors_tensor(module, docs[0].vocab.vectors.data, device)
    hash_rows, chars = xp2torch(arrays.hash_rows, device=device), xp2torch(arrays.chars, device=device)
    return hash_rows, chars, vector_rows, vectors, xp2torch(arrays.char_index, device=device)


def embed_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    lengths = [len(doc) for doc in docs]
    width = model.get_dim("nO")
    if not sum(lengths):
        return [model.ops.alloc2f(0, width) for _ in docs], lambda d_docs: []
    module = get_module(model)
    device = module_device(module)
    word_dropout = model.attrs["word_dropout"] if is_train else 0.0
    vectors_dropout = model.attrs.get("vectors_dropout", 0.0) if is_train else 0.0

    def forward() -> torch.Tensor:
        hash_rows, chars, vector_rows, vectors, char_index = _inputs(model, module, docs, device)
        return module(hash_rows, chars, vector_rows, vectors, word_dropout, vectors_dropout, char_index)

    flat = run(model, is_train, forward)
    return embedder_output(model, flat, lengths)


def embed_init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> Model:
    spec = dict(model.attrs["spec"])
    if model.attrs["include_static_vectors"]:
        if not X:
            raise ConfigError("bilstm_tagger: include_static_vectors needs sample docs at initialize")
        vocab = X[0].vocab
        spec["vectors_width"] = vectors_width_of(vocab)
        spec["vectors_trainable"] = min(spec.get("vectors_trainable", 0), int(vocab.vectors.shape[0]))
        # The attribute becomes part of the model's own settings; a reload never asks Vectors again.
        model.attrs["vectors_attr"] = resolve_vectors_attr(model.attrs["vectors_attr"], vocab.vectors, vocab.strings)
    module = HashCharEmbedder(**spec)
    model.attrs["spec"] = module.spec
    model.set_dim("nO", module.width, force=True)
    set_module(model, module)
    return model


@registry.architectures("bilstm_tagger.HashCharEmbed.v1")
def build_hash_char_embed(
    attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    rows: List[int] = [20000, 2000, 5000, 1000],
    widths: List[int] = [96, 16, 32, 16],
    char_width: int = 100,
    char_embed: int = 25,
    char_kernel: int = 3,
    max_chars: int = 20,
    include_static_vectors: bool = False,
    vectors_attr: Optional[str] = None,
    word_dropout: float = 0.25,
    vectors_trainable: int = 0,
    vectors_norm: bool = False,
    vectors_dropout: float = 0.0,
) -> Model[List[Doc], List[Floats2d]]:
    """Token vectors from hashed NORM/PREFIX/SUFFIX/SHAPE tables, a byte CNN and optional static vectors.

    `vectors_attr` (ORTH, LOWER, NORM) is the token attribute the static vectors
    are looked up by; null reads it off the table (all keys lower-case: LOWER).
    It is saved with the model. `word_dropout` zeroes the first table's row
    (the word itself) for that share of tokens in training. `vectors_trainable`
    makes the first N rows of the vectors table trainable (starting from their
    pretrained values), `vectors_norm` scales every vector to unit length and
    `vectors_dropout` is dropout on the vectors in training.
    """
    if not (len(attrs) == len(rows) == len(widths)):
        raise ConfigError("attrs, rows and widths must have the same length")
    if char_width and max_chars < char_kernel:
        raise ConfigError(f"max_chars ({max_chars}) must be at least char_kernel ({char_kernel})")
    if not 0.0 <= word_dropout < 1.0:
        raise ConfigError("word_dropout must lie in [0, 1)")
    if not 0.0 <= vectors_dropout < 1.0:
        raise ConfigError("vectors_dropout must lie in [0, 1)")
    if vectors_trainable < 0:
        raise ConfigError("vectors_trainable must be 0 (frozen vectors) or a number of rows")
    if vectors_attr is not None and vectors_attr.upper() not in VECTOR_ATTRS:
        raise ConfigError(f"vectors_attr must be one of {', '.join(VECTOR_ATTRS)} or null, not {vectors_attr!r}")
    spec = dict(
        rows=list(rows), widths=list(widths), char_embed=char_embed if char_width else 0, char_width=char_width,
        # The vectors' width is known once the table is (at initialize); null until then.
        char_kernel=char_kernel if char_width else 0, vectors_width=None if include_static_vectors else 0,
        vectors_trainable=vectors_trainable if include_static_vectors else 0, vectors_norm=vectors_norm,
    )
    return Model(
        "hash_char_embed",
        embed_forward,
        init=embed_init,
        dims={"nO": sum(widths) + char_width if not include_static_vectors else None},
        attrs=dict(
            names=[a.upper() for a in attrs],
            attr_ids=attr_ids(attrs),
            max_chars=max_chars if char_width else 0,
            include_static_vectors=include_static_vectors,
            vectors_attr=vectors_attr.upper() if vectors_attr else None,
            word_dropout=word_dropout,
            vectors_dropout=vectors_dropout,
            spec=spec,
        ),
        shims=[make_shim()],
    )
