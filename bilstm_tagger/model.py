"""The torch network, its thinc wrapper and the registered architecture.

Docs are cut into segments (whole docs, or windows of long docs), featurised
in numpy, and run through torch. Inference goes through length-sorted chunks
of bounded size, so a 100,000-token doc needs no more memory than a batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.attrs import ORTH
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, PyTorchShim
from torch import nn

from .decoder import make_decoder
from .encoder import Encoder, Packing
from .features import TokenArrays, TokenEmbedder, attr_ids, featurize
from .weights import WeightsError, dump_weights, load_weights

Segment = Tuple[int, int, int]  # (doc index, start token, end token)


@dataclass(frozen=True)
class NetSpec:
    """Every size needed to rebuild the network; saved beside the weights."""

    attrs: Tuple[str, ...]
    rows: Tuple[int, ...]
    widths: Tuple[int, ...]
    max_chars: int
    char_embed: int
    char_width: int
    char_kernel: int
    vectors_width: int
    cell: str
    hidden_size: int
    num_layers: int
    proj_size: int
    attention_heads: int
    attention_layers: int
    n_tags: int
    crf: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NetSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) != names:
            raise ValueError(f"network description has fields {sorted(data)}, expected {sorted(names)}")
        lists = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
        return cls(**{**data, **lists})

    def differences(self, other: "NetSpec") -> List[str]:
        return [
            f"{f.name}: saved {getattr(other, f.name)!r}, config {getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


class TaggerNet(nn.Module):
    """Token features -> BiRNN (+ attention) -> per-tag emission scores, plus a decoder."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embedder = TokenEmbedder(
            spec.rows, spec.widths, spec.char_embed, spec.char_width, spec.char_kernel, spec.vectors_width
        )
        self.encoder = Encoder(
            spec.cell,
            self.embedder.width,
            spec.hidden_size,
            spec.num_layers,
            spec.proj_size,
            spec.attention_heads,
            spec.attention_layers,
        )
        self.output = nn.Linear(self.encoder.width, spec.n_tags)
        self.decoder = make_decoder(spec.crf, spec.n_tags)

    def forward(
        self,
        arrays: TokenArrays,
        lengths: Sequence[int],
        vectors: Optional[torch.Tensor],
        dropout: float = 0.0,
        word_dropout: float = 0.0,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Emissions (batch, time, n_tags) and the mask of real tokens, for flat token arrays."""
        packing = Packing(np.asarray(lengths, dtype=np.int64))
        hash_rows = torch.from_numpy(arrays.hash_rows)
        chars = torch.from_numpy(arrays.chars)
        vector_rows = None if arrays.vector_rows is None else torch.from_numpy(arrays.vector_rows)
        flat = self.embedder(hash_rows, chars, vector_rows, vectors, word_dropout if self.training else 0.0)
        flat = nn.functional.dropout(flat, dropout, self.training)
        mask = packing.mask()
        hidden = self.encoder(packing.pack(flat), packing, mask, dropout)
        scores = self.output(nn.functional.dropout(hidden, dropout, self.training))
        return (scores if self.encoder.attention else packing.pad(scores)), mask


@dataclass
class Scores:
    """Emission scores for a set of segments (what the thinc model outputs)."""

    emissions: torch.Tensor
    mask: torch.Tensor
    segments: List[Segment]


class TaggerShim(PyTorchShim):
    """A PyTorchShim that serialises with safetensors (never pickle) and rebuilds from the saved spec."""

    def to_bytes(self) -> bytes:
        return dump_weights(self._model.spec.to_dict(), self._model.state_dict())

    def from_bytes(self, data: bytes) -> "TaggerShim":
        self._model = net_from_bytes(data)
        return self


def net_from_bytes(data: bytes) -> TaggerNet:
    """Rebuild the network from a weights file; every failure is a WeightsError saying why."""
    spec_dict, state = load_weights(data)
    try:
        net = TaggerNet(NetSpec.from_dict(spec_dict))
    except (TypeError, ValueError) as err:
        raise WeightsError(f"the saved network description is invalid: {err}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"tensors do not fit the saved network description: {err}") from None
    return net


def get_net(model: Model) -> TaggerNet:
    net = model.shims[0]._model
    if not isinstance(net, TaggerNet):
        raise ValueError("The bilstm_tagger model is not initialized: call nlp.initialize() or load a trained pipeline")
    return net


def make_segments(docs: Sequence[Doc], window: int) -> List[Segment]:
    """Whole docs when they fit the window; longer docs are cut, at sentence ends where known."""
    segments: List[Segment] = []
    for i, doc in enumerate(docs):
        n = len(doc)
        if 0 < n <= window:
            segments.append((i, 0, n))
        elif n > window:
            sents = [(s.start, s.end) for s in doc.sents] if doc.has_annotation("SENT_START") else [(0, n)]
            segments.extend((i, s, e) for s, e in _pack_sentences(sents, window))
    return segments


def _pack_sentences(sents: List[Tuple[int, int]], window: int) -> Iterator[Tuple[int, int]]:
    """Group consecutive sentences into pieces of at most `window` tokens; hard-cut longer ones."""
    start = 0
    for s, e in sents:
        if e - start > window and s > start:
            yield start, s
            start = s
        while e - start > window:
            yield start, start + window
            start += window
    if sents and sents[-1][1] > start:
        yield start, sents[-1][1]


def plan_chunks(segments: List[Segment], max_tokens: int) -> Iterator[List[Segment]]:
    """Length-sorted groups whose padded size (rows x longest) stays under max_tokens."""
    ordered = sorted(segments, key=lambda s: s[2] - s[1], reverse=True)
    chunk: List[Segment] = []
    for seg in ordered:
        longest = (chunk[0][2] - chunk[0][1]) if chunk else seg[2] - seg[1]
        if chunk and (len(chunk) + 1) * longest > max_tokens:
            yield chunk
            chunk = []
        chunk.append(seg)
    if chunk:
        yield chunk


def _doc_offsets(docs: Sequence[Doc]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(doc) for doc in docs])])


def _segment_index(segments: List[Segment], offsets: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(offsets[d] + s, offsets[d] + e) for d, s, e in segments])


def _static_vectors(model: Model, docs: Sequence[Doc]) -> Optional[torch.Tensor]:
    if not model.attrs["include_static_vectors"]:
        return None
    data = docs[0].vocab.vectors.data
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def _featurize(model: Model, docs: Sequence[Doc]) -> TokenArrays:
    a = model.attrs
    # Vectors are keyed by the attribute the table says (ORTH unless built from lowercased GloVe, say).
    vectors_attr = getattr(docs[0].vocab.vectors, "attr", ORTH) if a["include_static_vectors"] else None
    return featurize(docs, a["attr_ids"], a["rows"], a["max_chars"], vectors_attr)


def forward(model: Model, docs: Sequence[Doc], is_train: bool) -> Tuple[List[Scores], Callable]:
    net = get_net(model)
    net.train(is_train)
    segments = make_segments(docs, model.attrs["window"])
    if not segments:
        return [], lambda d_scores: docs
    arrays = _featurize(model, docs)
    offsets = _doc_offsets(docs)
    vectors = _static_vectors(model, docs)

    def run(chunk: List[Segment]) -> Scores:
        index = _segment_index(chunk, offsets)
        lengths = [e - s for _, s, e in chunk]
        emissions, mask = net(
            arrays.take(index), lengths, vectors, model.attrs["dropout_rate"], model.attrs["word_dropout"]
        )
        return Scores(emissions, mask, chunk)

    if not is_train:
        with torch.inference_mode():
            return [run(c) for c in plan_chunks(segments, model.attrs["max_batch_tokens"])], lambda d: docs
    scores = run(segments)

    def backprop(d_scores: List[torch.Tensor]) -> Sequence[Doc]:
        scores.emissions.backward(d_scores[0])
        return docs

    return [scores], backprop


def init(model: Model, X: Optional[Sequence[Doc]] = None, Y=None) -> Model:
    if not model.has_dim("nO") or model.get_dim("nO") is None:
        raise ValueError("bilstm_tagger: the number of tags (nO) is unknown; initialize the component with examples")
    vectors_width = 0
    if model.attrs["include_static_vectors"]:
        if not X:
            raise ValueError("bilstm_tagger: include_static_vectors needs sample docs at initialize")
        vectors_width = vectors_width_of(X[0].vocab)
    net = TaggerNet(expected_spec(model, vectors_width))
    model.shims[0]._model = net
    return model


def vectors_width_of(vocab) -> int:
    vectors = vocab.vectors
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(
            "include_static_vectors = true, but the pipeline has no vectors: "
            "set [initialize] vectors (see python -m bilstm_tagger vectors --help) or turn it off"
        )
    if getattr(vectors, "mode", "default") != "default":
        raise ValueError(f"only default-mode spaCy vectors are supported, not {vectors.mode!r}")
    return int(vectors.shape[1])


def expected_spec(model: Model, vectors_width: int) -> NetSpec:
    """The network the model's settings describe (the architecture keeps them in model.attrs)."""
    sizes = {f.name for f in dataclasses.fields(NetSpec)} - {"vectors_width", "n_tags"}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in model.attrs.items() if k in sizes}
    return NetSpec(**settings, vectors_width=vectors_width, n_tags=model.get_dim("nO"))


