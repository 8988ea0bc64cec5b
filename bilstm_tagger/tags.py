"""Tag schemes: tag names for a label set, legal transitions, and spans <-> tags.

Span decoding is lenient in the way conlleval is: an ``I-X`` that does not
continue an open ``X`` chunk starts a new one. Every repair is counted, so
readers can warn about ill-formed data instead of silently changing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError, TagError

SCHEMES = ("IOB2", "BILOU")
# Prefixes we read. E/S are the BIOES spelling of L/U.
_BEGIN, _INSIDE, _LAST, _UNIT = "B", "I", "L", "U"
_PREFIX_ALIASES = {"B": _BEGIN, "I": _INSIDE, "L": _LAST, "E": _LAST, "U": _UNIT, "S": _UNIT}

Span = Tuple[int, int, str]  # (start token, end token exclusive, label)


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ConfigError(f"Unknown tag scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    return scheme


def tag_names(labels: Sequence[str], scheme: str) -> List[str]:
    """All tags for `labels`, "O" first: O, B-X, I-X (, L-X, U-X) for each label."""
    prefixes = "BI" if check_scheme(scheme) == "IOB2" else "BILU"
    return ["O"] + [f"{p}-{label}" for label in labels for p in prefixes]


def split_tag(tag: str) -> Tuple[str, Optional[str]]:
    """Return (prefix, label) with the prefix normalised to B/I/L/U, or ("O", None)."""
    if tag == "O":
        return "O", None
    prefix, sep, label = tag.partition("-")
    if not sep or not label or prefix not in _PREFIX_ALIASES:
        raise TagError(f"tag {tag!r} fits no scheme: expected 'O' or one of B-, I-, L-/E-, U-/S- followed by a label")
    return _PREFIX_ALIASES[prefix], label


def _legal(prev: Optional[str], nxt: Optional[str], scheme: str) -> bool:
    """Is prev -> nxt legal? None stands for the sequence start (as prev) or end (as nxt)."""
    p_pre, p_lab = split_tag(prev) if prev is not None else ("O", None)
    n_pre, n_lab = split_tag(nxt) if nxt is not None else ("O", None)
    open_chunk = p_pre == _BEGIN or (p_pre == _INSIDE and scheme == "BILOU")
    continues = n_pre == _INSIDE or n_pre == _LAST
    if scheme == "IOB2":
        return n_pre != _INSIDE or (p_pre in (_BEGIN, _INSIDE) and p_lab == n_lab)
    if open_chunk:
        return continues and p_lab == n_lab
    return not continues


def transition_constraints(tags: Sequence[str], scheme: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (start[L], transitions[L, L], end[L]) of what `scheme` allows."""
    check_scheme(scheme)
    start = np.array([_legal(None, t, scheme) for t in tags], dtype=bool)
    end = np.array([_legal(t, None, scheme) for t in tags], dtype=bool)
    trans = np.array([[_legal(a, b, scheme) for b in tags] for a in tags], dtype=bool)
    return start, trans, end


def is_legal_sequence(tags: Sequence[str], scheme: str) -> bool:
    seq: List[Optional[str]] = [None, *tags, None]
    return all(_legal(a, b, scheme) for a, b in zip(seq, seq[1:]))


@dataclass
class DecodedSpans:
    spans: List[Span]
    repairs: int  # how many tags did not fit the sequence and were read leniently


def spans_from_tags(tags: Sequence[str]) -> DecodedSpans:
    """Read chunks from any mix of IOB1/IOB2/BIOES/BILOU tags, never failing on order.

    Raises TagError only for a tag that fits no scheme at all.
    """
    spans: List[Span] = []
    repairs = 0
    start, label = -1, None  # the open chunk, if label is not None

    def close(end: int) -> None:
        nonlocal label
        if label is not None:
            spans.append((start, end, label))
        label = None

    for i, tag in enumerate(tags):
        prefix, lab = split_tag(tag)
        if prefix == "O":
            close(i)
        elif prefix == _BEGIN or prefix == _UNIT:
            close(i)
            start, label = i, lab
            if prefix == _UNIT:
                close(i + 1)
        else:  # I or L: must continue an open chunk of the same label
            if label != lab:
                repairs += 1
                close(i)
                start, label = i, lab
            if prefix == _LAST:
                close(i + 1)
    close(len(tags))
    return DecodedSpans(spans, repairs)


def tags_from_spans(spans: Iterable[Span], length: int, scheme: str) -> List[str]:
    """Tags for non-overlapping spans over `length` tokens."""
    tags = ["O"] * length
    bilou = check_scheme(scheme) == "BILOU"
    for start, end, label in spans:
        if bilou and end - start == 1:
            tags[start] = f"U-{label}"
            continue
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
        if bilou:
            tags[end - 1] = f"L-{label}"
    return tags
