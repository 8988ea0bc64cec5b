"""The registered tagger architectures: an `embed` layer, the BiRNN encoder and the decoder.

`bilstm_tagger.BiLSTMTagger.v2` takes any token embedder with the signature
`Model[List[Doc], List[Floats2d]]` (ours, spaCy's `spacy.Tok2Vec.v2`, or a
`spacy.Tok2VecListener.v1` that shares a `tok2vec` component, or a curated-transformers
listener that shares a `curated_transformer` component: see listener.py). The model maps
docs to per-tag emission scores, in training and at inference alike; `TaggerLoss` turns them
into the loss and `decoder.decode` into tag ids. `bilstm_tagger.BiLSTMTagger.v1`, the flat architecture of
release 0.1, builds the same three layers, and its saved weights still load.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import srsly
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d

from ..errors import ConfigError, WeightsError
from .decoder import build_decoder
from .embed import build_hash_char_embed
from .encoder import build_encoder
from ..util.compat import fix_curated_loss
from .listener import check_listener_batch, check_listener_inputs, has_listener
from .shim import build_module, get_module, set_module
from .weights import LEGACY_FORMAT, load_weights, looks_like_safetensors

LAYERS = ("embed", "encoder", "decoder")


def tagger_forward(model: Model, docs: List[Doc], is_train: bool):
    embed, encoder, decoder = model.layers
    if is_train:
        check_listener_batch(embed)
    else:
        check_listener_inputs(embed, docs)
    vectors, bp_embed = embed(docs, is_train)
    scores, bp_encoder = encoder((vectors, sentence_starts(docs, encoder.attrs["window"])), is_train)
    output, bp_decoder = decoder(scores, is_train)

    def backprop(d_output):
        return bp_embed(bp_encoder(bp_decoder(d_output)))

    return output, backprop


def sentence_starts(docs: List[Doc], window: int) -> List[Optional[np.ndarray]]:
    """Sentence starts of the docs longer than `window` that have them (a senter or sentencizer ran),
    so the encoder can cut those at sentence boundaries; None for the rest."""
    return [_starts(doc) if len(doc) > window and doc.has_annotation("SENT_START") else None for doc in docs]


def _starts(doc: Doc) -> np.ndarray:
    # 1 marks a start, -1 (stored unsigned) a non-start, 0 unknown: only explicit starts count.
    return np.flatnonzero(doc.to_array("SENT_START").astype(np.int64) == 1)


def _width(embed: Model, X: Optional[List[Doc]]) -> Optional[int]:
    if embed.has_dim("nO") and embed.get_dim("nO"):
        return embed.get_dim("nO")
    if X:  # an embedder that learns its width from data
        sample = [doc for doc in X if len(doc)][:2]
        if sample:
            return embed.predict(sample)[0].shape[1]
    return None


def tagger_init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> Model:
    embed, encoder, decoder = model.layers
    n_tags = model.get_dim("nO") if model.has_dim("nO") else None
    if not n_tags:
        raise ConfigError("bilstm_tagger: the number of tags (nO) is unknown; initialize the component with examples")
    embed.initialize(X=X)
    encoder.set_dim("nI", _width(embed, X), force=True)
    for layer in (encoder, decoder):
        layer.set_dim("nO", n_tags, force=True)
        layer.initialize()
    return model


@registry.architectures("bilstm_tagger.BiLSTMTagger.v2")
def build_bilstm_tagger_v2(
    embed: Model[List[Doc], List[Floats2d]],
    hidden_size: int = 200,
    num_layers: int = 1,
    cell: str = "lstm",
    proj_size: int = 0,
    attention_heads: int = 0,
    attention_layers: int = 1,
    crf: bool = True,
    dropout: float = 0.5,
    window: int = 256,
    max_batch_tokens: int = 8192,
    nO: Optional[int] = None,
    window_overlap: Optional[int] = None,
    window_cut: str = "anchored",
) -> Model[List[Doc], List[Floats2d]]:
    """BiLSTM(-CRF) tagger over any token embedder: docs in, per-tag emission scores out
    (`decode` with the model's "decoder" ref turns them into tag ids).

    `cell` is "lstm" or "gru"; `proj_size` projects LSTM states; attention_heads > 0
    adds `attention_layers` self-attention blocks; `crf` picks a linear-chain CRF
    over softmax. Docs longer than `window` tokens run as runs of whole sentences when
    they have sentence starts, else as windows sharing `window_overlap` tokens (None:
    window // 4), stitched at each overlap's middle (`window_cut = "middle"`, one pass) or
    read again as pieces cut where no entity is likely ("anchored", the default: two
    passes, stable when the text shifts; see windows.py);
    `max_batch_tokens` bounds the padded size of one inference chunk.
    """
    encoder = build_encoder(
        cell, hidden_size, num_layers, proj_size, attention_heads, attention_layers, dropout, window, max_batch_tokens,
        nO=nO, window_overlap=window_overlap, window_cut=window_cut,
    )
    decoder = build_decoder(crf, max_batch_tokens, nO=nO)
    if has_listener(embed):
        fix_curated_loss()
    model = Model(
        "bilstm_tagger",
        tagger_forward,
        init=tagger_init,
        layers=[embed, encoder, decoder],
        dims={"nO": nO},
        refs={"embed": embed, "tok2vec": embed, "encoder": encoder, "decoder": decoder},
    )
    return model


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
) -> Model[List[Doc], List[Floats2d]]:
    """Release 0.1's flat architecture: `HashCharEmbed.v1` under `BiLSTMTagger.v2`. Prefer v2 in new configs."""
    embed = build_hash_char_embed(
        embed_attrs, embed_rows, embed_widths, char_width, char_embed, char_kernel, max_chars,
        include_static_vectors, None, word_dropout,
    )
    return build_bilstm_tagger_v2(
        embed, hidden_size, num_layers, cell, proj_size, attention_heads, attention_layers, crf, dropout, window,
        max_batch_tokens, nO,
    )


# ---- loading weights ---------------------------------------------------------------------------


def _torch_layers(model: Model) -> Dict[str, Model]:
    return {name: model.get_ref(name) for name in LAYERS if model.get_ref(name).shims}


def _differences(expected: dict, saved: dict) -> List[str]:
    return [
        f"{key}: saved {saved.get(key)!r}, config {value!r}"
        for key, value in expected.items()
        if value is not None and key in saved and saved[key] != value
    ]


def load_tagger_bytes(model: Model, data: bytes) -> None:
    """Load weights saved by `model.to_bytes()`, or a release-0.1 weights file, into `model`.

    The sizes the config asks for are checked against the saved ones first, so a
    mismatch says which setting differs instead of failing inside torch.
    """
    if looks_like_safetensors(data):
        load_legacy(model, data)
        return
    try:
        msg = srsly.msgpack_loads(data)
        saved_attrs = msg["attrs"]
    except Exception as err:  # msgpack raises several types for damaged input
        raise WeightsError(f"weights are damaged ({type(err).__name__}): the file is truncated or corrupt") from None
    nodes = list(model.walk())
    if len(saved_attrs) != len(nodes):
        raise WeightsError(
            f"the saved model has {len(saved_attrs)} layers but the config builds {len(nodes)}: "
            "the weights belong to another architecture"
        )
    diffs: List[str] = []
    for node, attrs in zip(nodes, saved_attrs):
        if "spec" in node.attrs and "spec" in attrs:
            try:  # thinc stores each attribute as its own msgpack blob
                saved_spec = srsly.msgpack_loads(attrs["spec"])
            except Exception:
                raise WeightsError("weights are damaged: a layer's saved description is unreadable") from None
            diffs += _differences(node.attrs["spec"], saved_spec)
    if diffs:
        raise WeightsError("the weights do not match the component's config: " + "; ".join(diffs))
    try:
        model.from_dict(msg)
    except (KeyError, TypeError) as err:
        raise WeightsError(f"weights are damaged ({type(err).__name__}: {err})") from None


# Release 0.1 saved one torch module (`TaggerNet`) whose parts map onto today's three layers.
_LEGACY_PARTS = {"embedder.": "embed", "encoder.": "encoder", "output.": "encoder", "decoder.": "decoder"}


def load_legacy(model: Model, data: bytes) -> None:
    meta, state = load_weights(data, expect=LEGACY_FORMAT)
    spec = meta["spec"]
    layers = _torch_layers(model)
    if set(layers) != set(LAYERS) or layers["embed"].name != "hash_char_embed":
        raise WeightsError("a release-0.1 weights file needs the bilstm_tagger.BiLSTMTagger.v1 architecture")
    embed = layers["embed"]
    specs = {
        "embed": dict(
            rows=spec["rows"], widths=spec["widths"], char_embed=spec["char_embed"], char_width=spec["char_width"],
            char_kernel=spec["char_kernel"], vectors_width=spec["vectors_width"],
        ),
        "encoder": dict(
            n_in=sum(spec["widths"]) + spec["char_width"] + spec["vectors_width"], cell=spec["cell"],
            hidden_size=spec["hidden_size"], num_layers=spec["num_layers"], proj_size=spec["proj_size"],
            attention_heads=spec["attention_heads"], attention_layers=spec["attention_layers"], n_tags=spec["n_tags"],
        ),
    }
    expected = {**embed.attrs["spec"], "vectors_width": None}
    diffs = _differences(expected, specs["embed"]) + _differences(layers["encoder"].attrs["spec"], specs["encoder"])
    if embed.attrs["max_chars"] != spec["max_chars"] or embed.attrs["names"] != spec["attrs"]:
        diffs.append(f"embed attrs/max_chars: saved {spec['attrs']}/{spec['max_chars']}")
    if layers["decoder"].attrs["crf"] != spec["crf"]:
        diffs.append(f"crf: saved {spec['crf']!r}, config {layers['decoder'].attrs['crf']!r}")
    if diffs:
        raise WeightsError("the weights do not match the component's config: " + "; ".join(diffs))
    parts: Dict[str, dict] = {name: {} for name in LAYERS}
    for key, tensor in state.items():
        prefix = next((p for p in _LEGACY_PARTS if key.startswith(p)), None)
        if prefix is None:
            raise WeightsError(f"unexpected tensor {key!r} in a release-0.1 weights file")
        layer = _LEGACY_PARTS[prefix]
        parts[layer][key[len(prefix):] if layer != "encoder" else key] = tensor
    kinds = {"embed": "HashCharEmbedder", "encoder": "TaggerEncoder", "decoder": "CRFDecoder" if spec["crf"] else "SoftmaxDecoder"}
    specs["decoder"] = {"n_tags": spec["n_tags"]}
    for name in LAYERS:
        module = build_module(kinds[name], specs[name])
        try:
            module.load_state_dict(parts[name], strict=True)
        except RuntimeError as err:
            raise WeightsError(f"tensors do not fit the saved network description: {err}") from None
        layer = layers[name]
        set_module(layer, module)
        if "spec" in layer.attrs:
            layer.attrs["spec"] = module.spec
    embed.set_dim("nO", specs["encoder"]["n_in"], force=True)
    layers["encoder"].set_dim("nI", specs["encoder"]["n_in"], force=True)
    for name in ("encoder", "decoder"):
        layers[name].set_dim("nO", spec["n_tags"], force=True)
    model.set_dim("nO", spec["n_tags"], force=True)


def emission_scores(model: Model, docs: List[Doc]) -> List[Floats2d]:
    """The encoder's per-tag scores for each doc, before decoding (inference mode)."""
    check_listener_inputs(model.get_ref("embed"), docs)
    encoder = model.get_ref("encoder")
    return encoder.predict((model.get_ref("embed").predict(docs), sentence_starts(docs, encoder.attrs["window"])))


def is_initialized(model: Model) -> bool:
    try:
        get_module(model.get_ref("decoder"))
    except ValueError:
        return False
    return True
