"""Fit the decision bias (see `decision.py`) on a held-out split, with a guard against noise.

The objective is entity-level micro F1, counted exactly as the seqeval scorer counts it: per gold
sentence row, a predicted entity that crosses a row boundary counts as one chunk in each row
(the scorer reads IOB2 tags row by row). Candidate biases come from a bounded grid, so the fit is
deterministic: first one scalar for every label, then, per label, coordinate ascent around it.

**The guard.** The arg-max of F1 on a split always "improves" that split. Whether fitting helps on
new data is estimated by repeated 2-fold cross-validation over docs: fit on one half, measure the
gain over the current decision on the other half, for `repeats` random halvings. The gain is kept
only if the corrected resampled t-test (Nadeau & Bengio, 2003, "Inference for the Generalization
Error"), which widens the variance for the overlap between resamples, finds it positive at level
`alpha`. A per-label bias must, in the same way, beat the scalar fitted on the same halves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from ..errors import DatasetError
from ..tags import spans_from_tags
from .decision import Bias, bias_vector, check_bias

# The search range, in emission-score units. Wider on the positive side: the common failure on new
# text is missed entities (a model sure of O), which takes a large bias to undo.
LOW, HIGH = -4.0, 8.0
SCALAR_GRID = tuple(float(x) for x in np.round(np.arange(LOW, HIGH + 1e-4, 0.25), 2))
LABEL_OFFSETS = tuple(float(x) for x in np.round(np.arange(-2.0, 2.0001, 0.5), 2))

Decoder = Callable[[List[np.ndarray]], List[np.ndarray]]
Rows = List[Tuple[int, int]]


@dataclass
class PRF:
    p: float
    r: float
    f: float

    def __str__(self) -> str:
        return f"P {100 * self.p:.2f}  R {100 * self.r:.2f}  F1 {100 * self.f:.2f}"


@dataclass
class Significance:
    """Held-out gains of a fitted decision over a baseline, from repeated 2-fold cross-validation."""

    gains: np.ndarray  # F1 gain per held-out half
    p_value: float

    @property
    def mean(self) -> float:
        return float(self.gains.mean()) if self.gains.size else 0.0


@dataclass
class DecisionFit:
    old: Bias  # the decision the model had
    bias: Bias  # the decision to keep (== old when nothing passed the guard)
    kind: str  # "kept", "scalar" or "per-label"
    before: PRF  # on the fit split, with the old decision
    after: PRF  # on the fit split, with `bias`
    scalar: float  # the best scalar on the whole split
    scalar_test: Significance
    label_bias: Optional[Dict[str, float]] = None  # the best per-label bias on the whole split
    label_test: Optional[Significance] = None
    notes: List[str] = field(default_factory=list)


def prf(counts: np.ndarray) -> PRF:
    """Micro P/R/F1 from summed (tp, fp, fn) per label, (n_labels, 3); 0 where undefined."""
    tp, fp, fn = (float(x) for x in counts.reshape(-1, 3).sum(0))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return PRF(p, r, 2 * p * r / (p + r) if p + r else 0.0)


def _row_spans(spans: Sequence[Tuple[int, int, str]], rows: Rows) -> List[set]:
    """Each row's spans, clipped to it (a span crossing a row boundary is one chunk per row)."""
    return [{(max(s, r0), min(e, r1), label) for s, e, label in spans if s < r1 and e > r0} for r0, r1 in rows]


