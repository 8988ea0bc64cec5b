"""`explain MODEL (--text ... | --dataset D)`: write an HTML report of what the model does.

`add_parser` and `run` are the command line; `inspection.explain.explain` does the work from plain arguments.
"""
from __future__ import annotations

import argparse

from ._util import SPLIT_HELP


def add_parser(subparsers) -> argparse.ArgumentParser:
    ex = subparsers.add_parser(
        "explain",
        help="write an HTML report of what the model does on some text or dataset docs",
        description="One self-contained HTML file (and PNGs): entities with their confidence, the neurons that "
        "track entities, gate saturation, attention per head, the CRF's transitions, the reliability diagram.",
    )
    ex.add_argument("model", help="a pipeline directory, e.g. training/ner/model-best")
    source = ex.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to explain (repeatable)")
    source.add_argument("--dataset", help="Hugging Face hub id or local directory in hub layout")
    ex.add_argument("--split", default="validation", help=SPLIT_HELP["explain"])
    ex.add_argument("--n", type=int, default=20, help="how many docs of the split")
    ex.add_argument("--name", default=None, help="dataset config name")
    ex.add_argument("--revision", default=None, help="dataset revision (hub datasets)")
    ex.add_argument("--tokens-column", default="tokens", help="column holding the token lists")
    ex.add_argument("--tags-column", default="ner_tags", help="column holding the tags")
    ex.add_argument("--output", required=True, help="the HTML file to write")
    ex.add_argument("--png-dir", default=None, help="also write every figure as a PNG here")
    ex.add_argument("--top-k", type=int, default=3, help="neurons per criterion")
    ex.set_defaults(func=run)
    return ex


def run(args: argparse.Namespace) -> int:
    from ..inspection.explain import explain  # torch

    explain(
        args.model, args.output, texts=args.text, dataset=args.dataset, split=args.split, n=args.n, name=args.name,
        revision=args.revision, tokens_column=args.tokens_column, tags_column=args.tags_column,
        png_dir=args.png_dir, top_k=args.top_k,
    )
    return 0
