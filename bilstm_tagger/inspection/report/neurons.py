"""Find the neurons that track entities: Pearson correlation with per-token indicators."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

from ...tags import split_tag
from .data import NeuronTrack

ArrayLike = Any  # numpy array, nested lists or a torch tensor (read through .detach().cpu())


@dataclass
class NeuronSelection:
    neuron: int
    criterion: str  # "inside", "start" or "type:LABEL"
    correlation: float  # signed Pearson r


def token_indicators(tags: Sequence[str]) -> Dict[str, np.ndarray]:
    """0/1 per token for "inside" (any entity tag), "start" (B- or U-) and "type:X" per label.

    Tags may be IOB2, BILOU or BIOES; they are read by prefix, so they should be well formed.
    """
    parsed = [split_tag(tag) for tag in tags]
    indicators = {
        "inside": np.array([prefix != "O" for prefix, _ in parsed], dtype=np.float64),
        "start": np.array([prefix in ("B", "U") for prefix, _ in parsed], dtype=np.float64),
    }
    for label in sorted({label for _, label in parsed if label is not None}):
        indicators[f"type:{label}"] = np.array([lab == label for _, lab in parsed], dtype=np.float64)
    return indicators


def correlations(hidden: np.ndarray, indicator: np.ndarray) -> np.ndarray:
    """Pearson r of every column of `hidden` with `indicator`; 0 where either is constant."""
    h = hidden - hidden.mean(axis=0)
    y = indicator - indicator.mean()
    denom = np.sqrt((h * h).sum(axis=0) * (y * y).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (h * y[:, None]).sum(axis=0) / denom
    return np.where(denom > 0, r, 0.0)


def select_neurons(hidden: ArrayLike, tags: Sequence[str], top_k: int = 3) -> List[NeuronSelection]:
    """The `top_k` neurons with the largest |Pearson r| for each criterion, strongest first.

    `hidden` is (n_tokens, n_neurons), any array-like (a torch tensor works too): the states of
    all tokens of the docs, one after another; `tags` the tag of each of those tokens. Criteria
    whose indicator is constant on these tokens (say no entity start at all) are left out.
    """
    hidden = np.asarray(hidden.detach().cpu() if hasattr(hidden, "detach") else hidden, dtype=np.float64)
    if hidden.ndim != 2 or hidden.shape[0] != len(tags):
        raise ValueError(f"hidden has shape {hidden.shape}, expected ({len(tags)}, n_neurons)")
    selected: List[NeuronSelection] = []
    for criterion, indicator in token_indicators(tags).items():
        if indicator.min() == indicator.max():
            continue
        r = correlations(hidden, indicator)
        order = np.lexsort((np.arange(len(r)), -np.abs(r)))[:top_k]  # ties: lower neuron first
        selected.extend(NeuronSelection(int(n), criterion, float(r[n])) for n in order)
    return selected


def neuron_tracks(hidden: ArrayLike, doc_lengths: Sequence[int], selections: Sequence[NeuronSelection], source: str = "hidden") -> List[NeuronTrack]:
    """The selected neurons' values split per doc, ready for `ReportData.neurons`."""
    hidden = np.asarray(hidden.detach().cpu() if hasattr(hidden, "detach") else hidden, dtype=np.float64)
    if hidden.shape[0] != sum(doc_lengths):
        raise ValueError(f"hidden has {hidden.shape[0]} rows but the docs have {sum(doc_lengths)} tokens")
    bounds = np.cumsum([0, *doc_lengths])
    return [
        NeuronTrack(s.neuron, s.criterion, s.correlation,
                    [hidden[a:b, s.neuron].tolist() for a, b in zip(bounds[:-1], bounds[1:])], source)
        for s in selections
    ]
