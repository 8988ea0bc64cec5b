"""What each task means for the tagger: labels, gold tags, annotations, scores and score weights.

A task is the one place that knows where its labels live on a Doc. The pipe,
the readers, the scorer and the CLI ask the task instead of switching on a
target string:

- `ents`: entities in `doc.ents` (factory `bilstm_tagger`)
- `spans`: spans in `doc.spans[spans_key]` (factory `bilstm_spans`)
- `tag`: `token.tag_` (factory `bilstm_tags`)
- `pos`: `token.pos_`, Universal POS tags (factory `bilstm_pos`)
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from spacy.attrs import ENT_IOB, ENT_TYPE, ORTH
from spacy.parts_of_speech import IDS as UPOS_IDS
from spacy.scorer import Scorer
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import filter_spans

from ..errors import ConfigError, TagError
from ..tags import check_scheme, spans_from_tags, tag_names, tags_from_spans, transition_constraints
from .scoring import score_spans

Constraints = Tuple[np.ndarray, np.ndarray, np.ndarray]


class Task:
    name = ""
    factory = ""
    assigns: List[str] = []
    description = ""  # what the labels are, for messages

    def __init__(self, scheme: str = "BILOU", spans_key: str = "sc") -> None:
        self.scheme = check_scheme(scheme)
        self.spans_key = spans_key

    # -- labels and tags
    def labels_in(self, doc: Doc) -> Iterable[str]:
        raise NotImplementedError

    def tag_names(self, labels: Sequence[str]) -> List[str]:
        return list(labels)

    def constraints(self, tags: Sequence[str]) -> Optional[Constraints]:
        return None

    def gold_tags(self, eg: Example) -> List[Optional[str]]:
        """Gold tag strings on the predicted tokens; None where the gold is missing."""
        raise NotImplementedError

    def gold_ids(self, eg: Example, tag_index: Dict[str, int]) -> np.ndarray:
        """Gold tag ids on the predicted tokens; -1 where the gold is missing or unknown."""
        return np.array([tag_index.get(t, -1) if t else -1 for t in self.gold_tags(eg)], dtype=np.int64)

    def set_annotations(self, doc: Doc, tags: List[str]) -> None:
        raise NotImplementedError

    # -- data
    def read_tags(self, tags: Sequence[str]) -> Tuple[List[str], int]:
        """Labels a row of string tags holds and how many tags had to be repaired; TagError if unusable."""
        raise NotImplementedError

    def write_gold(self, reference: Doc, tags: Sequence[str]) -> None:
        raise NotImplementedError

    # -- scores
    @property
    def score_prefix(self) -> str:
        return self.name

    def score_weights(self) -> Dict[str, Optional[float]]:
        raise NotImplementedError

    def score(self, examples: Sequence[Example], mode: Optional[str] = None, scheme: Optional[str] = None, **kwargs):
        raise NotImplementedError


class SpanTask(Task):
    """Labelled, non-overlapping spans, tagged with the IOB2 or BILOU scheme."""

    def spans(self, doc: Doc) -> List[Span]:
        raise NotImplementedError

    def labels_in(self, doc: Doc) -> Iterable[str]:
        return (span.label_ for span in self.spans(doc))

    def tag_names(self, labels: Sequence[str]) -> List[str]:
        return tag_names(labels, self.scheme)

    def constraints(self, tags: Sequence[str]) -> Optional[Constraints]:
        return transition_constraints(tags, self.scheme)

    def gold_tags(self, eg: Example) -> List[Optional[str]]:
        aligned = eg.get_aligned_spans_y2x(self.spans(eg.reference), allow_overlap=True)
        spans = [(s.start, s.end, s.label_) for s in filter_spans(aligned)]
        return tags_from_spans(spans, len(eg.predicted), self.scheme)

    def predicted_spans(self, doc: Doc, tags: List[str]) -> List[Span]:
        return [Span(doc, s, e, label) for s, e, label in spans_from_tags(tags).spans]

    def read_tags(self, tags: Sequence[str]) -> Tuple[List[str], int]:
        decoded = spans_from_tags(tags)
        return [label for _, _, label in decoded.spans], decoded.repairs

    def score_weights(self) -> Dict[str, Optional[float]]:
        p = self.score_prefix
        return {f"{p}_f": 1.0, f"{p}_p": 0.0, f"{p}_r": 0.0, f"{p}_per_type": None}

    def score(self, examples: Sequence[Example], mode: Optional[str] = None, scheme: Optional[str] = None, **kwargs):
        return score_spans(examples, self.spans, self.score_prefix, mode, scheme)


class EntsTask(SpanTask):
    name = "ents"
    factory = "bilstm_tagger"
    assigns = ["doc.ents", "token.ent_iob", "token.ent_type"]
    description = "entities"

    def spans(self, doc: Doc) -> List[Span]:
        return list(doc.ents)

    def gold_ids(self, eg: Example, tag_index: Dict[str, int]) -> np.ndarray:
        if _same_tokens(eg):
            return self._gold_ids_fast(eg.reference, tag_index)
        gold = [_biluo_to(t, self.scheme) for t in eg.get_aligned_ner()]
        return np.array([tag_index.get(t, -1) if t else -1 for t in gold], dtype=np.int64)

    def _gold_ids_fast(self, ref: Doc, tag_index: Dict[str, int]) -> np.ndarray:
        """Gold ids straight from the reference's IOB arrays (same tokens, so nothing to align)."""
        per_label = 4 if self.scheme == "BILOU" else 2
        labels = [tag[2:] for tag in list(tag_index)[1::per_label]]  # tag_names(): O, then per label B, I(, L, U)
        hashes = {ref.vocab.strings.add(label): i for i, label in enumerate(labels)}
        iob, types = ref.to_array(ENT_IOB), ref.to_array(ENT_TYPE)
        type_ids = np.fromiter((hashes.get(h, -1) for h in types.tolist()), np.int64, len(types))
        begin, inside = iob == 3, iob == 1  # ENT_IOB codes: 0 missing, 1 inside, 2 outside, 3 begin
        continues = np.append(inside[1:], False)
        if self.scheme == "BILOU":  # offsets follow tag_names(): B, I, L, U
            offset = np.where(begin, np.where(continues, 0, 3), np.where(continues, 1, 2))
        else:  # B, I
            offset = np.where(begin, 0, 1)
        in_entity = begin | inside
        ids = np.where(in_entity, 1 + type_ids * per_label + offset, np.where(iob == 2, 0, -1))
        ids[in_entity & (type_ids < 0)] = -1  # a label the model does not know
        return ids

    def set_annotations(self, doc: Doc, tags: List[str]) -> None:
        doc.ents = _merge_with_preset(list(doc.ents), self.predicted_spans(doc, tags))

    def write_gold(self, reference: Doc, tags: Sequence[str]) -> None:
        spans = [Span(reference, s, e, label) for s, e, label in spans_from_tags(tags).spans]
        reference.set_ents(spans, default="outside")


