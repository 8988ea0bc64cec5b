"""The two stages of `distill`, in order (see the package docstring)."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import List

from ..errors import AnnotateError
from .ensemble import average_shards, check_same_tags
from .options import DistillOptions
from .student import distill_config, load_student, train_student
from .teacher import SENTENCES_FILE, annotate_into, check_labels, load_teacher, write_sentences


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tag_with_teacher(options: DistillOptions, student) -> tuple:
    """Stage 1: (unlabeled shards folder, gold-split shards folder or None) under OUTPUT/teacher.
    An ensemble's members each tag into OUTPUT/teacher/members/K/, and their mean lands where a
    single teacher's shards would."""
    teacher_dir = Path(options.output) / "teacher"
    n = write_sentences(options, student.lang, teacher_dir / SENTENCES_FILE)
    teachers = [options.teacher, *options.ensemble]
    parts = [("unlabeled", str(teacher_dir / SENTENCES_FILE), "tokens", "train", 0)]
    if options.teacher_train and not options.hard_labels:
        corpus = student.corpus
        parts.append(("train", str(corpus["path"]), corpus.get("tokens_column") or "tokens", corpus.get("split") or "train",
                      int(corpus.get("limit") or 0)))
    for part, source, column, split, limit in parts:
        what = f"{n} unlabeled sentence(s)" if part == "unlabeled" else f"the gold split {split!r}"
        if len(teachers) == 1:
            _say(f"distill 1/2: the teacher tags {what} into {teacher_dir / part}")
            annotate_into(options, source, teacher_dir / part, column, split=split, limit=limit)
            continue
        members = [teacher_dir / "members" / str(k) / part for k in range(len(teachers))]
        for k, (teacher, out) in enumerate(zip(teachers, members)):
            _say(f"distill 1/2: teacher {k + 1} of {len(teachers)} ({teacher}) tags {what} into {out}")
            annotate_into(replace(options, teacher=teacher), source, out, column, split=split, limit=limit)
        _say(f"distill 1/2: the mean of {len(teachers)} teachers' marginals into {teacher_dir / part}")
        average_shards(members, teacher_dir / part)
    return teacher_dir / "unlabeled", (teacher_dir / "train" if len(parts) == 2 else None)


def distill(options: DistillOptions) -> int:
    """Both stages; 0 on success. Errors the user can fix raise BilstmTaggerError subclasses."""
    student = load_student(options.config, options.overrides)
    labels: List[str] = student.labels
    teachers = [load_teacher(path, options.hard_labels) for path in [options.teacher, *options.ensemble]]
    for teacher in teachers:
        check_labels(teacher, labels, student.scheme)
    if len(teachers) > 1:
        if options.hard_labels:
            raise AnnotateError("--ensemble averages the teachers' marginals; it does not combine with --hard-labels")
        if options.engine != "local":
            raise AnnotateError("--ensemble needs --engine local: it averages shards that hold the same rows in the same order")
        check_same_tags([{"tags": t.tags, "scheme": t.scheme} for t in teachers], [options.teacher, *options.ensemble])
    unlabeled_dir, gold_dir = tag_with_teacher(options, student)
    if options.teacher_only:
        _say(f"distill: --teacher-only, so no student; train one on these shards with a config whose train corpus reads "
             f"teacher = [\"{unlabeled_dir}\"] and teacher_gold = {'null' if gold_dir is None else repr(str(gold_dir))} "
             "(bilstm_tagger.DistillCorpus.v1, see docs/distill.md)")
        return 0
    _say(f"distill 2/2: training the student ({student.component}) on gold + teacher rows into {options.output}")
    return train_student(distill_config(student, [unlabeled_dir], gold_dir), options.output)
