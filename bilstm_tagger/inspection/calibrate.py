"""`python -m bilstm_tagger calibrate MODEL DATASET --split validation [--output DIR]`.

Fits two things on a split, each kept only when it measurably helps:

1. **The decision** (span tasks): an additive bias on every non-O emission score, one scalar or one
   per label, chosen to maximise seqeval F1 on the split and kept only when repeated 2-fold
   cross-validation finds a significant held-out gain (`pipeline/decision_fit.py`). Prints P/R/F1
   before and after.
2. **The temperature**: one T minimising the gold-path NLL of the (biased) model, all path scores
   divided by T (`inspection.calibration.fit_temperature`). Tag decisions do not change with T; confidences
   do. It is kept only when it lowers the expected calibration error (ECE) of "this predicted
   entity is exactly a gold entity" on the split.

With --output the pipeline is saved with `cfg["decision_bias"]` and `cfg["temperature"]`, which
every later prediction, confidence, marginal and n-best probability uses.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..pipeline.confidence import get_records, make_record, record_raw_scores, record_spans, spans_probability, store_record
from ..pipeline.decision import describe_bias
from ..errors import ConfigError, DatasetError
from ..pipeline.decision_fit import DecisionFit, DecisionFitter
from ..pipeline.decision_fit import fit_decision as _fit_decision  # `fit_decision` is calibrate()'s flag
from ..pipeline.loading import find_tagger, load_pipeline
from .calibration import ReliabilityBin, entity_calibration_pairs, expected_calibration_error, fit_temperature, path_log_scores, reliability_table

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


def tag_split(nlp, examples: Sequence, batch_size: int = 256) -> TaggedSplit:
    name, pipe = find_tagger(nlp)
    if not hasattr(pipe.task, "spans"):
        raise ConfigError(f"calibration is about entity confidence; the component's task is {pipe.task.name!r}")
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
        raise DatasetError("no doc of the split has complete gold tags to fit a temperature on")
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


# ---- the command (cli/calibrate.py maps its arguments onto `calibrate`) ------------------------


def read_split(nlp, dataset: str, split: str, *, limit: int = 0, name: Optional[str] = None,
               revision: Optional[str] = None, tokens_column: str = "tokens", tags_column: str = "ner_tags",
               group_sentences: int = 1) -> list:
    """The examples of `split` of `dataset` (a hub id or a local directory in hub layout), read for
    the pipeline's tagger (its task and spans key)."""
    from ..data.readers import HFDatasetReader

    _, pipe = find_tagger(nlp)
    reader = HFDatasetReader(dataset, split, name, tokens_column, tags_column, pipe.task.name,
                             pipe.task.spans_key, limit, revision, group_sentences=group_sentences)
    return list(reader(nlp))


def split_calibration(tagged: TaggedSplit, nlp, temperature: Optional[float] = None, n_bins: int = 10) -> Calibration:
    return calibration(nlp, tagged.name, tagged.docs, [eg.reference for eg in tagged.examples], temperature, n_bins)


def _report(label: str, before: Calibration, after: Calibration) -> None:
    print(f"{label}: {before.n_docs} docs, {before.n_entities} predicted entities, "
          f"{before.correct.mean() if before.n_entities else 0:.3f} of them exact")
    print(f"  ECE before {before.ece:.4f}  after {after.ece:.4f}")
    print("  before:\n" + format_table(before.table))
    print("  after:\n" + format_table(after.table))


def split_fitter(tagged: TaggedSplit, pipe) -> DecisionFitter:
    """A decision fitter over the split's filed scores (without their bias) and its gold spans."""
    return pipe.decision_fitter([get_records(doc).get(tagged.name) for doc in tagged.docs], tagged.examples)


def redecide(tagged: TaggedSplit, pipe) -> None:
    """Re-decode the tagged docs' filed scores under the pipe's current decision bias and temperature
    and file the new records, as tagging the split again would (without a second forward pass)."""
    live = [(doc, get_records(doc).get(tagged.name)) for doc in tagged.docs]
    live = [(doc, record) for doc, record in live if record is not None]
    predictions = pipe.decide([record_raw_scores(record) for _, record in live])
    context = pipe._score_context()
    for (doc, _), ids, scores in zip(live, predictions.ids, predictions.scores):
        store_record(doc, tagged.name, make_record(context, ids, scores))


def report_decision(fit: DecisionFit, split: str) -> None:
    print(f"decision fitted on {split}:")
    print(f"  best scalar bias on the split: {fit.scalar:+.2f}; held-out gain over the current decision "
          f"{100 * fit.scalar_test.mean:+.2f} F1 (p = {fit.scalar_test.p_value:.3f})")
    if fit.label_bias is not None and fit.label_test is not None:
        print(f"  best per-label bias: {describe_bias(fit.label_bias)}; held-out gain over one scalar "
              f"{100 * fit.label_test.mean:+.2f} F1 (p = {fit.label_test.p_value:.3f})")
    for note in fit.notes:
        print(f"  {note}")
    print(f"  decision: {describe_bias(fit.bias)}" + (" (unchanged)" if fit.kind == "kept" else f" ({fit.kind})"))
    print(f"  {split} before: {fit.before}")
    print(f"  {split} after:  {fit.after}")


