"""NER benchmark: train each system under the same CPU-time budget, then compare on `test`.

    python -m benchmarks.ner train --system bilstm --dataset ../shared/datasets/conll2003 --time-budget 30m
    python -m benchmarks.ner speed --dataset ../shared/datasets/conll2003
    python -m benchmarks.ner table

`train` runs one system (two cores don't fit every row at once) and writes
benchmarks/results/<dataset>/<system>.json; `speed` loads every trained
system into one process and times them interleaved; `table` rebuilds the
results table in benchmarks/README.md from those files. Works for any Hugging
Face token-classification dataset with `tokens` and `ner_tags` columns.
"""
from __future__ import annotations

from . import pin_threads

import argparse
import sys


def _set_threads(n: int) -> None:
    # Must happen before numpy/torch start their thread pools.
    pin_threads(n)


def _parse_budget(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def _parse_sets(items) -> dict:
    import json

    sets = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE")
        try:
            sets[key] = json.loads(value)
        except json.JSONDecodeError:
            sets[key] = value  # a bare string
    return sets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train one system and score it on validation and test")
    tr.add_argument("--system", required=True)
    tr.add_argument("--dataset", required=True, help="hub id or local dir (tokens + ner_tags columns)")
    tr.add_argument("--time-budget", default="30m", help="CPU-time budget for training, e.g. 30m, 900s")
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--vectors", default=None, help="pipeline dir from `python -m bilstm_tagger vectors` (vector systems)")
    tr.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                    help="config override on top of the system's, e.g. components.bilstm_tagger.model.dropout=0.3 (repeatable)")
    tr.add_argument("--group-sentences", type=int, default=None, metavar="N",
                    help="document context: up to N consecutive rows per Doc in training, validation and scoring "
                    "(default: the system's own, 1 for most)")
    tr.add_argument("--teacher", default=None, help="distilled systems: the teacher/ folder of a `python -m bilstm_tagger distill` run")
    tr.add_argument("--name", default=None, help="result/model name for a variant (default: the system's)")
    tr.add_argument("--no-test", action="store_true",
                    help="score validation only and write results/<dataset>/dev_only/NAME.json (for choosing settings)")
    sp = sub.add_parser("speed", help="time every trained system in one process, interleaved")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--systems", nargs="*", default=None, help="default: every system with a result file")
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--batch-size", type=int, default=256)
    sp.add_argument("--repeats", type=int, default=5)
    mem = sub.add_parser("memory", help="re-measure peak RSS per system (fresh processes) into speed.json")
    mem.add_argument("--dataset", required=True)
    mem.add_argument("--systems", nargs="*", default=None)
    mem.add_argument("--threads", type=int, default=2)
    mem.add_argument("--batch-size", type=int, default=256)
    sub.add_parser("table", help="rebuild the table in benchmarks/README.md from the result files")
    rss = sub.add_parser("rss", help=argparse.SUPPRESS)
    rss.add_argument("model")
    rss.add_argument("dataset")
    rss.add_argument("--threads", type=int, default=2)
    rss.add_argument("--batch-size", type=int, default=256)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _set_threads(getattr(args, "threads", 1))
    from . import runner  # heavy imports only after the thread settings

    if args.command == "train":
        runner.train(
            args.system, args.dataset, _parse_budget(args.time_budget), args.threads, args.vectors,
            name=args.name, sets=_parse_sets(args.set), test=not args.no_test, group=args.group_sentences,
            teacher=args.teacher,
        )
    elif args.command == "speed":
        runner.speed(args.dataset, args.systems, args.threads, args.batch_size, args.repeats)
    elif args.command == "memory":
        runner.memory(args.dataset, args.systems, args.threads, args.batch_size)
    elif args.command == "rss":
        runner.peak_rss(args.model, args.dataset, args.threads, args.batch_size)
    else:
        runner.table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
