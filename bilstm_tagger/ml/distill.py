"""Distillation targets: teacher token marginals mapped onto a student's tags, and the loss term.

A teacher's soft labels are per-token probabilities over its own tags (`annotate --marginals`).
The student fits them with the cross-entropy from the teacher's marginals q to its own marginals p
(`crf.marginal_cross_entropy` for a CRF, the softmax for a softmax decoder), computed over classes
both sides share:

- same scheme: the classes are the student's tags; each teacher tag maps to the student tag of the
  same name;
- different schemes (IOB2 vs BILOU, either way round): the classes are the IOB2 tags over the
  student's labels, and BILOU marginals are summed into them (B=B+U, I=I+L) on whichever side is BILOU.

A teacher label the student does not have is refused (LabelError naming it): its probability mass
would have nowhere to go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import LabelError
from ..tags import check_scheme, split_tag, tag_names
from . import crf

# Where a reader files a row's teacher marginals: eg.reference.user_data[TEACHER_KEY] =
# {"marginals": (n_tokens, n_teacher_tags) array, "tags": teacher tag names, "scheme": teacher scheme}.
TEACHER_KEY = "bilstm_tagger.teacher"


@dataclass(frozen=True)
class TagMapping:
    """How teacher marginals and student marginals meet: both are summed into shared classes."""

    classes: Tuple[str, ...]
    teacher: np.ndarray  # (n_teacher_tags, n_classes) 0/1
    student: Optional[np.ndarray]  # (n_student_tags, n_classes) bool; None = the classes are the student's tags

    def targets(self, marginals: np.ndarray) -> np.ndarray:
        """Teacher marginals (n_tokens, n_teacher_tags) as class probabilities (n_tokens, n_classes), float32."""
        return np.asarray(marginals, dtype=np.float32) @ self.teacher.astype(np.float32)


def _to_iob2(tag: str) -> str:
    prefix, label = split_tag(tag)
    if label is None:
        return "O"
    return ("B-" if prefix in ("B", "U") else "I-") + label


def tag_mapping(teacher_tags: Sequence[str], teacher_scheme: str, student_tags: Sequence[str], student_scheme: str) -> TagMapping:
    """The classes a teacher's marginals and a student's are compared in (see the module docstring)."""
    teacher_scheme, student_scheme = check_scheme(teacher_scheme), check_scheme(student_scheme)
    student_labels = sorted({split_tag(t)[1] for t in student_tags} - {None})
    missing = sorted({split_tag(t)[1] for t in teacher_tags} - {None} - set(student_labels))
    if missing:
        raise LabelError(
            f"the teacher predicts label(s) {', '.join(missing)} that the student does not have "
            f"(student labels: {', '.join(student_labels) or 'none'}); train the student with those labels "
            "or use a teacher with the student's label set"
        )
    if teacher_scheme == student_scheme:
        classes, student = tuple(student_tags), None
        to_class = {t: t for t in teacher_tags}
    else:
        classes = tuple(["O"] + [t for t in tag_names(student_labels, "IOB2") if t != "O"])
        index = {c: i for i, c in enumerate(classes)}
        student = np.zeros((len(student_tags), len(classes)), dtype=bool)
        for j, tag in enumerate(student_tags):
            student[j, index[_to_iob2(tag)]] = True
        to_class = {t: _to_iob2(t) for t in teacher_tags}
    index = {c: i for i, c in enumerate(classes)}
    teacher = np.zeros((len(teacher_tags), len(classes)), dtype=np.float32)
    for j, tag in enumerate(teacher_tags):
        if to_class[tag] not in index:
            raise LabelError(f"the teacher's tag {tag!r} has no counterpart among the student's tags ({', '.join(student_tags)})")
        teacher[j, index[to_class[tag]]] = 1.0
    return TagMapping(classes, teacher, student)


def student_log_probs(module: torch.nn.Module, emissions: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's log tag marginals (batch, time, L) with its scores divided by `temperature`:
    exact CRF forward-backward, or the log-softmax of a softmax decoder."""
    if hasattr(module, "transitions"):
        start, transitions, end = module._scores(crf.IMPOSSIBLE)
        scaled = [x / temperature for x in (emissions, start, transitions, end)]
        return crf.log_marginals(scaled[0], mask, *scaled[1:])
    return torch.log_softmax(emissions / temperature, dim=-1)


def distill_loss(module: torch.nn.Module, emissions: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
                 projection: Optional[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Summed cross-entropy from the class targets (batch, time, C) to the student's marginals."""
    log_p = crf.project_log_probs(student_log_probs(module, emissions, mask, temperature), projection)
    return crf.soft_cross_entropy(log_p, targets, mask).sum()


class MappingCache:
    """One TagMapping per distinct (teacher tags, teacher scheme), for one student's tags."""

    def __init__(self, student_tags: Sequence[str], student_scheme: str) -> None:
        self.student_tags, self.student_scheme = list(student_tags), student_scheme
        self._cache: Dict[Tuple[Tuple[str, ...], str], TagMapping] = {}

    def get(self, teacher_tags: Sequence[str], teacher_scheme: str) -> TagMapping:
        key = (tuple(teacher_tags), teacher_scheme)
        if key not in self._cache:
            self._cache[key] = tag_mapping(key[0], teacher_scheme, self.student_tags, self.student_scheme)
        return self._cache[key]


def teacher_targets(teachers: List[Optional[dict]], mappings: MappingCache) -> List[Optional[Tuple[np.ndarray, TagMapping]]]:
    """Per doc, (class targets, mapping) from the teacher record filed on the doc, or None."""
    out: List[Optional[Tuple[np.ndarray, TagMapping]]] = []
    for record in teachers:
        if record is None:
            out.append(None)
            continue
        mapping = mappings.get(record["tags"], record["scheme"])
        out.append((mapping.targets(record["marginals"]), mapping))
    return out
