"""`distill TEACHER CONFIG --unlabeled DATASET --output DIR`: the parser, mapped onto `distill.distill()`."""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional

_EPILOG = """\
Stage 1 tags the unlabeled set (cut into sentences) and, by default, CONFIG's gold training split with
TEACHER into DIR/teacher/ (per-token marginals; rerunning after a kill redoes only missing shards).
Stage 2 trains CONFIG's student with spaCy's loop on gold + teacher rows (bilstm_tagger.DistillCorpus.v1),
model-best chosen on CONFIG's gold dev corpus, into DIR/model-best and DIR/model-last.
Any other --section.key value pair overrides CONFIG, as with `train`.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..annotate.options import ENGINES

    p = subparsers.add_parser(
        "distill",
        help="teach CONFIG's BiLSTM(-CRF) student with a teacher pipeline's marginals on unlabeled text",
        description="Distil a teacher pipeline (e.g. a transformer tagger) into CONFIG's student through its exact token marginals.",
        epilog=_EPILOG,
    )
    p.add_argument("teacher", help="the teacher pipeline directory (a bilstm_tagger pipeline; with --hard-labels any pipeline that sets doc.ents)")
    p.add_argument("config", help="the student's training config, e.g. configs/ner.cfg")
    p.add_argument("--unlabeled", required=True, help="unlabeled dataset: a hub id or local HF dataset folder (e.g. ../shared/datasets/news_unlabeled)")
    p.add_argument("--output", required=True, help="directory for teacher/, model-best and model-last")
    p.add_argument("--unlabeled-split", default="train", help="split of the unlabeled dataset")
    p.add_argument("--unlabeled-limit", type=int, default=0, help="read at most this many unlabeled rows (0 = all)")
    column = p.add_mutually_exclusive_group()
    column.add_argument("--text-column", default=None, help="unlabeled column with raw text (default: 'text' if present, else 'tokens')")
    column.add_argument("--tokens-column", default=None, help="unlabeled column with lists of words")
    p.add_argument("--engine", choices=ENGINES, default="local", help="how the teacher tags: local processes or Ray Data")
    p.add_argument("--n-process", type=int, default=1, help="local engine: teacher worker processes")
    p.add_argument("--hard-labels", action="store_true", default=False, help="the teacher's entities become silver gold (for teachers without marginals)")
    p.add_argument("--no-teacher-train", dest="teacher_train", action="store_false", default=True,
                   help="do not tag CONFIG's gold training split with the teacher (its rows then train on the gold NLL only)")
    p.add_argument("--ensemble", action="append", default=[], metavar="TEACHER",
                   help="another teacher pipeline (repeatable): the student learns the mean of all the teachers' marginals")
    p.add_argument("--pack-words", type=int, default=0, metavar="N",
                   help="pack consecutive sentences of a story into rows of up to N words (default 0: one sentence per row)")
    p.add_argument("--teacher-only", action="store_true", default=False,
                   help="run stage 1 only: tag into DIR/teacher/ and stop (train the student later or elsewhere)")
    p.add_argument("--shard-size", type=int, default=5000, help="rows per teacher shard (the unit of resumption)")
    p.add_argument("--batch-size", type=int, default=256, help="docs per teacher batch")
    p.set_defaults(func=run, takes_overrides=True, check_overrides=check_overrides)
    return p


def check_overrides(args: argparse.Namespace, overrides: Dict):
    """As `train`'s check, against the config distill trains: its gold train corpus read by
    DistillCorpus.v1, so that reader's own settings (`--corpora.train.gold_repeats 2`) are valid
    overrides too, except the teacher folders, which distill sets itself."""
    from pathlib import Path

    from spacy.util import load_config

    from ..data import distill as _registers_the_reader  # noqa: F401
    from ..distill.student import DISTILL_READER, GOLD_READER
    from .train import _bad_override, first_unknown_override

    if not Path(args.config).is_file():
        return None  # distill reports the missing file itself
    try:
        config = load_config(args.config, overrides=overrides, interpolate=False)
        where = str(config.interpolate()["training"]["train_corpus"])
    except Exception:  # a config that does not load or interpolate: distill reports it, inside main's error handling
        return None
    config = load_config(args.config, interpolate=False)  # without the overrides: they are what is checked
    corpus = config
    for key in where.split("."):
        corpus = corpus.get(key) if isinstance(corpus, dict) else None
    if not isinstance(corpus, dict) or corpus.get("@readers") not in (GOLD_READER, DISTILL_READER):
        return _bad_override(args.config, overrides)  # distill refuses other readers with its own message
    for key in ("teacher", "teacher_gold"):
        if f"{where}.{key}" in overrides:
            return f"--{where}.{key}: distill sets the teacher folders itself (DIR/teacher/); train on other shards with `train` (docs/distill.md, Two steps)"
    corpus["@readers"] = DISTILL_READER
    return first_unknown_override(config, overrides) or _bad_reader_value(where, overrides)


def _bad_reader_value(where: str, overrides: Dict) -> Optional[str]:
    """DistillCorpus's own settings, checked before the teacher stage rather than after hours of tagging."""
    from ..data.distill import SETTING_RULES

    for key, (valid, what) in SETTING_RULES.items():
        name = f"{where}.{key}"
        if name in overrides and not valid(overrides[name]):
            return f"--{name} must be {what}, got {overrides[name]!r}"
    return None


def run(args: argparse.Namespace, overrides: Dict) -> int:
    from ..distill import DistillOptions, distill

    for option in ("unlabeled_limit", "pack_words"):
        if getattr(args, option) < 0:
            print(f"error: --{option.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    if args.shard_size < 1 or args.n_process < 1:
        print("error: --shard-size and --n-process must be >= 1", file=sys.stderr)
        return 2
    options = DistillOptions(
        teacher=args.teacher, config=args.config, unlabeled=args.unlabeled, output=args.output, overrides=overrides,
        unlabeled_split=args.unlabeled_split, unlabeled_limit=args.unlabeled_limit, text_column=args.text_column,
        tokens_column=args.tokens_column, engine=args.engine, hard_labels=args.hard_labels, teacher_train=args.teacher_train,
        shard_size=args.shard_size, batch_size=args.batch_size, n_process=args.n_process,
        teacher_only=args.teacher_only, pack_words=args.pack_words, ensemble=args.ensemble,
    )
    try:
        return distill(options)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished teacher shards are kept; rerun the same command to resume ({args.output})", file=sys.stderr)
        return 130
