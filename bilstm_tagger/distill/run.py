"""The two stages of `distill`, in order (see the package docstring)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

from .options import DistillOptions
from .student import distill_config, load_student, train_student
from .teacher import SENTENCES_FILE, annotate_into, check_labels, load_teacher, write_sentences


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tag_with_teacher(options: DistillOptions, student) -> tuple:
    """Stage 1: (unlabeled shards folder, gold-split shards folder or None) under OUTPUT/teacher."""
    teacher_dir = Path(options.output) / "teacher"
    n = write_sentences(options, student.lang, teacher_dir / SENTENCES_FILE)
    _say(f"distill 1/2: the teacher tags {n} unlabeled sentence(s) into {teacher_dir / 'unlabeled'}")
    annotate_into(options, str(teacher_dir / SENTENCES_FILE), teacher_dir / "unlabeled", "tokens")
    gold_dir: Optional[Path] = None
    if options.teacher_train and not options.hard_labels:
        gold_dir = teacher_dir / "train"
        corpus = student.corpus
        _say(f"distill 1/2: the teacher tags the gold split {corpus.get('split', 'train')!r} into {gold_dir}")
        annotate_into(options, str(corpus["path"]), gold_dir, corpus.get("tokens_column") or "tokens",
                      split=corpus.get("split") or "train", limit=int(corpus.get("limit") or 0))
    return teacher_dir / "unlabeled", gold_dir


def distill(options: DistillOptions) -> int:
    """Both stages; 0 on success. Errors the user can fix raise BilstmTaggerError subclasses."""
    student = load_student(options.config, options.overrides)
    teacher = load_teacher(options.teacher, options.hard_labels)
    labels: List[str] = student.labels
    check_labels(teacher, labels, student.scheme)
    unlabeled_dir, gold_dir = tag_with_teacher(options, student)
    if options.teacher_only:
        _say(f"distill: --teacher-only, so no student; train one on these shards with a config whose train corpus reads "
             f"teacher = [\"{unlabeled_dir}\"] and teacher_gold = {'null' if gold_dir is None else repr(str(gold_dir))} "
             "(bilstm_tagger.DistillCorpus.v1, see docs/distill.md)")
        return 0
    _say(f"distill 2/2: training the student ({student.component}) on gold + teacher rows into {options.output}")
    return train_student(distill_config(student, [unlabeled_dir], gold_dir), options.output)
