"""The spaCy pipeline component: `nlp.add_pipe("bilstm_tagger")`."""

import hashlib
import os
import tempfile
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import srsly
import torch
from spacy.attrs import ENT_IOB, ENT_TYPE, ORTH
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import filter_spans, from_bytes, from_disk, to_bytes, to_disk
from thinc.api import Config, Model

from .errors import ModelLoadError
from .model import Scores, TaggerNet, expected_spec, get_net, net_from_bytes, vectors_width_of
from .scoring import SPAN_TARGETS, TOKEN_TARGETS, doc_spans
from .tags import check_scheme, spans_from_tags, tag_names, tags_from_spans, transition_constraints
from .weights import WeightsError, dump_weights

TARGETS = SPAN_TARGETS + TOKEN_TARGETS
WEIGHTS_FILE = "model"
CFG_FILE = "cfg"

DEFAULT_MODEL = Config().from_str(
    """
[model]
@architectures = "bilstm_tagger.BiLSTMTagger.v1"
"""
)["model"]


@Language.factory(
    "bilstm_tagger",
    assigns=["doc.ents", "doc.spans", "token.tag", "token.pos"],
    default_config={
        "model": DEFAULT_MODEL,
        "target": "ents",
        "scheme": "BILOU",
        "spans_key": "sc",
        "torch_threads": 0,
        "scorer": {"@scorers": "bilstm_tagger.seqeval_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_bilstm_tagger(
    nlp: Language,
    name: str,
    model: Model,
    target: str,
    scheme: str,
    spans_key: str,
    torch_threads: int,
    scorer: Optional[Callable],
) -> "BiLSTMTagger":
    """A BiLSTM(-CRF) sequence tagger writing doc.ents, doc.spans[spans_key], token.tag_ or token.pos_."""
    return BiLSTMTagger(
        nlp.vocab, model, name, target=target, scheme=scheme, spans_key=spans_key, torch_threads=torch_threads, scorer=scorer
    )


def configure_torch_threads(requested: int) -> None:
    """Use `requested` threads; 0 keeps torch's default, except one thread in worker processes.

    nlp.pipe(n_process=N) starts N workers; each with a pool as large as the
    machine would oversubscribe the cores N times over.
    """
    import multiprocessing

    if requested > 0:
        torch.set_num_threads(requested)
    elif multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)


class BiLSTMTagger(TrainablePipe):
    def __init__(
        self,
        vocab,
        model: Model,
        name: str = "bilstm_tagger",
        *,
        target: str = "ents",
        scheme: str = "BILOU",
        spans_key: str = "sc",
        torch_threads: int = 0,
        scorer: Optional[Callable] = None,
    ) -> None:
        if target not in TARGETS:
            raise ValueError(f"bilstm_tagger: target must be one of {', '.join(TARGETS)}, not {target!r}")
        check_scheme(scheme)
        if torch_threads < 0:
            raise ValueError("bilstm_tagger: torch_threads must be >= 0 (0 = torch's default)")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg: Dict[str, object] = {
            "labels": [],
            "target": target,
            "scheme": scheme,
            "spans_key": spans_key,
            "torch_threads": torch_threads,
            "vectors_width": 0,
        }
        self._tag_index: Optional[Dict[str, int]] = None
        self._label_hashes: Optional[Dict[int, int]] = None
        self._threads_set_in: Optional[int] = None
        self._configure_threads()

    # ---- labels -------------------------------------------------------------
    @property
    def target(self) -> str:
        return self.cfg["target"]

    @property
    def labels(self) -> tuple:
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tags(self) -> List[str]:
        """The tag inventory the model predicts over (what nO counts)."""
        if self.target in SPAN_TARGETS:
            return tag_names(self.labels, self.cfg["scheme"])
        return list(self.labels)

    @property
    def tag_index(self) -> Dict[str, int]:
        if self._tag_index is None:
            self._tag_index = {tag: i for i, tag in enumerate(self.tags)}
        return self._tag_index

    def _reset_label_caches(self) -> None:
        self._tag_index = None
        self._label_hashes = None

    def add_label(self, label: str) -> int:
        if not isinstance(label, str) or not label:
            raise ValueError(f"bilstm_tagger: labels must be non-empty strings, not {label!r}")
        if label in self.labels:
            return 0
        if self.model.shims[0]._model is not None:
            raise ValueError(
                f"bilstm_tagger: cannot add label {label!r} to a model that is already built; "
                "list every label before nlp.initialize()"
            )
        self.cfg["labels"].append(label)
        self._reset_label_caches()
        return 1

    def _labels_in(self, doc: Doc) -> Iterable[str]:
        if self.target in SPAN_TARGETS:
            return (span.label_ for span in doc_spans(doc, self.target, self.cfg["spans_key"]))
        return (getattr(token, f"{self.target}_") for token in doc)

    def initialize(
        self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None, labels: Optional[Sequence[str]] = None
    ) -> None:
        """Infer the labels from the examples (or take `labels`), then build the network."""
        validate_get_examples(get_examples, "BiLSTMTagger.initialize")
        if labels is None:
            labels = sorted({label for eg in get_examples() for label in self._labels_in(eg.reference) if label})
        if not labels:
            what = {"ents": "entities", "spans": f"spans under doc.spans[{self.cfg['spans_key']!r}]"}.get(
                self.target, f"token.{self.target}_ values"
            )
            raise ValueError(f"bilstm_tagger: the training examples contain no {what}, so there is nothing to learn")
        self.cfg["labels"] = []
        self._reset_label_caches()
        for label in labels:
            self.add_label(label)
        doc_sample = [eg.reference for eg in islice(get_examples(), 10)]
        self.model.set_dim("nO", len(self.tags))
        self.model.initialize(X=doc_sample)
        self.cfg["vectors_width"] = get_net(self.model).spec.vectors_width
        self._set_constraints(get_net(self.model))

    def _set_constraints(self, net: TaggerNet) -> None:
        if self.target in SPAN_TARGETS:
            net.decoder.set_constraints(*transition_constraints(self.tags, self.cfg["scheme"]))

    def _configure_threads(self) -> None:
        # Once per process: nlp.pipe(n_process=N) workers get a pickled copy, not a fresh __init__.
        if self._threads_set_in != os.getpid():
            configure_torch_threads(self.cfg["torch_threads"])
            self._threads_set_in = os.getpid()

    # ---- inference ----------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> List[np.ndarray]:
        self._configure_threads()
        docs = list(docs)
        result = [np.zeros(len(doc), dtype=np.int64) for doc in docs]
        if not any(len(doc) for doc in docs):
            return result
        net = get_net(self.model)
        with torch.inference_mode():
            for scores in self.model.predict(docs):
                best = net.decoder.decode(scores.emissions, scores.mask).numpy()
                for row, (d, start, end) in enumerate(scores.segments):
                    result[d][start:end] = best[row, : end - start]
        return result

    def set_annotations(self, docs: Iterable[Doc], tag_ids: List[np.ndarray]) -> None:
        tags = self.tags
        for doc, ids in zip(docs, tag_ids):
            if self.target in TOKEN_TARGETS:
                attr = f"{self.target}_"
                for token, i in zip(doc, ids):
                    setattr(token, attr, tags[i])
                continue
            spans = [Span(doc, s, e, label) for s, e, label in spans_from_tags([tags[i] for i in ids]).spans]
            if self.target == "ents":
                doc.ents = _merge_with_preset(list(doc.ents), spans)
            else:
                doc.spans[self.cfg["spans_key"]] = spans

    # ---- training -----------------------------------------------------------
    def _gold_ids(self, eg: Example) -> np.ndarray:
        """Gold tag ids on the predicted tokens; -1 where the gold is missing or unknown."""
        if self.target == "ents" and _same_tokens(eg):
            return self._gold_ents_fast(eg.reference)
        index = self.tag_index
        if self.target == "ents":
            gold = [_biluo_to(t, self.cfg["scheme"]) for t in eg.get_aligned_ner()]
        elif self.target == "spans":
            aligned = eg.get_aligned_spans_y2x(doc_spans(eg.reference, "spans", self.cfg["spans_key"]), allow_overlap=True)
            spans = [(s.start, s.end, s.label_) for s in filter_spans(aligned)]
            gold = tags_from_spans(spans, len(eg.predicted), self.cfg["scheme"])
        else:
            gold = eg.get_aligned(self.target.upper(), as_string=True)
        return np.array([index.get(t, -1) if t else -1 for t in gold], dtype=np.int64)

    def _gold_ents_fast(self, ref: Doc) -> np.ndarray:
        """Gold ids straight from the reference's IOB arrays (same tokens, so nothing to align)."""
        if self._label_hashes is None:
            self._label_hashes = {self.vocab.strings.add(label): i for i, label in enumerate(self.labels)}
        iob, types = ref.to_array(ENT_IOB), ref.to_array(ENT_TYPE)
        type_ids = np.fromiter((self._label_hashes.get(h, -1) for h in types.tolist()), np.int64, len(types))
        begin, inside = iob == 3, iob == 1  # ENT_IOB codes: 0 missing, 1 inside, 2 outside, 3 begin
        continues = np.append(inside[1:], False)
        if self.cfg["scheme"] == "BILOU":  # offsets follow tag_names(): B, I, L, U
            per_label, offset = 4, np.where(begin, np.where(continues, 0, 3), np.where(continues, 1, 2))
        else:  # B, I
            per_label, offset = 2, np.where(begin, 0, 1)
        in_entity = begin | inside
        ids = np.where(in_entity, 1 + type_ids * per_label + offset, np.where(iob == 2, 0, -1))
        ids[in_entity & (type_ids < 0)] = -1  # a label the model does not know
        return ids

    def get_loss(self, examples: Iterable[Example], scores: List[Scores]):
        """Loss per token and its gradient with respect to the emission scores.

        The decoder's own parameters (the CRF transitions) get their gradients
        here too; the optimizer applies them in finish_update.
        """
        validate_examples(examples, "BiLSTMTagger.get_loss")
        gold_docs = [self._gold_ids(eg) for eg in examples]
        out = scores[0]
        gold = np.full(tuple(out.mask.shape), -1, dtype=np.int64)
        for row, (d, start, end) in enumerate(out.segments):
            gold[row, : end - start] = gold_docs[d][start:end]
        emissions = out.emissions.detach().requires_grad_()
        n_tokens = max(int(out.mask.sum()), 1)
        loss = get_net(self.model).decoder.loss(emissions, out.mask, torch.from_numpy(gold)) / n_tokens
        loss.backward()
        return loss.item(), [emissions.grad]

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, object]:
        validate_examples(examples, "BiLSTMTagger.score")
        kwargs.update(target=self.target, spans_key=self.cfg["spans_key"])
        return self.scorer(examples, **kwargs)

    # ---- serialization ------------------------------------------------------
    def _weights_bytes(self) -> bytes:
        net = get_net(self.model)
        return dump_weights(net.spec.to_dict(), net.state_dict())

    def _load_weights(self, data: bytes, source: str) -> None:
        """Rebuild the network from saved weights after checking them against the config."""
        self._reset_label_caches()
        try:
            net = net_from_bytes(data)
        except WeightsError as err:
            raise ModelLoadError(f"{source}: {err}") from None
        self.model.set_dim("nO", len(self.tags), force=True)
        vectors_width = self.cfg.get("vectors_width", 0)
        if vectors_width and vectors_width_of(self.vocab) != vectors_width:
            raise ModelLoadError(
                f"{source}: the model was trained with {vectors_width}-d static vectors, "
                f"but the pipeline's vectors are {self.vocab.vectors.shape[1]}-d"
            )
        diffs = expected_spec(self.model, vectors_width).differences(net.spec)
        if diffs:
            raise ModelLoadError(f"{source}: the weights do not match the component's config: " + "; ".join(diffs))
        self._set_constraints(net)
        self.model.shims[0]._model = net

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "vocab": lambda: self.vocab.to_bytes(exclude=exclude),
            "model": self._weights_bytes,
        }
        return to_bytes(serialize, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "BiLSTMTagger":
        deserialize = {
            "cfg": lambda b: self.cfg.update(srsly.json_loads(b)),
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            "model": lambda b: self._load_weights(b, f"{self.name} (bytes)"),
        }
        from_bytes(bytes_data, deserialize, exclude)
        return self

    def to_disk(self, path: Union[str, Path], *, exclude=tuple()) -> None:
        data = self._weights_bytes()
        cfg = {**self.cfg, "weights_sha256": hashlib.sha256(data).hexdigest()}
        serialize = {
            "cfg": lambda p: _atomic_write(p, srsly.json_dumps(cfg, indent=2).encode("utf8")),
            "vocab": lambda p: self.vocab.to_disk(p, exclude=exclude),
            WEIGHTS_FILE: lambda p: _atomic_write(p, data),
        }
        to_disk(path, serialize, exclude)

    def from_disk(self, path: Union[str, Path], *, exclude=tuple()) -> "BiLSTMTagger":
        path = Path(path)
        deserialize = {
            "cfg": lambda p: self.cfg.update(_read_cfg(p)),
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            WEIGHTS_FILE: lambda p: self._load_weights(_read_checked(p, self.cfg.pop("weights_sha256", None)), str(p)),
        }
        for name in ("cfg", WEIGHTS_FILE):
            if name not in exclude and not (path / name).is_file():
                raise ModelLoadError(f"{path / name}: file is missing from the saved bilstm_tagger component")
        from_disk(path, deserialize, exclude)
        return self


def _same_tokens(eg: Example) -> bool:
    x, y = eg.predicted, eg.reference
    return len(x) == len(y) and np.array_equal(x.to_array(ORTH), y.to_array(ORTH))


def _biluo_to(tag: Optional[str], scheme: str) -> Optional[str]:
    """Map spaCy's BILUO gold tags ("-" or None = missing) onto the component's scheme."""
    if not tag or tag == "-":
        return None
    if scheme == "IOB2" and tag[0] in "LU":
        return ("I" if tag[0] == "L" else "B") + tag[1:]
    return tag


def _merge_with_preset(preset: List[Span], predicted: List[Span]) -> List[Span]:
    """Keep entities already on the doc (say from an entity_ruler) and add ours where they don't overlap."""
    if not preset:
        return predicted
    taken = set()
    for span in preset:
        taken.update(range(span.start, span.end))
    kept = [s for s in predicted if not taken.intersection(range(s.start, s.end))]
    return sorted(preset + kept, key=lambda s: s.start)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cfg(path: Path) -> dict:
    try:
        cfg = srsly.read_json(path)
    except ValueError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err}); the component's cfg file is corrupt") from None
    missing = {"labels", "target", "scheme"} - set(cfg)
    if missing:
        raise ModelLoadError(f"{path}: the component's cfg lacks {', '.join(sorted(missing))}")
    return cfg


def _read_checked(path: Path, sha256: Optional[str]) -> bytes:
    data = Path(path).read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelLoadError(
            f"{path}: checksum mismatch ({len(data)} bytes): the weights file is truncated or corrupt"
        )
    return data
