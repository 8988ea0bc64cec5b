"""The plain-data input of the report: lists, numbers and strings only (no tensors, no spaCy).

Whoever builds a report fills a `ReportData` (for example from `bilstm_tagger.inspection`
results) and hands it to `build_report`. `dataclasses.asdict(data)` gives a JSON-ready dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..calibration import ReliabilityBin

__all__ = [
    "AttentionMap",
    "Entity",
    "GateSaturation",
    "NeuronTrack",
    "ReliabilityBin",
    "ReportData",
    "ReportDoc",
    "TransitionTable",
]


@dataclass
class Entity:
    start: int  # first token
    end: int  # token after the last one
    label: str
    confidence: Optional[float] = None  # P(exactly this span), e.g. from ml.crf.span_marginals


@dataclass
class ReportDoc:
    tokens: List[str]
    entities: List[Entity] = field(default_factory=list)


@dataclass
class NeuronTrack:
    """One selected neuron and its activation at every token of every doc."""

    neuron: int
    criterion: str  # what picked it: "inside", "start" or "type:LABEL"
    correlation: float  # Pearson r with that criterion on the report's docs
    values: List[List[float]]  # [doc][token]
    source: str = "hidden"  # which tensor, e.g. "layer 0 forward hidden"


@dataclass
class GateSaturation:
    layer: int
    direction: str  # "forward" / "backward"
    gate: str  # "input", "forget", "output" (LSTM) or "reset", "update" (GRU)
    low: float  # share of values < 0.1
    high: float  # share of values > 0.9


@dataclass
class AttentionMap:
    doc: int  # index into ReportData.docs
    layer: int
    head: int
    weights: List[List[float]]  # [query token][key token], rows sum to 1


@dataclass
class TransitionTable:
    tags: List[str]
    scores: List[List[float]]  # [from][to], the learned scores before constraints
    allowed: List[List[bool]]  # [from][to]; False = forbidden by the tag scheme
    start: Optional[List[float]] = None
    end: Optional[List[float]] = None
    allowed_start: Optional[List[bool]] = None
    allowed_end: Optional[List[bool]] = None


@dataclass
class ReportData:
    title: str
    docs: List[ReportDoc]
    neurons: List[NeuronTrack] = field(default_factory=list)
    gate_saturation: List[GateSaturation] = field(default_factory=list)
    attention: List[AttentionMap] = field(default_factory=list)
    transitions: Optional[TransitionTable] = None
    reliability: List[ReliabilityBin] = field(default_factory=list)
    ece: Optional[float] = None
    meta: Dict[str, str] = field(default_factory=dict)  # shown as a table: model, data, temperature...

    def validate(self) -> None:
        """Raise ValueError naming the first part whose sizes do not fit the docs."""
        lengths = [len(doc.tokens) for doc in self.docs]
        for d, doc in enumerate(self.docs):
            for ent in doc.entities:
                if not 0 <= ent.start < ent.end <= lengths[d]:
                    raise ValueError(f"doc {d}: entity ({ent.start}, {ent.end}) outside its {lengths[d]} tokens")
                if ent.confidence is not None and not 0.0 <= ent.confidence <= 1.0:
                    raise ValueError(f"doc {d}: entity confidence {ent.confidence} is not in [0, 1]")
        for track in self.neurons:
            if [len(v) for v in track.values] != lengths:
                raise ValueError(f"neuron {track.neuron}: values per doc {[len(v) for v in track.values]} do not fit the docs {lengths}")
        for att in self.attention:
            n = lengths[att.doc] if 0 <= att.doc < len(lengths) else -1
            if len(att.weights) != n or any(len(row) != n for row in att.weights):
                raise ValueError(f"attention layer {att.layer} head {att.head}: not a {n}x{n} matrix for doc {att.doc}")
        if self.transitions is not None:
            n = len(self.transitions.tags)
            for name in ("scores", "allowed"):
                rows = getattr(self.transitions, name)
                if len(rows) != n or any(len(r) != n for r in rows):
                    raise ValueError(f"transitions.{name} is not {n}x{n}")