class SpansTask(SpanTask):
    name = "spans"
    factory = "bilstm_spans"
    assigns = ["doc.spans"]
    description = "spans"

    @property
    def score_prefix(self) -> str:
        return f"spans_{self.spans_key}"

    def spans(self, doc: Doc) -> List[Span]:
        return list(doc.spans[self.spans_key]) if self.spans_key in doc.spans else []

    def set_annotations(self, doc: Doc, tags: List[str]) -> None:
        doc.spans[self.spans_key] = self.predicted_spans(doc, tags)

    def write_gold(self, reference: Doc, tags: Sequence[str]) -> None:
        reference.spans[self.spans_key] = [Span(reference, s, e, label) for s, e, label in spans_from_tags(tags).spans]


class TokenTask(Task):
    """One label per token, read from and written to a token attribute."""

    attr = ""

    def labels_in(self, doc: Doc) -> Iterable[str]:
        return (getattr(token, f"{self.attr}_") for token in doc)

    def gold_tags(self, eg: Example) -> List[Optional[str]]:
        return eg.get_aligned(self.attr.upper(), as_string=True)

    def set_annotations(self, doc: Doc, tags: List[str]) -> None:
        name = f"{self.attr}_"
        for token, tag in zip(doc, tags):
            setattr(token, name, tag)

    def read_tags(self, tags: Sequence[str]) -> Tuple[List[str], int]:
        return list(tags), 0

    def write_gold(self, reference: Doc, tags: Sequence[str]) -> None:
        self.set_annotations(reference, list(tags))

    @property
    def score_prefix(self) -> str:
        return f"{self.attr}_acc"

    def score_weights(self) -> Dict[str, Optional[float]]:
        return {self.score_prefix: 1.0}

    def score(self, examples: Sequence[Example], mode: Optional[str] = None, scheme: Optional[str] = None, **kwargs):
        return Scorer.score_token_attr(examples, self.attr, **kwargs)


class TagTask(TokenTask):
    name = attr = "tag"
    factory = "bilstm_tags"
    assigns = ["token.tag"]
    description = "token.tag_ values"


class PosTask(TokenTask):
    name = attr = "pos"
    factory = "bilstm_pos"
    assigns = ["token.pos"]
    description = "token.pos_ values"

    def read_tags(self, tags: Sequence[str]) -> Tuple[List[str], int]:
        bad = [t for t in tags if t not in UPOS_IDS]
        if bad:
            raise TagError(f"{bad[0]!r} is not a Universal POS tag; use the bilstm_tags factory (target \"tag\") for other tag sets")
        return list(tags), 0


TASKS = {task.name: task for task in (EntsTask, SpansTask, TagTask, PosTask)}


def get_task(name: str, scheme: str = "BILOU", spans_key: str = "sc") -> Task:
    if name not in TASKS:
        raise ConfigError(f"target must be one of {', '.join(TASKS)}, not {name!r}")
    return TASKS[name](scheme, spans_key)


def _same_tokens(eg: Example) -> bool:
    x, y = eg.predicted, eg.reference
    return len(x) == len(y) and np.array_equal(x.to_array(ORTH), y.to_array(ORTH))


def _biluo_to(tag: Optional[str], scheme: str) -> Optional[str]:
    """Map spaCy's BILUO gold tags ("-" or None = missing) onto the component's scheme."""
    if not tag or tag == "-":
        return None
    if scheme == "IOB2" and tag[0] in "LU":
        return ("I" if tag[0] == "L" else "B") + tag[1:]
    return tag


def _merge_with_preset(preset: List[Span], predicted: List[Span]) -> List[Span]:
    """Keep entities already on the doc (say from an entity_ruler) and add ours where they don't overlap."""
    if not preset:
        return predicted
    taken = set()
    for span in preset:
        taken.update(range(span.start, span.end))
    kept = [s for s in predicted if not taken.intersection(range(s.start, s.end))]
    return sorted(preset + kept, key=lambda s: s.start)
