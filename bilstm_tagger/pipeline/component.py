"""The spaCy pipeline component: `nlp.add_pipe("bilstm_tagger")` and its sibling factories.

The pipe speaks docs and numpy: it hands docs to its thinc model, gets numpy
emission scores back, adds its decision bias (`decision.py`) and has them decoded
into tag ids (`ml.decode`), and trains the model with numpy gold tag ids through
`TaggerLoss`.
What a task means (labels, gold, annotations, scores) comes from
`pipeline/tasks.py`; torch stays behind the model (`bilstm_tagger.ml`).

No `from __future__ import annotations` here: spaCy validates `initialize`'s
settings with pydantic from its real annotations.
"""

import hashlib
import os
import warnings
import weakref
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import srsly
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import from_bytes, from_disk, to_bytes, to_disk
from thinc.api import Config, Model, Optimizer

from ..errors import ConfigError, DatasetError, LabelError, ModelLoadError, WeightsError
from ..ml import PRECISIONS, resolve_precision, set_precision
from ..ml.distill import TEACHER_KEY, MappingCache, teacher_targets
from ..ml import TaggerLoss, check_vectors, crf_scores, decode, is_initialized, load_tagger_bytes, set_transition_constraints
from ..util.atomic import atomic_write
from .confidence import (ScoreContext, get_records, make_record, record_confidences, record_raw_scores, record_spans,
                         register_extensions, store_record, write_alternatives)
from .decision import Thresholds, bias_vector, check_bias, check_thresholds, threshold_for
from .tasks import TASKS, SpanTask, Task, get_task
from .threads import ThreadTuner, make_tuner

WEIGHTS_FILE = "model"
CFG_FILE = "cfg"
# Settings that only change what inference writes (or how training evaluates): the config given at load
# time wins over the saved cfg.
RUNTIME_SETTINGS = ("alternatives_key", "alternatives_k", "alternatives_threshold", "min_confidence", "fit_decision_during_training",
                    "distill_weight", "distill_temperature")

DEFAULT_MODEL = Config().from_str(
    """
[model]
@architectures = "bilstm_tagger.BiLSTMTagger.v2"

[model.embed]
@architectures = "bilstm_tagger.HashCharEmbed.v1"
"""
)["model"]


# The optimizer each pipe was last updated with; weak keys, so a dropped pipeline takes its optimizer
# (and the averages it holds) with it, and pickled pipes do not carry one.
_OPTIMIZERS: "weakref.WeakKeyDictionary[BiLSTMTagger, Optimizer]" = weakref.WeakKeyDictionary()


def last_optimizer(nlp: Language) -> Optional[Optimizer]:
    """The optimizer that last updated a bilstm_tagger pipe of `nlp` (None before any update)."""
    for _, pipe in nlp.pipeline:
        if pipe in _OPTIMIZERS:
            return _OPTIMIZERS[pipe]
    return None