@registry.architectures("bilstm_tagger.BiLSTMTagger.v1")
def build_bilstm_tagger(
    embed_attrs: List[str] = ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
    embed_rows: List[int] = [20000, 2000, 5000, 1000],
    embed_widths: List[int] = [96, 16, 32, 16],
    char_width: int = 100,
    char_embed: int = 25,
    char_kernel: int = 3,
    max_chars: int = 20,
    include_static_vectors: bool = False,
    hidden_size: int = 200,
    num_layers: int = 1,
    cell: str = "lstm",
    proj_size: int = 0,
    attention_heads: int = 0,
    attention_layers: int = 1,
    crf: bool = True,
    dropout: float = 0.5,
    word_dropout: float = 0.25,
    window: int = 256,
    max_batch_tokens: int = 8192,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Scores]]:
    """BiLSTM(-CRF) tagger: hash + char + static-vector features, a BiRNN, optional self-attention."""
    if not (len(embed_attrs) == len(embed_rows) == len(embed_widths)):
        raise ValueError("embed_attrs, embed_rows and embed_widths must have the same length")
    if char_width and max_chars < char_kernel:
        raise ValueError(f"max_chars ({max_chars}) must be at least char_kernel ({char_kernel})")
    if window < 1 or max_batch_tokens < window:
        raise ValueError(f"need 1 <= window ({window}) <= max_batch_tokens ({max_batch_tokens})")
    if not 0.0 <= dropout < 1.0 or not 0.0 <= word_dropout < 1.0:
        raise ValueError("dropout and word_dropout must lie in [0, 1)")
    attrs = dict(
        attrs=[a.upper() for a in embed_attrs],
        attr_ids=attr_ids(embed_attrs),
        rows=list(embed_rows),
        widths=list(embed_widths),
        max_chars=max_chars if char_width else 0,
        char_embed=char_embed if char_width else 0,
        char_width=char_width,
        char_kernel=char_kernel if char_width else 0,
        include_static_vectors=include_static_vectors,
        cell=cell,
        hidden_size=hidden_size,
        num_layers=num_layers,
        proj_size=proj_size,
        attention_heads=attention_heads,
        attention_layers=attention_layers,
        crf=crf,
        dropout_rate=dropout,
        word_dropout=word_dropout,
        window=window,
        max_batch_tokens=max_batch_tokens,
    )
    # Validate the encoder settings now, not after an hour of data loading.
    Encoder(cell, 8, hidden_size, num_layers, proj_size, attention_heads, attention_layers)
    return Model(
        "bilstm_tagger",
        forward,
        init=init,
        dims={"nO": nO},
        attrs=attrs,
        shims=[TaggerShim(None)],
    )
