"""`python -m bilstm_tagger calibrate MODEL DATASET --split validation [--output DIR]`.

Measures how well entity confidences (`Span._.confidence`) are calibrated on a split: the
reliability table and the expected calibration error (ECE) of "this predicted entity is exactly a
gold entity". Then fits one temperature T on that split (the T minimising the gold-path NLL, all
path scores divided by T, `introspect.fit_temperature`), reports ECE at T, and with --output saves
the pipeline with `cfg["temperature"] = T`, which every later confidence, marginal and n-best
probability uses. Tag decisions never change: dividing every path score by T keeps the best path.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .confidence import get_records, spans_probability, record_spans
from .introspect import ReliabilityBin, entity_calibration_pairs, expected_calibration_error, fit_temperature, path_log_scores, reliability_table

_IMPOSSIBLE_PATH = -1e3  # a gold path scoring below this uses a forbidden move


@dataclass
class Calibration:
    n_docs: int
    n_entities: int
    ece: float
    table: List[ReliabilityBin]
    confidences: np.ndarray
    correct: np.ndarray


@dataclass
class TaggedSplit:
    """A split tagged by the pipeline: the predicted docs and the gold examples."""

    name: str  # the component's name
    docs: list
    examples: list


def find_tagger(nlp) -> Tuple[str, Any]:
    from .pipeline.component import BiLSTMTagger

    for name, pipe in nlp.pipeline:
        if isinstance(pipe, BiLSTMTagger):
            return name, pipe
    raise ValueError(f"the pipeline has no bilstm_tagger component (it has: {', '.join(nlp.pipe_names) or 'none'})")


def tag_split(nlp, examples: Sequence, batch_size: int = 256) -> TaggedSplit:
    name, pipe = find_tagger(nlp)
    if not hasattr(pipe.task, "spans"):
        raise ValueError(f"calibration is about entity confidence; the component's task is {pipe.task.name!r}")
    docs = list(nlp.pipe((eg.predicted.copy() for eg in examples), batch_size=batch_size))
    return TaggedSplit(name, docs, list(examples))


def calibration(nlp, name: str, docs: Sequence, references: Sequence, temperature: Optional[float] = None, n_bins: int = 10) -> Calibration:
    """Reliability of component `name`'s predicted spans on tagged `docs` against the gold spans of
    `references` (same tokens), at `temperature` (None = the temperature the pipeline has)."""
    pipe = nlp.get_pipe(name)
    predicted, gold = [], []
    for doc, reference in zip(docs, references):
        record = get_records(doc).get(name)
        spans = record_spans(record) if record else []
        conf = spans_probability(record, spans, temperature) if record else []
        predicted.append([(s, e, label, float(c)) for (s, e, label), c in zip(spans, conf)])
        gold.append([(s.start, s.end, s.label_) for s in pipe.task.spans(reference)])
    conf, ok = entity_calibration_pairs(predicted, gold)
    return Calibration(len(docs), len(conf), expected_calibration_error(conf, ok, n_bins), reliability_table(conf, ok, n_bins), conf, ok)


def fit_split_temperature(tagged: TaggedSplit, nlp) -> Tuple[float, int]:
    """The temperature fitted on the split's complete, legal gold paths, and how many docs it used."""
    pipe = nlp.get_pipe(tagged.name)
    rows, gold = [], []
    for doc, eg in zip(tagged.docs, tagged.examples):
        record = get_records(doc).get(tagged.name)
        ids = pipe.task.gold_ids(eg, pipe.tag_index) if record else None
        if record is None or (ids < 0).any() or len(ids) != len(record["emissions"]):
            continue  # missing gold: no single gold path to score
        rows.append(torch.as_tensor(np.asarray(record["emissions"], dtype=np.float64)))
        gold.append(torch.as_tensor(ids))
    if not rows:
        raise ValueError("no doc of the split has complete gold tags to fit a temperature on")
    record = next(r for r in (get_records(d).get(tagged.name) for d in tagged.docs) if r)
    n_tags = len(record["tags"])
    if "transitions" in record:
        start, trans, end = (torch.as_tensor(np.asarray(record[k], dtype=np.float64)) for k in ("start", "transitions", "end"))
    else:  # softmax: a CRF without transition scores is the product of token softmaxes
        start, trans, end = torch.zeros(n_tags, dtype=torch.float64), torch.zeros(n_tags, n_tags, dtype=torch.float64), torch.zeros(n_tags, dtype=torch.float64)
    emissions = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    paths = torch.nn.utils.rnn.pad_sequence(gold, batch_first=True)
    mask = torch.arange(emissions.shape[1])[None, :] < torch.tensor([len(r) for r in rows])[:, None]
    legal = path_log_scores(emissions, mask, start, trans, end, paths) > _IMPOSSIBLE_PATH
    keep = legal.nonzero().squeeze(1)
    return fit_temperature(emissions[keep], mask[keep], start, trans, end, paths[keep]), int(keep.numel())


