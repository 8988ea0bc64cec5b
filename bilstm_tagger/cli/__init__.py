"""Command line: `python -m bilstm_tagger COMMAND ...` (also installed as `bilstm-tagger`).

Commands: train, evaluate, convert, vectors, annotate, explain, calibrate, quantize, distill (each has
--help). Heavy imports (torch, spaCy, datasets) happen inside the commands, so --help
is instant.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..errors import BilstmTaggerError
from . import annotate, calibrate, convert, distill, evaluate, explain, quantize, train, vectors
from ._util import _Parser

# What a user can fix (the package's own errors, files, spaCy's config checks): one `error:` line.
# Anything else is a bug and keeps its traceback.
_FAILURES: tuple = (BilstmTaggerError, OSError)

# Each adds its subcommand (in this order in --help); the parsed arguments go to the `func` it sets.
_COMMANDS = (train.add_parser, evaluate.add_parser, convert.add_parser, vectors.add_parser, annotate.add_parser,
             explain.add_parser, calibrate.add_parser, quantize.add_parser, distill.add_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bilstm_tagger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for add_parser in _COMMANDS:
        add_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    overrides = {}
    if extra:
        if not getattr(args, "takes_overrides", False):
            build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
        from spacy.cli._util import parse_config_overrides

        try:
            overrides = parse_config_overrides(extra)
        except SystemExit:
            print(f"error: config overrides must look like --section.key value, not {' '.join(extra)}", file=sys.stderr)
            return 2
        problem = args.check_overrides(args, overrides)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if getattr(args, "limit", 0) < 0 or getattr(args, "batch_size", 1) < 1:
        print("error: --limit must be >= 0 and --batch-size >= 1", file=sys.stderr)
        return 2
    from thinc.api import ConfigValidationError

    try:
        return args.func(args, overrides) if getattr(args, "takes_overrides", False) else args.func(args)
    except (*_FAILURES, ConfigValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