class DecisionFitter:
    """F1 of any decision bias on one tagged split, decoded once per bias and cached."""

    def __init__(self, scores: List[np.ndarray], gold_spans: List[List[Tuple[int, int, str]]], rows: List[Rows],
                 tags: Sequence[str], labels: Sequence[str], decode: Decoder) -> None:
        """scores: raw (unbiased) emissions per doc; gold_spans: per doc, on its tokens; rows: per doc,
        the (start, end) token ranges the scorer scores one by one; decode: scores -> tag ids."""
        self.scores, self.tags, self.labels, self.decode = scores, list(tags), list(labels), decode
        self.rows = rows
        self.gold = [_row_spans(spans, r) for spans, r in zip(gold_spans, rows)]
        # Gold labels the model never predicts still count, as misses (seqeval counts them too).
        unseen = sorted({s[2] for doc in self.gold for row in doc for s in row} - set(self.labels))
        self.label_index = {label: i for i, label in enumerate(self.labels + unseen)}
        self._cache: Dict[Tuple, np.ndarray] = {}

    @property
    def n_docs(self) -> int:
        return len(self.scores)

    def counts(self, bias: Bias) -> np.ndarray:
        """(tp, fp, fn) per doc and label, (n_docs, n_labels (+ unseen gold labels), 3), under `bias`."""
        key = _key(bias)
        if key not in self._cache:
            vec = bias_vector(self.tags, bias)
            biased = self.scores if vec is None else [s + vec for s in self.scores]
            self._cache[key] = self._count(self.decode(biased))
        return self._cache[key]

    def _count(self, decoded: List[np.ndarray]) -> np.ndarray:
        out = np.zeros((self.n_docs, len(self.label_index), 3), dtype=np.int64)
        for d, ids in enumerate(decoded):
            spans = spans_from_tags([self.tags[i] for i in np.asarray(ids).tolist()]).spans
            for pred, gold in zip(_row_spans(spans, self.rows[d]), self.gold[d]):
                for s in pred & gold:
                    out[d, self.label_index[s[2]], 0] += 1
                for s in pred - gold:
                    out[d, self.label_index[s[2]], 1] += 1
                for s in gold - pred:
                    out[d, self.label_index[s[2]], 2] += 1
        return out

    def score(self, bias: Bias, docs: Optional[np.ndarray] = None) -> PRF:
        counts = self.counts(bias)
        return prf(counts.sum(0) if docs is None else counts[docs].sum(0))

    # ---- searches ------------------------------------------------------------------------
    def fit_scalar(self, docs: Optional[np.ndarray] = None) -> float:
        """The grid scalar with the best F1 on `docs`; ties go to the smallest |bias|."""
        return _best(SCALAR_GRID, lambda b: self.score(b, docs).f)

    def fit_per_label(self, start: float, docs: Optional[np.ndarray] = None, rounds: int = 2) -> Dict[str, float]:
        """Coordinate ascent over per-label biases, from `start` on every label, each label searched
        over start + LABEL_OFFSETS (within [LOW, HIGH]) with the others held."""
        current = {label: start for label in self.labels}
        for _ in range(rounds):
            moved = False
            for label in self.labels:
                grid = sorted({min(HIGH, max(LOW, start + o)) for o in LABEL_OFFSETS} | {current[label]})
                best = _best(grid, lambda b: self.score({**current, label: b}, docs).f, prefer=current[label])
                moved |= best != current[label]
                current[label] = best
            if not moved:
                break
        return current

    # ---- the guard -----------------------------------------------------------------------
    def significance(self, fit: Callable[[np.ndarray], Bias], baseline: Callable[[np.ndarray], Bias],
                     repeats: int = 5, seed: int = 0) -> Significance:
        """Held-out F1 gains of `fit` over `baseline` (each fitted on one half, scored on the other)
        over `repeats` random 2-fold splits of the docs, with the corrected resampled t-test's p."""
        rng = np.random.default_rng(seed)
        gains = []
        for _ in range(repeats):
            order = rng.permutation(self.n_docs)
            halves = (order[: self.n_docs // 2], order[self.n_docs // 2:])
            for fit_on, test_on in (halves, halves[::-1]):
                gains.append(self.score(fit(fit_on), test_on).f - self.score(baseline(fit_on), test_on).f)
        return Significance(np.asarray(gains), _corrected_t_p(np.asarray(gains), test_over_train=1.0))


def fit_decision(fitter: DecisionFitter, old: Bias = None, alpha: float = 0.05, repeats: int = 5, per_label: bool = True) -> DecisionFit:
    """The decision to keep: a scalar bias if fitting one beats `old` on held-out halves (p < alpha),
    then per-label biases if they beat that scalar the same way; else `old`, unchanged."""
    old = check_bias(old, fitter.labels)
    if fitter.n_docs < 4:
        raise DatasetError(f"fitting a decision needs at least 4 docs, got {fitter.n_docs}")
    before = fitter.score(old)
    scalar = fitter.fit_scalar()
    scalar_test = fitter.significance(lambda d: fitter.fit_scalar(d), lambda d: old, repeats)
    result = DecisionFit(old, old, "kept", before, before, scalar, scalar_test)
    if not (scalar_test.mean > 0 and scalar_test.p_value < alpha):
        result.notes.append(f"that gain is not significant (p >= {alpha}): kept the current decision")
        return result
    result.bias, result.kind = check_bias(scalar, fitter.labels), "scalar"
    if per_label and len(fitter.labels) > 1:
        result.label_bias = fitter.fit_per_label(scalar)
        result.label_test = fitter.significance(lambda d: fitter.fit_per_label(fitter.fit_scalar(d), d),
                                                lambda d: fitter.fit_scalar(d), repeats)
        if result.label_test.mean > 0 and result.label_test.p_value < alpha:
            result.bias, result.kind = check_bias(result.label_bias, fitter.labels), "per-label"
        else:
            result.notes.append(f"per-label biases are not significantly better than one scalar (p >= {alpha}): kept one scalar")
    result.after = fitter.score(result.bias)
    return result


def _corrected_t_p(gains: np.ndarray, test_over_train: float) -> float:
    """One-sided p-value that the mean gain is > 0, by the corrected resampled t-test."""
    n = gains.size
    mean, var = float(gains.mean()), float(gains.var(ddof=1)) if n > 1 else 0.0
    if var == 0.0:
        return 0.0 if mean > 0 else 1.0
    t = mean / math.sqrt((1.0 / n + test_over_train) * var)
    return float(stats.t.sf(t, df=n - 1))


def _best(grid: Sequence[float], f1: Callable[[float], float], prefer: float = 0.0) -> float:
    """The grid value with the highest F1; ties go to the value nearest `prefer` (then the smaller)."""
    scored = [(f1(b), -abs(b - prefer), -b, b) for b in grid]
    return max(scored)[3]


def _key(bias: Bias) -> Tuple:
    if not bias:
        return ()
    if isinstance(bias, dict):
        return tuple(sorted((k, round(float(v), 6)) for k, v in bias.items() if v))
    return (("*", round(float(bias), 6)),)
