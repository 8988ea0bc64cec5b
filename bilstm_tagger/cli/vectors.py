"""`vectors SOURCE OUT_DIR`: turn GloVe-style vectors into a pipeline for [initialize] vectors.

The work is data/vectors.py's `build_vectors_pipeline`; this module is its command line.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    vc = subparsers.add_parser("vectors", help="turn GloVe-style vectors into a pipeline for [initialize] vectors")
    vc.add_argument("source", help="GloVe text file (.txt/.gz), a dir with *_emb.npy + *index.parquet, or pkg:NAME")
    vc.add_argument("out_dir", help="directory for the blank pipeline that holds the vectors")
    vc.add_argument("--lang", default="en", help="language of that pipeline")
    vc.add_argument("--attr", default="LOWER", choices=["ORTH", "LOWER", "NORM"], help="token attribute the vectors are keyed by")
    vc.add_argument("--limit", type=int, default=0, help="keep the first N rows only (0 = all)")
    vc.set_defaults(func=run)
    return vc


def run(args: argparse.Namespace) -> int:
    from ..data.vectors import build_vectors_pipeline

    rows, width = build_vectors_pipeline(args.source, args.out_dir, args.lang, args.attr, args.limit)
    print(f"{rows} vectors of width {width}, keyed by {args.attr} -> {args.out_dir}")
    print(f"use them with: --paths.vectors {args.out_dir} --components.bilstm_tagger.model.embed.include_static_vectors true")
    return 0
