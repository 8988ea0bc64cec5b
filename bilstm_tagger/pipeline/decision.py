"""The span tagger's decision rule: a bias on entity scores, and per-label confidence thresholds.

**Decision bias.** `cfg["decision_bias"]` adds a constant to the emission score of every non-`O`
tag: one number for every label, or one per label ({"PER": 0.5, ...}; labels not named get 0).
The pipe adds it to the emissions before decoding and files the biased emissions for
`Span._.confidence`, so Viterbi, n-best paths and marginals all describe the same biased model
and confidences stay exact probabilities. A CRF trained by likelihood on data where `O` dominates
tends to under-predict entities on a new distribution; a positive bias trades precision for
recall. `decision_fit.py` fits it on held-out data.

**Confidence thresholds.** `min_confidence` (one number, or one per label) drops a predicted
entity whose exact probability is below it. It is a runtime setting like `alternatives_*`, so one
model can serve a high-precision consumer and a high-recall one.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError

Bias = Union[None, float, Dict[str, float]]
Thresholds = Union[None, float, Dict[str, float]]


def tag_label(tag: str) -> Optional[str]:
    """The label of a span tag (B-PER -> PER); None for O."""
    return None if tag == "O" else tag[2:]


def check_bias(bias: Bias, labels: Sequence[str], what: str = "decision_bias") -> Bias:
    """The bias as saved: None, a float, or {label: float} over known labels (0-valued entries dropped)."""
    if bias is None:
        return None
    if isinstance(bias, (int, float)) and not isinstance(bias, bool):
        if not math.isfinite(bias):
            raise ConfigError(f"bilstm_tagger: {what} must be a finite number, not {bias!r}")
        return float(bias) if bias else None
    if isinstance(bias, Mapping):
        unknown = sorted(set(bias) - set(labels))
        if unknown:
            raise ConfigError(f"bilstm_tagger: {what} names label(s) the model does not predict: {', '.join(unknown)} "
                              f"(it predicts: {', '.join(labels) or 'none'})")
        values = {str(k): v for k, v in bias.items()}
        for label, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"bilstm_tagger: {what}[{label!r}] must be a finite number, not {value!r}")
        kept = {label: float(value) for label, value in sorted(values.items()) if value}
        return kept or None
    raise ConfigError(f"bilstm_tagger: {what} must be null, a number or a {{label: number}} table, not {bias!r}")


def bias_vector(tags: Sequence[str], bias: Bias) -> Optional[np.ndarray]:
    """The bias per tag (float32, (n_tags,)): 0 for O; None when there is no bias."""
    if not bias:
        return None
    if isinstance(bias, dict):
        values = [0.0 if tag_label(t) is None else bias.get(tag_label(t), 0.0) for t in tags]
    else:
        values = [0.0 if tag_label(t) is None else float(bias) for t in tags]
    return np.asarray(values, dtype=np.float32)


def describe_bias(bias: Bias) -> str:
    if not bias:
        return "none"
    if isinstance(bias, dict):
        return ", ".join(f"{label} {value:+.2f}" for label, value in bias.items())
    return f"{bias:+.2f} on every label"


def check_thresholds(value: Thresholds, labels: Optional[Sequence[str]] = None) -> Thresholds:
    """min_confidence as given: None, a probability, or {label: probability}; with `labels` (the
    model's, once known), a table naming a label the model does not predict is refused."""
    def check(x, where: str) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
            raise ConfigError(f"bilstm_tagger: {where} must be a probability in [0, 1], not {x!r}")
        return float(x)

    if value is None:
        return None
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(labels)) if labels else []
        if unknown:
            raise ConfigError(f"bilstm_tagger: min_confidence names label(s) the model does not predict: {', '.join(unknown)} "
                              f"(it predicts: {', '.join(labels)})")
        return {str(label): check(x, f"min_confidence[{label!r}]") for label, x in value.items()} or None
    return check(value, "min_confidence")


def threshold_for(thresholds: Thresholds, label: str) -> float:
    if thresholds is None:
        return 0.0
    if isinstance(thresholds, dict):
        return thresholds.get(label, 0.0)
    return float(thresholds)