@dataclass
class Predictions:
    """What `BiLSTMTagger.predict` returns: per doc, the tag ids (int64, indices into `pipe.tags`)
    and the emission scores they were decoded from (float32, (n_tokens, n_tags), decision bias
    included), which `set_annotations` files for `Span._.confidence`."""

    ids: List[np.ndarray]
    scores: List[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[i]


class BiLSTMTagger(TrainablePipe):
    """A BiLSTM(-CRF) sequence tagger; its task decides what it reads and writes on a Doc."""

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
        alternatives_key: Optional[str] = None,
        alternatives_k: int = 5,
        alternatives_threshold: float = 0.05,
        min_confidence: Thresholds = None,
        fit_decision_during_training: bool = False,
        precision: str = "fp32",
        distill_weight: float = 1.0,
        distill_temperature: float = 1.0,
    ) -> None:
        """Create the pipe; a factory (`bilstm_tagger`, `bilstm_spans`, `bilstm_tags`, `bilstm_pos`) calls this.

        vocab (Vocab): the shared vocabulary.
        model (Model[List[Doc], List[Ints1d]]): a tagger architecture, e.g. bilstm_tagger.BiLSTMTagger.v2.
        name (str): the component's name in the pipeline.
        target (str): the task: "ents", "spans", "tag" or "pos".
        scheme (str): "BILOU" or "IOB2", the tags a span task predicts.
        spans_key (str): the doc.spans key of the "spans" task.
        torch_threads (int): torch's intra-op threads; 0 = measured, 1 or all cores, whichever tags faster
            (always 1 in nlp.pipe(n_process=N) workers).
        scorer (Optional[Callable]): scores a list of Examples, e.g. bilstm_tagger.seqeval_scorer.v1.
        alternatives_key (Optional[str]): span tasks: write alternative spans from the n-best paths to
            doc.spans[alternatives_key] (None = off; costs an n-best search per doc when on).
        alternatives_k (int): how many best paths to take alternatives from.
        alternatives_threshold (float): keep an alternative when its exact probability is at least this.
        min_confidence (None, float or Dict[str, float]): span tasks: drop a predicted span whose exact
            probability (`Span._.confidence`) is below this, globally or per label (None = keep all).
        fit_decision_during_training (bool): span tasks: at each evaluation after training updates,
            refit the decision bias on the evaluation docs (one scalar, kept only when significant:
            see pipeline/decision_fit.py), so `spacy train` picks model-best on the balanced F1.
        precision (str): what tagging computes in: "fp32", "bf16", "int8" (LSTM and linear layers), or
            "auto" (bf16 on CPUs that compute it natively, else fp32). Training always runs in float32.
            Read from the config at every load, never from the saved cfg: see ml/precision.py.
        distill_weight (float): training on examples that carry teacher marginals (`bilstm_tagger.DistillCorpus.v1`):
            the weight of the cross-entropy from the teacher's token marginals to the model's own (ml/distill.py).
        distill_temperature (float): the model's scores are divided by this in that term.
        """
        self.task: Task = get_task(target, scheme, spans_key)
        if torch_threads < 0:
            raise ConfigError("bilstm_tagger: torch_threads must be >= 0 (0 = measured)")
        if alternatives_key is not None and (not isinstance(self.task, SpanTask) or (target == "spans" and alternatives_key == spans_key)):
            raise ConfigError("bilstm_tagger: alternatives_key needs a span task (ents or spans) and a key other than spans_key")
        if alternatives_k < 2 or not 0.0 <= alternatives_threshold <= 1.0:
            raise ConfigError("bilstm_tagger: alternatives_k must be >= 2 and alternatives_threshold in [0, 1]")
        if distill_weight < 0 or not distill_temperature > 0:
            raise ConfigError("bilstm_tagger: distill_weight must be >= 0 and distill_temperature > 0")
        min_confidence = check_thresholds(min_confidence)
        if min_confidence is not None:
            _require_span_task(self.task, "min_confidence")
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
            "alternatives_key": alternatives_key,
            "alternatives_k": alternatives_k,
            "alternatives_threshold": alternatives_threshold,
            "min_confidence": min_confidence,
            "temperature": None,  # set by `python -m bilstm_tagger calibrate`
            "decision_bias": None,  # set by `python -m bilstm_tagger calibrate`: see pipeline/decision.py
            "fit_decision_during_training": bool(fit_decision_during_training),
            "distill_weight": float(distill_weight),
            "distill_temperature": float(distill_temperature),
        }
        self._mappings = None
        self._updated_since_score = False
        self._tag_index: Optional[Dict[str, int]] = None
        self._threads_set_in: Optional[int] = None
        self._tuner: Optional[ThreadTuner] = None
        self._configure_threads()
        self.precision = ""
        self.set_precision(precision)
        register_extensions()

    # ---- labels -------------------------------------------------------------
    @property
    def target(self) -> str:
        return self.task.name

    @property
    def labels(self) -> tuple:
        """The labels the component predicts (entity types, span labels or tags)."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tags(self) -> List[str]:
        """The tag inventory the model predicts over (what nO counts)."""
        return self.task.tag_names(self.labels)

    @property
    def tag_index(self) -> Dict[str, int]:
        if self._tag_index is None:
            self._tag_index = {tag: i for i, tag in enumerate(self.tags)}
        return self._tag_index

    def add_label(self, label: str) -> int:
        """Add a label before initialize. Returns 1 if it was new, 0 if known.

        label (str): the label to add.
        """
        if not isinstance(label, str) or not label:
            raise LabelError(f"bilstm_tagger: labels must be non-empty strings, not {label!r}")
        if label in self.labels:
            return 0
        if is_initialized(self.model):
            raise LabelError(
                f"bilstm_tagger: cannot add label {label!r} to a model that is already built; "
                "list every label before nlp.initialize()"
            )
        self.cfg["labels"].append(label)
        self._tag_index = None
        return 1

    def initialize(
        self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None, labels: Optional[Sequence[str]] = None
    ) -> None:
        """Infer the labels from the examples (or take `labels`), then build the network.

        get_examples (Callable[[], Iterable[Example]]): returns the training examples.
        nlp (Language): the pipeline (unused).
        labels (Optional[Sequence[str]]): the labels, e.g. from `spacy init labels`.
        """
        validate_get_examples(get_examples, "BiLSTMTagger.initialize")
        if labels is None:
            labels = sorted({label for eg in get_examples() for label in self.task.labels_in(eg.reference) if label})
        if not labels:
            where = self.task.description if self.target != "spans" else f"spans under doc.spans[{self.task.spans_key!r}]"
            raise DatasetError(f"bilstm_tagger: the training examples contain no {where}, so there is nothing to learn")
        self.cfg["labels"] = []
        self._tag_index = None
        for label in labels:
            self.add_label(label)
        doc_sample = [eg.reference for eg in islice(get_examples(), 10)]
        self.model.set_dim("nO", len(self.tags), force=True)
        self.model.initialize(X=doc_sample)
        self._set_constraints()
        self.cfg["min_confidence"] = check_thresholds(self.cfg["min_confidence"], self.labels)
        self._mappings = None
        self._check_teachers(get_examples)

    def _check_teachers(self, get_examples: Callable[[], Iterable[Example]]) -> None:
        """Every teacher tag set among the examples must fit this pipe's labels (checked before training)."""
        seen = set()
        for eg in get_examples():
            record = eg.reference.user_data.get(TEACHER_KEY) if eg.reference.user_data else None
            if record is not None and (tuple(record["tags"]), record["scheme"]) not in seen:
                seen.add((tuple(record["tags"]), record["scheme"]))
                self.check_teacher(record["tags"], record["scheme"])

    def _set_constraints(self) -> None:
        constraints = self.task.constraints(self.tags)
        if constraints is not None:
            set_transition_constraints(self.model.get_ref("decoder"), *constraints)

    def _configure_threads(self) -> None:
        # Once per process: nlp.pipe(n_process=N) workers get a pickled copy, not a fresh __init__.
        if self._threads_set_in != os.getpid():
            self._tuner = make_tuner(self.cfg["torch_threads"])
            self._threads_set_in = os.getpid()

    def _timed(self, n_tokens: int, fn: Callable):
        """Run `fn` under the thread count the tuner picks (or the fixed one)."""
        self._configure_threads()
        return fn() if self._tuner is None else self._tuner.run(n_tokens, fn)

    # ---- inference ----------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> Predictions:
        """Tag ids for each doc, one per token, with the emission scores they were decoded from.

        docs (Iterable[Doc]): the docs to tag.
        RETURNS (Predictions): per doc, int64 tag ids (indices into `self.tags`) and float32 scores
            (n_tokens, n_tags), the decision bias included.
        """
        docs = list(docs)
        n_tokens = sum(len(doc) for doc in docs)
        if not n_tokens:
            empty = np.zeros((0, len(self.tags)), dtype=np.float32)
            return Predictions([np.zeros(len(doc), dtype=np.int64) for doc in docs], [empty for _ in docs])
        return self._timed(n_tokens, lambda: self._predict(docs))

    def _predict(self, docs: List[Doc]) -> Predictions:
        to_numpy = self.model.ops.to_numpy
        scores = [to_numpy(s) for s in self.model.predict(docs)]
        return self.decide(scores)

    def decide(self, scores: List[np.ndarray]) -> Predictions:
        """Decode emission scores under the component's decision bias (the bias is added first)."""
        bias = self._bias()
        if bias is not None:
            scores = [s + bias for s in scores]
        return Predictions(decode(self.model.get_ref("decoder"), scores), scores)  # decode gives int64 numpy ids

    def _bias(self) -> Optional[np.ndarray]:
        """The decision bias per tag; None without one (tag and pos tasks never have one)."""
        return bias_vector(self.tags, self.cfg.get("decision_bias")) if isinstance(self.task, SpanTask) else None

    def set_annotations(self, docs: Iterable[Doc], predictions: Predictions) -> None:
        """Write the predicted tags to the docs, as the task says (doc.ents, doc.spans, token.tag_, token.pos_).

        Span tasks also file the doc's scores for `Span._.confidence` (computed only when read),
        drop spans under `min_confidence` when it is set and, when `alternatives_key` is set, write
        alternative spans there.

        docs (Iterable[Doc]): the docs that were tagged.
        predictions (Predictions): what `predict` returned for them.
        """
        tags = self.tags
        context = self._score_context() if isinstance(self.task, SpanTask) else None
        alt_key, thresholds = self.cfg["alternatives_key"], self.cfg.get("min_confidence")
        for doc, ids, scores in zip(docs, predictions.ids, predictions.scores):
            doc_tags = [tags[i] for i in ids]
            record = make_record(context, ids, scores) if context is not None and len(ids) else None
            if record is not None and thresholds is not None:
                doc_tags = _drop_unsure(doc_tags, record, thresholds)
            self.task.set_annotations(doc, doc_tags)
            if record is None:
                continue
            store_record(doc, self.name, record)
            if alt_key:
                write_alternatives(doc, record, alt_key, self.cfg["alternatives_k"], self.cfg["alternatives_threshold"])

    def _score_context(self) -> ScoreContext:
        temperature = self.cfg.get("temperature") or 1.0
        return ScoreContext(tuple(self.tags), self.task.scheme, crf_scores(self.model.get_ref("decoder")), float(temperature),
                            self._bias())

    def set_precision(self, precision: str) -> None:
        """Change what tagging computes in: "fp32", "bf16", "int8" or "auto" (see ml/precision.py).

        precision (str): the setting; "auto" is resolved here, for this machine.
        """
        if precision not in PRECISIONS + ("auto",):
            raise ConfigError(f"bilstm_tagger: precision must be one of {', '.join(PRECISIONS)} or auto, not {precision!r}")
        self.precision = resolve_precision(precision)
        set_precision(self.model, self.precision)

    def set_min_confidence(self, thresholds: Thresholds) -> None:
        """Change `min_confidence` on a loaded pipe: None, a probability, or {label: probability}.

        thresholds (None, float or Dict[str, float]): drop predicted spans less probable than this.
        """
        if thresholds is not None:
            _require_span_task(self.task, "min_confidence")
        self.cfg["min_confidence"] = check_thresholds(thresholds, self.labels)

    def set_decision_bias(self, bias) -> None:
        """Set the decision bias by hand (`calibrate` fits it): None, a number, or {label: number}.

        bias (None, float or Dict[str, float]): added to every non-O emission score of those labels.
        """
        if bias is not None:
            _require_span_task(self.task, "decision_bias")
        self.cfg["decision_bias"] = check_bias(bias, self.labels)

    def decision_fitter(self, records: Sequence[Optional[dict]], examples: Sequence[Example]):
        """A `DecisionFitter` over the scores this pipe filed for the examples' docs (`records`, one per
        example, None for an empty doc; the bias they were tagged with is taken out) and their gold."""
        from .decision_fit import DecisionFitter
        from .scoring import gold_rows, gold_spans

        empty = np.zeros((0, len(self.tags)), dtype=np.float32)
        raw = [record_raw_scores(r) if r is not None else empty for r in records]
        decoder = self.model.get_ref("decoder")
        return DecisionFitter(raw, [gold_spans(eg, self.task.spans) for eg in examples], [gold_rows(eg) for eg in examples],
                              self.tags, self.labels, lambda scores: decode(decoder, scores))

    # ---- introspection ------------------------------------------------------
    def inspect(self, docs: Iterable[Doc]) -> list:
        """What the network computes on each doc: per layer and direction the RNN gates, candidate,
        cell and hidden states, the attention weights per head, the CRF transitions (forbidden moves
        marked), per-token tag marginals and the predicted entities with their confidence.
        The docs are not changed. See `bilstm_tagger.inspection.inspect.inspect_docs`.

        docs (Iterable[Doc]): the docs to look at.
        RETURNS (List[DocInspection]): one per doc.
        """
        from ..inspection.inspect import inspect_docs

        return inspect_docs(self, list(docs))

    def n_best(self, docs: Iterable[Doc], k: int = 5) -> list:
        """The k most probable tag paths per doc, best first (the first is the Viterbi path), each
        as its spans and its probability (temperature-scaled when the model has a temperature).

        docs (Iterable[Doc]): the docs to tag (not changed).
        k (int): how many paths.
        RETURNS (List[List[NBestPath]]): per doc, up to k paths.
        """
        from ..inspection.inspect import n_best

        return n_best(self, list(docs), k)

    # ---- training -----------------------------------------------------------
    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None, losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """One training step (TrainablePipe.update), under the tuned thread count.

        examples (Iterable[Example]): the batch.
        drop (float): the dropout rate.
        sgd (Optimizer): thinc's optimizer; None accumulates gradients only.
        losses (Dict[str, float]): the running losses, updated in place.
        """
        examples = list(examples)
        n_tokens = sum(len(eg.predicted) for eg in examples)
        self._updated_since_score = True
        return self._timed(n_tokens, lambda: super(BiLSTMTagger, self).update(examples, drop=drop, sgd=sgd, losses=losses))

    def finish_update(self, sgd: Optimizer) -> None:
        """Apply the gradients (TrainablePipe.finish_update), remembering the optimizer for checkpoints.

        sgd (Optimizer): thinc's optimizer.
        """
        # spaCy's loop hands its optimizer to the pipes only: a checkpoint saver outside that loop
        # (bilstm_tagger.checkpoints) finds it here to swap in its averages, as spaCy's save does.
        _OPTIMIZERS[self] = sgd
        super().finish_update(sgd)

    def get_loss(self, examples: Iterable[Example], scores: List) -> tuple:
        """The per-token loss and its gradient with respect to the model's scores.

        examples (Iterable[Example]): the batch, with gold annotations on `eg.reference`.
        scores: what the model's begin_update returned for `[eg.predicted for eg in examples]`.
        RETURNS (Tuple[float, List[Floats2d]]): the loss and the gradient.
        """
        validate_examples(examples, "BiLSTMTagger.get_loss")
        examples = list(examples)
        truths = [self.task.gold_ids(eg, self.tag_index) for eg in examples]
        records = [eg.reference.user_data.get(TEACHER_KEY) if eg.reference.user_data else None for eg in examples]
        teachers = teacher_targets(records, self._mapping_cache()) if any(r is not None for r in records) else None
        loss_fn = TaggerLoss(self.model.get_ref("decoder"), self.cfg.get("distill_weight", 1.0), self.cfg.get("distill_temperature", 1.0))
        d_scores, loss = loss_fn(scores, truths, teachers)
        return loss, d_scores

    def _mapping_cache(self) -> MappingCache:
        """How teacher marginals meet this pipe's tags (ml/distill.py); rebuilt when the tags change."""
        if self._mappings is None or self._mappings.student_tags != self.tags:
            self._mappings = MappingCache(self.tags, self.task.scheme)
        return self._mappings

    def check_teacher(self, tags: Sequence[str], scheme: str) -> None:
        """Refuse (LabelError) teacher marginals over tags this pipe cannot learn from."""
        self._mapping_cache().get(tags, scheme)

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, object]:
        """Score a batch of examples with the component's scorer (seqeval for span tasks).

        examples (Iterable[Example]): predicted docs with their gold references.
        RETURNS (Dict[str, Any]): e.g. ents_p, ents_r, ents_f, ents_per_type, ents_macro_f.
        """
        validate_examples(examples, "BiLSTMTagger.score")
        examples = list(examples)
        if self._updated_since_score and self.cfg.get("fit_decision_during_training") and isinstance(self.task, SpanTask):
            examples = self._refit_decision(examples)
        self._updated_since_score = False
        kwargs.update(target=self.target, spans_key=self.task.spans_key)
        return self.scorer(examples, **kwargs)

    def _refit_decision(self, examples: List[Example]) -> List[Example]:
        """Refit the decision bias on evaluation examples this pipe tagged (during training) and
        return them re-annotated under it; examples it did not tag are left as they are."""
        from .decision_fit import fit_decision

        records = [get_records(eg.predicted).get(self.name) for eg in examples]
        if any(r is None for eg, r in zip(examples, records) if len(eg.predicted)) or len(examples) < 4:
            return examples
        fitter = self.decision_fitter(records, examples)
        self.cfg["decision_bias"] = fit_decision(fitter, self.cfg.get("decision_bias"), per_label=False).bias
        predictions = self.decide(fitter.scores)
        docs = []
        for eg, record in zip(examples, records):
            doc = eg.predicted.copy()
            if self.task.name == "ents" and record is not None:
                ours = set(record_spans(record))  # re-set below; entities set before this pipe stay
                doc.ents = [e for e in doc.ents if (e.start, e.end, e.label_) not in ours]
            docs.append(doc)
        self.set_annotations(docs, predictions)
        return [Example(doc, eg.reference) for doc, eg in zip(docs, examples)]

    # ---- serialization ------------------------------------------------------
    def _load_weights(self, data: bytes, source: str) -> None:
        """Load the model's weights after checking them against the config."""
        self._tag_index = None
        self.model.set_dim("nO", len(self.tags), force=True)
        try:
            load_tagger_bytes(self.model, data)
            check_vectors(self.model.get_ref("embed"), self.vocab)
        except (WeightsError, ConfigError) as err:
            raise ModelLoadError(f"{source}: {err}") from None
        self._set_constraints()

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        """The component (cfg, vocab and model weights) as bytes."""
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "vocab": lambda: self.vocab.to_bytes(exclude=exclude),
            "model": self.model.to_bytes,
        }
        return to_bytes(serialize, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()) -> "BiLSTMTagger":
        """Load the component from `to_bytes` output; ModelLoadError says what is wrong."""
        deserialize = {
            "cfg": lambda b: self._update_cfg(srsly.json_loads(b), f"{self.name} (bytes) cfg"),
            "vocab": lambda b: self.vocab.from_bytes(b, exclude=exclude),
            "model": lambda b: self._load_weights(b, f"{self.name} (bytes)"),
        }
        try:
            from_bytes(bytes_data, deserialize, exclude)
        except ModelLoadError:
            raise
        except Exception as err:  # msgpack raises several types for truncated or foreign bytes
            raise ModelLoadError(
                f"{self.name} (bytes): weights are damaged ({type(err).__name__}): the bytes are truncated or corrupt"
            ) from None
        return self

    def _update_cfg(self, saved: dict, source: object) -> None:
        self.cfg.update({k: v for k, v in saved.items() if k not in RUNTIME_SETTINGS})
        self._tag_index = None
        try:  # pipelines saved before 0.3 have no decision bias
            self.cfg["decision_bias"] = check_bias(self.cfg.get("decision_bias"), self.labels)
            self.cfg["min_confidence"] = check_thresholds(self.cfg.get("min_confidence"), self.labels)
        except ConfigError as err:
            raise ModelLoadError(f"{source}: {err}") from None

    def to_disk(self, path: Union[str, Path], *, exclude=tuple()) -> None:
        """Save cfg, vocab and weights to a directory; each file is written atomically."""
        data = self.model.to_bytes()
        cfg = {**self.cfg, "weights_sha256": hashlib.sha256(data).hexdigest()}
        serialize = {
            CFG_FILE: lambda p: atomic_write(p, srsly.json_dumps(cfg, indent=2).encode("utf8")),
            "vocab": lambda p: self.vocab.to_disk(p, exclude=exclude),
            WEIGHTS_FILE: lambda p: atomic_write(p, data),
        }
        to_disk(path, serialize, exclude)

    def from_disk(self, path: Union[str, Path], *, exclude=tuple()) -> "BiLSTMTagger":
        """Load a directory written by `to_disk` (or by release 0.1); ModelLoadError names the bad file."""
        path = Path(path)
        deserialize = {
            CFG_FILE: lambda p: self._update_cfg(_read_cfg(p), p),
            "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
            WEIGHTS_FILE: lambda p: self._load_weights(_read_checked(p, self.cfg.pop("weights_sha256", None)), str(p)),
        }
        for name in (CFG_FILE, WEIGHTS_FILE):
            if name not in exclude and not (path / name).is_file():
                raise ModelLoadError(f"{path / name}: file is missing from the saved bilstm_tagger component")
        from_disk(path, deserialize, exclude)
        return self