def calibrate(
    model: str, dataset: str, *, split: str = "validation", test_split: Optional[str] = None, limit: int = 0,
    test_limit: int = 0, name: Optional[str] = None, revision: Optional[str] = None, tokens_column: str = "tokens",
    tags_column: str = "ner_tags", group_sentences: int = 1, output: Optional[str] = None,
    json_path: Optional[str] = None, bins: int = 10, batch_size: int = 256, fit_decision: bool = True,
    per_label: bool = True, alpha: float = 0.05,
) -> Dict[str, Any]:
    """Fit the decision bias (unless `fit_decision` is False) and the temperature of pipeline `model`
    on `split` of `dataset`; print what was fitted; with `test_split` also score a held-out split;
    with `output` save the calibrated pipeline there; with `json_path` write the summary there.
    Returns the summary (what `json_path` gets)."""
    def read(which: str, n: int) -> list:
        return read_split(nlp, dataset, which, limit=n, name=name, revision=revision, tokens_column=tokens_column,
                          tags_column=tags_column, group_sentences=group_sentences)

    nlp = load_pipeline(model)
    _, pipe = find_tagger(nlp)
    old_temperature, old_bias = pipe.cfg.get("temperature"), pipe.cfg.get("decision_bias")
    summary: Dict[str, Any] = {"model": model, "dataset": dataset, "split": split, "limit": limit,
                               "old_decision_bias": old_bias, "old_temperature": old_temperature}
    # Tag once with the raw model; every decision and temperature is then tried on the filed scores.
    pipe.cfg["temperature"], pipe.cfg["decision_bias"] = None, None
    tagged = tag_split(nlp, read(split, limit), batch_size)
    bias = old_bias
    if fit_decision:
        fit = _fit_decision(split_fitter(tagged, pipe), old_bias, alpha=alpha, per_label=per_label)
        report_decision(fit, split)
        bias = fit.bias
        summary["decision"] = _fit_summary(fit)
    pipe.cfg["decision_bias"] = bias
    redecide(tagged, pipe)
    temperature, kept_note = _fit_temperature(tagged, nlp, old_temperature, split, bins)
    summary.update(decision_bias=bias, temperature=temperature)
    if test_split:
        pipe.cfg["decision_bias"], pipe.cfg["temperature"] = None, None
        held = tag_split(nlp, read(test_split, test_limit), batch_size)
        fitter = split_fitter(held, pipe)
        before, after = fitter.score(old_bias), fitter.score(bias)
        print(f"{test_split} (held out): before {before}")
        print(f"{test_split} (held out): after  {after}")
        pipe.cfg["decision_bias"] = bias
        redecide(held, pipe)
        ece = (split_calibration(held, nlp, old_temperature or 1.0, bins), split_calibration(held, nlp, temperature, bins))
        _report(f"{test_split} (held out)", *ece)
        summary["test"] = {"split": test_split, "limit": test_limit, "before": vars(before), "after": vars(after),
                           "ece_before": ece[0].ece, "ece_after": ece[1].ece}
    pipe.cfg["decision_bias"], pipe.cfg["temperature"] = bias, (temperature if temperature != 1.0 or old_temperature else None)
    if output:
        nlp.to_disk(output)
        print(f"saved the pipeline with decision bias {describe_bias(bias)} and temperature {temperature:.4f}{kept_note} "
              f"to {output}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _fit_summary(fit: DecisionFit) -> Dict[str, Any]:
    out = {"kind": fit.kind, "bias": fit.bias, "before": vars(fit.before), "after": vars(fit.after), "best_scalar": fit.scalar,
           "scalar_heldout_gain": fit.scalar_test.mean, "scalar_p_value": fit.scalar_test.p_value}
    if fit.label_test is not None:
        out.update(best_per_label=fit.label_bias, per_label_heldout_gain=fit.label_test.mean, per_label_p_value=fit.label_test.p_value)
    return out


def _fit_temperature(tagged: TaggedSplit, nlp, old: Optional[float], split: str, bins: int = 10) -> Tuple[float, str]:
    """The fitted temperature if it lowers ECE on the split, else the old one (1.0 when none)."""
    old = old or 1.0
    temperature, n_fit = fit_split_temperature(tagged, nlp)
    print(f"temperature fitted on {split} ({n_fit} docs with complete gold paths): T = {temperature:.4f}")
    before, after = split_calibration(tagged, nlp, old, bins), split_calibration(tagged, nlp, temperature, bins)
    _report(split, before, after)
    if after.ece < before.ece:
        return temperature, ""
    print(f"  T = {temperature:.4f} does not lower ECE on {split} ({before.ece:.4f} -> {after.ece:.4f}): "
          f"kept T = {old:.4f}")
    return old, " (unchanged: the fit did not lower ECE)"
