"""`python -m bilstm_tagger explain MODEL (--text "…" | --dataset D --split S --n 20) --output report.html [--png-dir DIR]`.

Tags the docs and writes one self-contained HTML report (see `bilstm_tagger.inspection.report`) built from the
model's real internals:

- the entities, displaCy-style, each with its exact confidence (`Span._.confidence`);
- a heatmap of the neurons of the last BiRNN layer's output (forward units first, then backward)
  most correlated, on these docs, with "inside an entity", "entity start" and each entity type
  (gold tags with --dataset, else the predicted ones);
- gate saturation per layer and direction (share of gate values < 0.1 and > 0.9);
- one attention heatmap per head and block (first doc), when the model has attention;
- the learned CRF transitions with the moves the tag scheme forbids;
- with --dataset, the reliability diagram and ECE of the entity confidences on these docs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .calibrate import calibration, read_split, tag_split
from ..errors import ConfigError, DatasetError
from ..pipeline.loading import find_tagger, load_pipeline
from .inspect import crf_transitions, network_internals
from .rnn import gate_saturation
from .report import AttentionMap, Entity, GateSaturation, ReportData, ReportDoc, TransitionTable, build_report, neuron_tracks, select_neurons
from .report.neurons import NeuronSelection
from ..tags import tags_from_spans


@dataclass
class Explanation:
    data: ReportData
    neurons: List[NeuronSelection]
    saturation: List[Dict[str, object]]


def _entities(pipe, doc) -> List[Entity]:
    return [Entity(s.start, s.end, s.label_, s._.confidence) for s in pipe.task.spans(doc) if s._.confidence is not None]


def _token_tags(pipe, docs: Sequence, references: Optional[Sequence]) -> List[str]:
    """BILOU tags per token of all docs (gold when references are given) for the neuron criteria."""
    tags: List[str] = []
    for i, doc in enumerate(docs):
        source = references[i] if references is not None else doc
        spans = [(s.start, s.end, s.label_) for s in pipe.task.spans(source)]
        tags += tags_from_spans(spans, len(doc), "BILOU")
    return tags


def _temperature_note(pipe) -> str:
    temperature = pipe.cfg.get("temperature")
    return f"{temperature:.4f} (confidences are temperature-scaled)" if temperature else "none (T = 1)"


def _transition_table(pipe) -> Optional[TransitionTable]:
    crf = crf_transitions(pipe)
    if crf is None:
        return None
    return TransitionTable(crf.tags, crf.transitions.tolist(), crf.allowed_transitions.tolist(), crf.start.tolist(), crf.end.tolist(),
                           crf.allowed_start.tolist(), crf.allowed_end.tolist())


def explain_docs(nlp, docs: Sequence, references: Optional[Sequence] = None, title: str = "bilstm_tagger report",
                 top_k: int = 3, meta: Optional[Dict[str, str]] = None) -> Explanation:
    """Report data for docs the pipeline has tagged; `references` (gold docs, same tokens) add the
    reliability diagram and make the neuron criteria gold."""
    name, pipe = find_tagger(nlp)
    if references is not None:
        references = [ref for doc, ref in zip(docs, references) if len(doc)]
    docs = [doc for doc in docs if len(doc)]
    internals, weights = network_internals(pipe, docs)
    if internals is None:
        raise DatasetError("every doc is empty: nothing to explain")
    lengths = [len(doc) for doc in docs]
    hidden = internals.output[internals.mask].cpu().numpy()  # tokens of all docs, in order
    selections = select_neurons(hidden, _token_tags(pipe, docs, references), top_k=top_k)
    width = hidden.shape[1] // 2
    source = f"last BiRNN layer output (units 0-{width - 1} forward, {width}-{2 * width - 1} backward)"
    saturation = gate_saturation(internals)
    attention = [AttentionMap(0, layer, head, w[0, head, : lengths[0], : lengths[0]].tolist())
                 for layer, w in enumerate(weights) for head in range(w.shape[1])]
    data = ReportData(
        title=title,
        docs=[ReportDoc([t.text for t in doc], _entities(pipe, doc)) for doc in docs],
        neurons=neuron_tracks(hidden, lengths, selections, source),
        gate_saturation=[GateSaturation(r["layer"], r["direction"], r["gate"], r["low"], r["high"]) for r in saturation],
        attention=attention,
        transitions=_transition_table(pipe),
        meta={"component": name, "cell": internals.cell, "temperature": _temperature_note(pipe), **(meta or {})},
    )
    if references is not None:
        result = calibration(nlp, name, docs, references)
        data.reliability, data.ece = result.table, result.ece
        data.meta["reliability"] = f"{result.n_entities} predicted entities of these {len(docs)} docs, {result.correct.mean():.3f} exact"
    return Explanation(data, selections, saturation)


def summary(explanation: Explanation) -> str:
    lines = ["gate saturation (share < 0.1 / > 0.9):"]
    for r in explanation.saturation:
        lines.append(f"  layer {r['layer']} {r['direction']:8s} {r['gate']:7s} {r['low']:.3f} / {r['high']:.3f}")
    lines.append("top neurons (Pearson r):")
    for s in explanation.neurons:
        lines.append(f"  {s.criterion:12s} #{s.neuron:<4d} r = {s.correlation:+.3f}")
    if explanation.data.ece is not None:
        lines.append(f"ECE on these docs: {explanation.data.ece:.4f}")
    return "\n".join(lines)


# ---- the command (cli/explain.py maps its arguments onto `explain`) ----------------------------


def explain(
    model: str, output: str, *, texts: Optional[Sequence[str]] = None, dataset: Optional[str] = None,
    split: str = "validation", n: int = 20, name: Optional[str] = None, revision: Optional[str] = None,
    tokens_column: str = "tokens", tags_column: str = "ner_tags", png_dir: Optional[str] = None, top_k: int = 3,
) -> Explanation:
    """Tag `texts`, or the first `n` docs of `split` of `dataset` (one of the two), with pipeline
    `model`; write the HTML report to `output` (and every figure as a PNG in `png_dir`); print the
    summary. Returns the explanation the report was built from."""
    if n < 1 or top_k < 1:
        raise ConfigError("--n and --top-k must be >= 1")
    if (texts is None) == (dataset is None):
        raise ConfigError("explain needs either texts (--text) or a dataset (--dataset), not both")
    nlp = load_pipeline(model)
    if texts is not None:
        texts = list(texts)
        docs, references, data_note = list(nlp.pipe(texts)), None, f"{len(texts)} text(s)"
    else:
        examples = read_split(nlp, dataset, split, limit=n, name=name, revision=revision,
                              tokens_column=tokens_column, tags_column=tags_column)
        tagged = tag_split(nlp, examples)
        docs, references = tagged.docs, [eg.reference for eg in examples]
        data_note = f"{dataset} [{split}], first {len(examples)} docs"
    explanation = explain_docs(nlp, docs, references, title=f"Inside {Path(model).name}",
                               top_k=top_k, meta={"model": str(model), "data": data_note})
    path = build_report(explanation.data, output, png_dir)
    print(summary(explanation))
    print(f"wrote {path}" + (f" and PNGs in {png_dir}" if png_dir else ""))
    return explanation