def _require_span_task(task: Task, setting: str) -> None:
    if not isinstance(task, SpanTask):
        raise ConfigError(f"bilstm_tagger: {setting} needs a span task (ents or spans)")


def _drop_unsure(tags: List[str], record: dict, thresholds: Thresholds) -> List[str]:
    """The tags with every predicted span under its confidence threshold set to O."""
    spans, confidence = record_confidences(record)
    tags = list(tags)
    for (start, end, label), p in zip(spans, confidence):
        if p < threshold_for(thresholds, label):
            tags[start:end] = ["O"] * (end - start)
    return tags



def _read_cfg(path: Path) -> dict:
    try:
        cfg = srsly.read_json(path)
    except ValueError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err}); the component's cfg file is corrupt") from None
    missing = {"labels", "target", "scheme"} - set(cfg)
    if missing:
        raise ModelLoadError(f"{path}: the component's cfg lacks {', '.join(sorted(missing))}")
    cfg.pop("vectors_width", None)  # release 0.1 kept it here; the model's own settings hold it now
    return cfg


def _read_checked(path: Path, sha256: Optional[str]) -> bytes:
    data = Path(path).read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelLoadError(
            f"{path}: checksum mismatch ({len(data)} bytes): the weights file is truncated or corrupt"
        )
    return data