def format_table(table: Sequence[ReliabilityBin]) -> str:
    lines = ["  bin          n   confidence  accuracy"]
    for b in table:
        if b.count:
            lines.append(f"  [{b.lower:.1f}, {b.upper:.1f})  {b.count:5d}   {b.mean_confidence:.3f}       {b.accuracy:.3f}")
    return "\n".join(lines)


# ---- command line ------------------------------------------------------------------------------


def read_split(nlp, args: argparse.Namespace, split: str, limit: int = 0) -> list:
    from .data.readers import HFDatasetReader

    _, pipe = find_tagger(nlp)
    reader = HFDatasetReader(args.dataset, split, args.name, args.tokens_column, args.tags_column, pipe.task.name,
                             pipe.task.spans_key, limit, args.revision,
                             group_sentences=getattr(args, "group_sentences", 1))
    return list(reader(nlp))


def load_pipeline(path: str):
    import spacy

    from .errors import ModelLoadError

    if not Path(path).is_dir():
        raise ModelLoadError(f"{path}: no such model directory")
    return spacy.load(path)


def split_calibration(tagged: TaggedSplit, nlp, temperature: Optional[float] = None, n_bins: int = 10) -> Calibration:
    return calibration(nlp, tagged.name, tagged.docs, [eg.reference for eg in tagged.examples], temperature, n_bins)


def _report(label: str, before: Calibration, after: Calibration) -> None:
    print(f"{label}: {before.n_docs} docs, {before.n_entities} predicted entities, "
          f"{before.correct.mean() if before.n_entities else 0:.3f} of them exact")
    print(f"  ECE before {before.ece:.4f}  after {after.ece:.4f}")
    print("  before:\n" + format_table(before.table))
    print("  after:\n" + format_table(after.table))


def run(args: argparse.Namespace) -> int:
    nlp = load_pipeline(args.model)
    name, pipe = find_tagger(nlp)
    pipe.cfg["temperature"] = None  # measure and fit from the uncalibrated model
    tagged = tag_split(nlp, read_split(nlp, args, args.split, args.limit), args.batch_size)
    temperature, n_fit = fit_split_temperature(tagged, nlp)
    print(f"temperature fitted on {args.split} ({n_fit} docs with complete gold paths): T = {temperature:.4f}")
    _report(args.split, split_calibration(tagged, nlp, 1.0, args.bins), split_calibration(tagged, nlp, temperature, args.bins))
    if args.test_split:
        held = tag_split(nlp, read_split(nlp, args, args.test_split, args.limit), args.batch_size)
        _report(f"{args.test_split} (held out)", split_calibration(held, nlp, 1.0, args.bins), split_calibration(held, nlp, temperature, args.bins))
    if args.output:
        pipe.cfg["temperature"] = temperature
        nlp.to_disk(args.output)
        print(f"saved the pipeline with temperature {temperature:.4f} to {args.output}")
    return 0
