"""`calibrate MODEL DATASET`: fit the entity decision bias and the confidence temperature on a split.

`add_parser` and `run` are the command line; `inspection.calibrate.calibrate` does the work from plain
arguments (it returns the summary that --json writes).
"""
from __future__ import annotations

import argparse
import sys

from ._util import SPLIT_HELP, add_dataset_args, dataset_options


def add_parser(subparsers) -> argparse.ArgumentParser:
    ca = subparsers.add_parser(
        "calibrate",
        help="fit the entity decision bias and the confidence temperature on a split; save them with the model",
        description="Fits, on a split, an additive bias on entity scores that balances precision and recall "
        "(kept only when cross-validation on the split finds a significant F1 gain) and a temperature for "
        "span._.confidence (kept only when it lowers ECE). Prints P/R/F1 and ECE before and after; with --output "
        "saves both with the model.",
    )
    ca.add_argument("model", help="a pipeline directory, e.g. training/ner/model-best")
    add_dataset_args(ca)
    ca.add_argument("--split", default="validation", help=SPLIT_HELP["calibrate"])
    ca.add_argument("--test-split", default=None, help="also report P/R/F1 and ECE before/after on this held-out split")
    ca.add_argument("--test-limit", type=int, default=0, help="read at most this many rows of --test-split (0 = all)")
    ca.add_argument("--json", default=None, help="also write the numbers (decision, P/R/F1, T, ECE) to this JSON file")
    ca.add_argument("--output", default=None, help="write the calibrated pipeline here (may be MODEL itself)")
    ca.add_argument("--bins", type=int, default=10, help="reliability bins")
    ca.add_argument("--no-decision", dest="fit_decision", action="store_false",
                    help="fit the temperature only; keep the model's decision bias as it is")
    ca.add_argument("--scalar-only", dest="per_label", action="store_false",
                    help="fit one bias for every label; never per-label biases")
    ca.add_argument("--alpha", type=float, default=0.05,
                    help="keep a fitted decision only when its held-out gain is significant at this level")
    ca.add_argument("--batch-size", type=int, default=256, help="docs per nlp.pipe batch")
    ca.set_defaults(func=run)
    return ca


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.alpha < 1.0 or args.bins < 1 or args.test_limit < 0:
        print("error: --alpha must lie in (0, 1), --bins be >= 1 and --test-limit >= 0", file=sys.stderr)
        return 2
    from ..inspection.calibrate import calibrate  # torch

    calibrate(
        args.model, args.dataset, split=args.split, test_split=args.test_split, test_limit=args.test_limit,
        **dataset_options(args), output=args.output, json_path=args.json, bins=args.bins, batch_size=args.batch_size,
        fit_decision=args.fit_decision, per_label=args.per_label, alpha=args.alpha,
    )
    return 0