# ---- factories: one per task, each with the score weights its scorer produces -----------------

_COMMON = {
    "model": DEFAULT_MODEL,
    "scheme": "BILOU",
    "spans_key": "sc",
    "torch_threads": 0,
    "scorer": {"@scorers": "bilstm_tagger.seqeval_scorer.v1"},
    "alternatives_key": None,
    "alternatives_k": 5,
    "alternatives_threshold": 0.05,
    "min_confidence": None,
    "fit_decision_during_training": False,
    "precision": "fp32",
    "distill_weight": 1.0,
    "distill_temperature": 1.0,
}


@Language.factory(
    "bilstm_tagger",
    assigns=TASKS["ents"].assigns,
    default_config={**_COMMON, "target": "ents"},
    default_score_weights=TASKS["ents"]().score_weights(),
)
def make_bilstm_tagger(
    nlp: Language, name: str, model: Model, target: str, scheme: str, spans_key: str, torch_threads: int, scorer: Optional[Callable],
    alternatives_key: Optional[str] = None, alternatives_k: int = 5, alternatives_threshold: float = 0.05,
    min_confidence: Thresholds = None, fit_decision_during_training: bool = False, precision: str = "fp32",
    distill_weight: float = 1.0, distill_temperature: float = 1.0,
) -> BiLSTMTagger:
    """BiLSTM(-CRF) named entity recognizer writing doc.ents.

    `target` is kept for pipelines saved by release 0.1; new configs use the
    task's own factory, whose default score weights name the scores it produces.
    """
    if target != "ents" and target in TASKS:
        factory = TASKS[target].factory
        warnings.warn(
            f"bilstm_tagger with target={target!r}: spacy train ranks checkpoints by ents_f, which this "
            f"target never produces; use factory {factory!r} instead",
            stacklevel=2,
        )
    return BiLSTMTagger(
        nlp.vocab, model, name, target=target, scheme=scheme, spans_key=spans_key, torch_threads=torch_threads, scorer=scorer,
        alternatives_key=alternatives_key, alternatives_k=alternatives_k, alternatives_threshold=alternatives_threshold,
        min_confidence=min_confidence, fit_decision_during_training=fit_decision_during_training,
        precision=precision, distill_weight=distill_weight, distill_temperature=distill_temperature,
    )


