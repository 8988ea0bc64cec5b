"""Calibration of a tagger's probabilities: CRF path probabilities, reliability tables, ECE and the
temperature fit.

Pure functions over tensors and arrays. CRF scores come in as the caller's ``start (L)``,
``transitions (L, L)`` (from -> to) and ``end (L)``, with forbidden moves already set to ``-inf``
(or a large negative number such as -1e4, whose ``exp`` is 0); ``mask`` (batch, time) is True on
real tokens and a prefix of each row. The CRF maths itself is in `ml/crf.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..ml import crf
from ..tags import Span


# --------------------------------------------------------------------------------------------
# CRF: marginals, span probabilities, n-best
# --------------------------------------------------------------------------------------------


# The CRF maths lives in `ml.crf`; these names are what `introspect` exported (release 0.2).
crf_log_partition = crf.log_partition
crf_marginals = crf.marginals
chunk_tags = crf.chunk_tags
span_marginals = crf.span_marginals
viterbi_nbest = crf.viterbi_nbest
path_log_scores = crf.path_scores
scale_scores = crf.scale_scores


def softmax_marginals(emissions: Tensor, mask: Tensor) -> Tensor:
    """Per-token tag probabilities of a softmax (non-CRF) decoder, (batch, time, n_tags), 0 on padding."""
    probs = torch.softmax(emissions, dim=-1)
    return probs * mask.unsqueeze(-1).to(probs.dtype)


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


@dataclass
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_confidence: float  # NaN when empty
    accuracy: float  # NaN when empty


def _bin_index(confidences: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins are [k/n, (k+1)/n) with 1.0 in the last one.
    return np.minimum((confidences * n_bins).astype(int), n_bins - 1)


def reliability_table(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> List[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1] with each bin's count, mean confidence and accuracy."""
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape:
        raise ValueError(f"{conf.shape[0]} confidences but {ok.shape[0]} correctness flags")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    which = _bin_index(conf, n_bins)
    table = []
    for k in range(n_bins):
        sel = which == k
        n = int(sel.sum())
        table.append(ReliabilityBin(k / n_bins, (k + 1) / n_bins, n,
                                    float(conf[sel].mean()) if n else math.nan, float(ok[sel].mean()) if n else math.nan))
    return table


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|; 0.0 for no items."""
    table = reliability_table(confidences, correct, n_bins)
    total = sum(b.count for b in table)
    if not total:
        return 0.0
    return float(sum(b.count / total * abs(b.accuracy - b.mean_confidence) for b in table if b.count))


def entity_calibration_pairs(
    predicted: Sequence[Sequence[Tuple[int, int, str, float]]], gold: Sequence[Sequence[Span]]
) -> Tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per predicted entity: correct = the same (start, end, label) is gold.

    Per doc, predicted entities are (start, end, label, confidence). Missed gold entities have no
    confidence, so they do not enter the ECE (it measures precision-side calibration).
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted docs but {len(gold)} gold docs")
    conf, ok = [], []
    for pred_doc, gold_doc in zip(predicted, gold):
        gold_set = {(s, e, label) for s, e, label in gold_doc}
        for s, e, label, c in pred_doc:
            conf.append(c)
            ok.append((s, e, label) in gold_set)
    return np.asarray(conf, dtype=np.float64), np.asarray(ok, dtype=bool)


def gold_nll(
    emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor, gold: Tensor, temperature: float = 1.0
) -> float:
    """Summed negative log-likelihood of complete gold paths (batch, time) at a temperature."""
    em, st, tr, en = scale_scores(emissions, start, transitions, end, temperature)
    log_z = crf_log_partition(em, mask, st, tr, en)
    return float((log_z - path_log_scores(em, mask, st, tr, en, gold)).sum())


def fit_temperature(
    emissions: Tensor,
    mask: Tensor,
    start: Tensor,
    transitions: Tensor,
    end: Tensor,
    gold: Tensor,
    bounds: Tuple[float, float] = (0.05, 20.0),
    tol: float = 1e-4,
) -> float:
    """The temperature T > 0 minimising the gold-path NLL on (dev) data, all path scores / T.

    With beta = 1/T the NLL is log Z(beta) - beta * score(gold): log-sum-exp of functions linear
    in beta minus a linear term, so it is convex in beta, and a golden-section search over beta
    in [1/bounds[1], 1/bounds[0]] finds the minimum to `tol`. Gold paths must be complete and
    legal (a forbidden gold move gives infinite NLL at every T).
    """
    with torch.no_grad():
        def nll(beta: float) -> float:
            return gold_nll(emissions, mask, start, transitions, end, gold, 1.0 / beta)

        lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
        ratio = (math.sqrt(5) - 1) / 2
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fa, fb = nll(a), nll(b)
        while hi - lo > tol:
            if fa < fb:  # minimum left of b
                hi, b, fb = b, a, fa
                a = hi - ratio * (hi - lo)
                fa = nll(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + ratio * (hi - lo)
                fb = nll(b)
        return 1.0 / ((lo + hi) / 2)
