"""seqeval scoring, with the score keys that `spacy train` and `spacy evaluate` print.

The scorer takes a span getter (a Doc -> its spans), as spaCy's `Scorer.score_spans` does, so it
needs no task: `pipeline/tasks.py` builds on this module, never the other way round.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from seqeval import scheme as seqeval_schemes
from seqeval.metrics import classification_report
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import filter_spans, registry

from ..errors import ConfigError
from ..tags import check_scheme, tags_from_spans

MODES = (None, "default", "strict")
SpanGetter = Callable[[Doc], List[Span]]
TOKEN_TARGETS = ("tag", "pos")  # scored as token accuracy of that attribute
SPAN_TARGETS = ("ents", "spans")


def as_tuples(spans: Iterable[Span]):
    # A tagger cannot represent overlaps, so overlapping gold spans keep the longest.
    return [(s.start, s.end, s.label_) for s in filter_spans(spans)]


def tag_sequences(
    examples: Iterable[Example], get_spans: SpanGetter, scheme: str = "IOB2"
) -> Tuple[List[List[str]], List[List[str]]]:
    """Gold and predicted tag sequences, both over the predicted tokenization, one per gold sentence
    (a Doc that groups several dataset rows is scored row by row, exactly as ungrouped)."""
    y_true, y_pred = [], []
    for eg in examples:
        pred = eg.predicted
        true_tags = tags_from_spans(gold_spans(eg, get_spans), len(pred), scheme)
        pred_tags = tags_from_spans(as_tuples(get_spans(pred)), len(pred), scheme)
        for start, end in gold_rows(eg):
            y_true.append(true_tags[start:end])
            y_pred.append(pred_tags[start:end])
    return y_true, y_pred


def gold_spans(eg: Example, get_spans: SpanGetter) -> List[Tuple[int, int, str]]:
    """The reference's spans on the predicted tokens, as the scorer counts them."""
    return as_tuples(eg.get_aligned_spans_y2x(get_spans(eg.reference), allow_overlap=True))


def gold_rows(eg: Example) -> List[Tuple[int, int]]:
    """Token ranges (the rows the scorer scores one by one): the of the reference's sentences when it has them and shares the predicted tokens."""
    ref, n = eg.reference, len(eg.predicted)
    if n == 0 or len(ref) != n or not ref.has_annotation("SENT_START"):
        return [(0, n)]
    starts = [t.i for t in ref if t.is_sent_start] or [0]
    return list(zip(starts, starts[1:] + [n]))


def _check_mode(mode: Optional[str]) -> None:
    if mode not in MODES:
        raise ConfigError(f"seqeval mode must be 'default' or 'strict', not {mode!r}")


def seqeval_report(
    y_true: List[List[str]], y_pred: List[List[str]], mode: Optional[str] = None, scheme: str = "IOB2", as_dict: bool = True, digits: int = 4
):
    _check_mode(mode)
    strict = mode == "strict"
    return classification_report(
        y_true,
        y_pred,
        mode="strict" if strict else None,
        scheme=getattr(seqeval_schemes, check_scheme(scheme)) if strict else None,
        output_dict=as_dict,
        digits=digits,
        zero_division=0,
    )


def seqeval_scores(
    y_true: List[List[str]], y_pred: List[List[str]], prefix: str, mode: Optional[str] = None, scheme: str = "IOB2"
) -> Dict[str, object]:
    """Entity-level micro P/R/F, per-type P/R/F and macro F under `prefix` (ents, spans_sc, ...)."""
    if not any(t != "O" for seq in y_true + y_pred for t in seq):
        # seqeval has nothing to count; an empty gold and prediction is a perfect score of nothing.
        return {f"{prefix}_p": None, f"{prefix}_r": None, f"{prefix}_f": None, f"{prefix}_per_type": {}}
    report = seqeval_report(y_true, y_pred, mode, scheme)
    micro = report["micro avg"]
    per_type = {
        label: {"p": row["precision"], "r": row["recall"], "f": row["f1-score"]}
        for label, row in report.items()
        if not label.endswith(" avg")
    }
    return {
        f"{prefix}_p": micro["precision"],
        f"{prefix}_r": micro["recall"],
        f"{prefix}_f": micro["f1-score"],
        f"{prefix}_per_type": per_type,
        f"{prefix}_macro_f": report["macro avg"]["f1-score"],
    }


def score_spans(
    examples: Iterable[Example], getter: SpanGetter, prefix: str, mode: Optional[str] = None, scheme: Optional[str] = None
) -> Dict[str, object]:
    """seqeval scores of the spans `getter` finds on each example's gold and predicted doc, under `prefix`."""
    y_true, y_pred = tag_sequences(examples, getter, scheme or "IOB2")
    return seqeval_scores(y_true, y_pred, prefix, mode, scheme or "IOB2")


def score_seqeval(
    examples: Iterable[Example],
    *,
    target: str = "ents",
    spans_key: str = "sc",
    getter: Optional[SpanGetter] = None,
    mode: Optional[str] = None,
    scheme: Optional[str] = None,
    **kwargs,
) -> Dict[str, object]:
    """Entity-level scores from seqeval for span tasks, token accuracy for tag/pos.

    The spans are `getter(doc)`; without one, `doc.ents` for target "ents" and
    `doc.spans[spans_key]` for "spans". The default mode is conlleval-compatible;
    `mode="strict"` scores with the given `scheme` (IOB2 or BILOU) as seqeval's strict mode does.
    """
    _check_mode(mode)
    if target in TOKEN_TARGETS:
        return Scorer.score_token_attr(list(examples), target, **kwargs)
    if target not in SPAN_TARGETS:
        raise ConfigError(f"target must be one of {', '.join(SPAN_TARGETS + TOKEN_TARGETS)}, not {target!r}")
    if target == "ents":
        prefix, default = "ents", lambda doc: list(doc.ents)
    else:
        prefix, default = f"spans_{spans_key}", lambda doc: list(doc.spans[spans_key]) if spans_key in doc.spans else []
    return score_spans(list(examples), getter or default, prefix, mode, scheme)


@registry.scorers("bilstm_tagger.seqeval_scorer.v1")
def make_seqeval_scorer(mode: Optional[str] = None, scheme: Optional[str] = None) -> Callable:
    _check_mode(mode)
    if scheme is not None:
        check_scheme(scheme)
    return partial(score_seqeval, mode=mode, scheme=scheme)
