"""seqeval scoring, with the score keys that `spacy train` and `spacy evaluate` print."""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from seqeval import scheme as seqeval_schemes
from seqeval.metrics import classification_report
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import filter_spans, registry

from .tags import Span as TagSpan
from .tags import check_scheme, tags_from_spans

TOKEN_TARGETS = ("tag", "pos")
SPAN_TARGETS = ("ents", "spans")
MODES = (None, "default", "strict")


def doc_spans(doc: Doc, target: str, spans_key: str) -> List[Span]:
    if target == "ents":
        return list(doc.ents)
    return list(doc.spans[spans_key]) if spans_key in doc.spans else []


def _as_tuples(spans: Iterable[Span]) -> List[TagSpan]:
    # A tagger cannot represent overlaps, so overlapping gold spans keep the longest.
    return [(s.start, s.end, s.label_) for s in filter_spans(spans)]


def tag_sequences(
    examples: Iterable[Example], target: str = "ents", spans_key: str = "sc", scheme: str = "IOB2"
) -> Tuple[List[List[str]], List[List[str]]]:
    """Gold and predicted tag sequences, both over the predicted tokenization."""
    y_true, y_pred = [], []
    for eg in examples:
        pred = eg.predicted
        gold = eg.get_aligned_spans_y2x(doc_spans(eg.reference, target, spans_key), allow_overlap=True)
        y_true.append(tags_from_spans(_as_tuples(gold), len(pred), scheme))
        y_pred.append(tags_from_spans(_as_tuples(doc_spans(pred, target, spans_key)), len(pred), scheme))
    return y_true, y_pred


def seqeval_report(
    y_true: List[List[str]], y_pred: List[List[str]], mode: Optional[str] = None, scheme: str = "IOB2", as_dict: bool = True, digits: int = 4
):
    if mode not in MODES:
        raise ValueError(f"seqeval mode must be 'default' or 'strict', not {mode!r}")
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


def score_seqeval(
    examples: Iterable[Example],
    *,
    target: str = "ents",
    spans_key: str = "sc",
    mode: Optional[str] = None,
    scheme: Optional[str] = None,
    **kwargs,
) -> Dict[str, object]:
    """Entity-level micro P/R/F and per-type P/R/F from seqeval, or token accuracy for tag/pos.

    The default mode is conlleval-compatible; `mode="strict"` scores with the
    given `scheme` (IOB2 or BILOU) as seqeval's strict mode does.
    """
    if target in TOKEN_TARGETS:
        return Scorer.score_token_attr(examples, target, **kwargs)
    if target not in SPAN_TARGETS:
        raise ValueError(f"target must be one of {SPAN_TARGETS + TOKEN_TARGETS}, not {target!r}")
    examples = list(examples)
    scheme = scheme or "IOB2"
    prefix = "ents" if target == "ents" else f"spans_{spans_key}"
    y_true, y_pred = tag_sequences(examples, target, spans_key, scheme)
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


@registry.scorers("bilstm_tagger.seqeval_scorer.v1")
def make_seqeval_scorer(mode: Optional[str] = None, scheme: Optional[str] = None) -> Callable:
    if mode not in MODES:
        raise ValueError(f"seqeval mode must be 'default' or 'strict', not {mode!r}")
    if scheme is not None:
        check_scheme(scheme)
    return partial(score_seqeval, mode=mode, scheme=scheme)