def _task_factory(task_name: str) -> Callable:
    def make(
        nlp: Language, name: str, model: Model, scheme: str, spans_key: str, torch_threads: int, scorer: Optional[Callable],
        alternatives_key: Optional[str] = None, alternatives_k: int = 5, alternatives_threshold: float = 0.05,
        min_confidence: Thresholds = None, fit_decision_during_training: bool = False, precision: str = "fp32",
        distill_weight: float = 1.0, distill_temperature: float = 1.0,
    ) -> BiLSTMTagger:
        return BiLSTMTagger(
            nlp.vocab, model, name, target=task_name, scheme=scheme, spans_key=spans_key, torch_threads=torch_threads, scorer=scorer,
            alternatives_key=alternatives_key, alternatives_k=alternatives_k, alternatives_threshold=alternatives_threshold,
            min_confidence=min_confidence, fit_decision_during_training=fit_decision_during_training,
            precision=precision, distill_weight=distill_weight, distill_temperature=distill_temperature,
        )

    make.__name__ = f"make_{TASKS[task_name].factory}"
    make.__doc__ = f"BiLSTM(-CRF) tagger for the {task_name!r} task (writes {', '.join(TASKS[task_name].assigns)})."
    return Language.factory(
        TASKS[task_name].factory,
        assigns=TASKS[task_name].assigns,
        default_config=_COMMON,
        default_score_weights=TASKS[task_name]().score_weights(),
        func=make,
    )


make_bilstm_spans = _task_factory("spans")
make_bilstm_tags = _task_factory("tag")
make_bilstm_pos = _task_factory("pos")

# Docs read back from a DocBin in a process that loaded this package answer `span._.confidence` too.
register_extensions()
